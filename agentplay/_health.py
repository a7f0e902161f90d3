"""Run health: what failed, why, and whether the run did its job.

A self-play run that "finishes" while every episode errored, or trains on
rewards that were really crashes, is worse than one that stops: the curve
looks real. This module names each failure (its cause), counts causes over a
run, and turns a run that failed too often into one loud error with a
one-paragraph diagnosis instead of a summary table.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agentplay.errors import AgentplayError, InfrastructureError

if TYPE_CHECKING:
    from agentplay.runner import RunSummary
    from agentplay.traces import Episode

__all__ = ["ErrorTally", "RewardFailedError", "RunHealthError", "error_cause", "infrastructure_failure",
           "reward_failure_text"]


class RunHealthError(AgentplayError, RuntimeError):
    """A run failed too often to be trusted (`RunConfig.max_error_fraction`), or could not do
    its job at all; `summary` holds what it did and the message is the diagnosis."""

    def __init__(self, diagnosis: str, summary: RunSummary | None = None) -> None:
        super().__init__(diagnosis)
        self.summary = summary


class RewardFailedError(RunHealthError):
    """A reward fn raised while `strict_rewards` is on: the first failure stops the run."""


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Transport failures of the HTTP stack under the OpenAI-compatible client, and the
    server errors it gives up on (5xx, 429): the server or the network failed, not the policy."""
    out: list[type[BaseException]] = [ConnectionError]
    try:
        import httpx

        out.append(httpx.TransportError)
    except ImportError:  # pragma: no cover - httpx comes with the openai client
        pass
    try:  # what the openai client raises once its own retries are spent: the server failed
        import openai

        out += [openai.APIConnectionError, openai.InternalServerError, openai.RateLimitError]
    except ImportError:  # pragma: no cover - a core dependency
        pass
    return tuple(out)


def _chain(exc: BaseException) -> list[BaseException]:
    """exc, its causes and contexts, and the members of exception groups, each once."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [e.__cause__, e.__context__]  # type: ignore[list-item]
        if isinstance(e, BaseExceptionGroup):
            todo += list(e.exceptions)
    return seen


def infrastructure_failure(exc: BaseException) -> BaseException | None:
    """The exception in `exc`'s chain that says the machinery failed, or None.

    An `InfrastructureError` anywhere in the chain (a sandbox that could not run, an
    endpoint that stayed down...), or a transport error of the HTTP client: such an
    episode says nothing about the policy, so it is retried, never scored.
    """
    chain = _chain(exc)
    for e in chain:
        if isinstance(e, InfrastructureError):
            return e
    transport = _transport_errors()
    for e in chain:
        if isinstance(e, transport):
            return e
    return None


def error_cause(exc: BaseException) -> str:
    """``infrastructure:<Type>`` when the machinery failed, else ``recipe:<Type>``."""
    infra = infrastructure_failure(exc)
    if infra is not None:
        return f"infrastructure:{type(infra).__name__}"
    return f"recipe:{type(exc).__name__}"


def reward_failure_text(exc: BaseException, what: str = "reward fn") -> str:
    """What a turn's `reward_failed` says: the exception and the frame that raised it."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = ""
    if frames:
        last = frames[-1]
        where = f" (at {last.filename}:{last.lineno} in {last.name}"
        where += f": {last.line.strip()})" if last.line else ")"
    return f"{what} raised {type(exc).__name__}: {exc}{where}"[:2000]


def _first_line(text: str | None) -> str:
    """The message of a stored error (its first line), without the traceback."""
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line[:400]


@dataclass
class ErrorTally:
    """Errors of a run by cause (first one of each kept), and reward failures by role."""

    episodes: int = 0
    errors: int = 0
    by_cause: dict[str, int] = field(default_factory=dict)
    first_error: dict[str, tuple[int, str]] = field(default_factory=dict)
    """cause -> (episode index, first line of its error)."""
    retried: int = 0
    """Episodes that needed more than one attempt (infrastructure failures retried)."""
    rewarded_turns: int = 0
    reward_failures: dict[str, int] = field(default_factory=dict)
    first_reward_failure: dict[str, tuple[int, str]] = field(default_factory=dict)

    def add(self, episode: Episode) -> None:
        self.episodes += 1
        if int(episode.metadata.get("attempts", 1) or 1) > 1:
            self.retried += 1
        if episode.status == "error":
            self.errors += 1
            cause = episode.error_cause or "unknown"
            self.by_cause[cause] = self.by_cause.get(cause, 0) + 1
            self.first_error.setdefault(cause, (episode.index, _first_line(episode.error)))
        for turn in episode.turns:
            if turn.reward is not None or turn.reward_failed is not None:
                self.rewarded_turns += 1
            if turn.reward_failed is not None:
                self.reward_failures[turn.role] = self.reward_failures.get(turn.role, 0) + 1
                self.first_reward_failure.setdefault(turn.role, (episode.index, turn.reward_failed))

    def total_reward_failures(self) -> int:
        return sum(self.reward_failures.values())

    def verdict(self, max_error_fraction: float) -> str | None:
        """Why the run failed (None when it is healthy)."""
        if self.episodes == 0:
            return None
        if self.errors == self.episodes:
            return f"every episode failed ({self.errors} of {self.episodes})"
        fraction = self.errors / self.episodes
        if fraction > max_error_fraction:
            return (f"{self.errors} of {self.episodes} episodes failed ({fraction:.0%}), more than "
                    f"max_error_fraction={max_error_fraction:g} (--max-error-fraction)")
        failed = self.total_reward_failures()
        if self.rewarded_turns and failed == self.rewarded_turns:
            return f"every reward fn call failed ({failed} turns): the run produced no reward at all"
        return None

    def describe_errors(self) -> str:
        """Each distinct cause with its count and its first error, most frequent first."""
        parts = []
        for cause, n in sorted(self.by_cause.items(), key=lambda kv: (-kv[1], kv[0])):
            index, first = self.first_error[cause]
            parts.append(f"{cause} x{n} (first, episode {index}: {first})")
        for role, n in sorted(self.reward_failures.items(), key=lambda kv: (-kv[1], kv[0])):
            index, first = self.first_reward_failure[role]
            parts.append(f"reward fn of role {role!r} failed x{n} (first, episode {index}: {first})")
        return "; ".join(parts)

    def diagnosis(self, verdict: str, *, run_id: str, retries: int, hint: str = "") -> str:
        """One paragraph: what failed, each cause with its first error, what to do next."""
        text = f"run {run_id} failed: {verdict}. By cause: {self.describe_errors()}."
        if any(c.startswith("infrastructure:") for c in self.by_cause):
            text += (f" Infrastructure failures (a sandbox, model server or network, not the model's "
                     f"output) were retried {retries} time(s) per episode (episode_retries / "
                     f"--episode-retries) and are never scored.")
        if any(c.startswith("recipe:") for c in self.by_cause):
            text += " Recipe errors are exceptions raised by the graph's own code: fix the code they name."
        if self.reward_failures:
            text += " Reward fn failures are never turned into rewards: fix the reward fn named."
        if hint:
            text += f" {hint}"
        return text

    def summary_fields(self) -> dict[str, Any]:
        """The RunSummary fields this tally fills."""
        return {
            "errors_by_cause": dict(sorted(self.by_cause.items())),
            "first_errors": {c: f"episode {i}: {m}" for c, (i, m) in sorted(self.first_error.items())},
            "retried": self.retried,
            "reward_failures": dict(sorted(self.reward_failures.items())),
        }
