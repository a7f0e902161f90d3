"""The root of every error agentplay raises on purpose.

`except AgentplayError` catches what the framework reports (a bad recipe, a store
that cannot be opened, a sandbox that failed, an endpoint that stayed down) and
nothing else; each subclass also derives from the built-in it used to be
(ValueError, RuntimeError...), so existing handlers keep working.
"""

from __future__ import annotations

__all__ = ["AgentplayError", "InfrastructureError"]


class AgentplayError(Exception):
    """Base class of agentplay's own exceptions; the message says what to fix."""


class InfrastructureError(AgentplayError):
    """The machinery failed (a model server, a sandbox, the network), not the model's output.

    An episode that fails with one of these (anywhere in its exception chain) says
    nothing about the policy: it is never scored as a reward, it is excluded from
    training and it may be retried as a whole. Derive an error from it only when a
    retry on healthy machinery could succeed.
    """
