"""Test-only kill points: a process SIGKILLs itself at a named point of its work.

Crash tests need a kill at an exact place (during an optimizer step, between a
checkpoint and the store's metrics), not a sleep that hopes to land there. Code
marks its fragile points with `kill_point("name", at)`; nothing happens unless
the environment variable `AGENTPLAY_TEST_KILL_AT` names that point:

    AGENTPLAY_TEST_KILL_AT=step@2           # trainer: inside iteration 2's optimizer step
    AGENTPLAY_TEST_KILL_AT=serve_load@1     # server: on its second adapter load

`at` is the iteration for trainer points; points without one count their own
calls in this process from 0. The check is one dict lookup when the variable is
unset, so the marks cost nothing in real runs.

Points: `rollout` (trainer: after an episode of the iteration is stored),
`step` (inside the optimizer step), `checkpoint` (after the checkpoint commits,
before the weights are published and the store gets the metrics), `publish`
(during the weight update: the adapter is saved, the served model has not taken
it), `sync` (the served model took the new weights, the store has not logged the
iteration),
`serve_chat` and `serve_load` (`agentplay serve`: before answering a chat
request / after loading an adapter, before answering).
"""

from __future__ import annotations

import os
import signal
import sys
from collections import Counter

__all__ = ["KILL_AT_ENV", "kill_point"]

KILL_AT_ENV = "AGENTPLAY_TEST_KILL_AT"

_calls: Counter[str] = Counter()


def kill_point(name: str, at: int | None = None) -> None:
    """SIGKILL this process if `AGENTPLAY_TEST_KILL_AT` is `name@at` (or `name` for any `at`)."""
    spec = os.environ.get(KILL_AT_ENV)
    if not spec:
        return
    if at is None:
        at = _calls[name]
        _calls[name] += 1
    want, _, where = spec.partition("@")
    if want == name and (not where or int(where) == at):
        sys.stderr.write(f"{KILL_AT_ENV}={spec}: SIGKILL at {name}@{at}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
