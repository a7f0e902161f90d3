"""Where search self-play's episodes fail: one cause per proposal, read from a trace store.

    python -m agentplay.graphs.search_selfplay_breakdown --store traces.db            # latest run
    python -m agentplay.graphs.search_selfplay_breakdown --store traces.db --run-id R --examples 2

A proposal ends at its first failed stage (format, length, leaked answer, distinct
queries, RAG check) or is valid; the solvers' attempts are right, wrong or unparsable;
and a GRPO group is only informative when its rewards differ. The causes are read from
what every run stores anyway (the proposer's parse error, its reward's reason, the
episode's check metrics), so runs stored before this module existed break down too.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from agentplay.traces import Episode, RoleTurn, TraceStore

__all__ = ["Breakdown", "breakdown", "distinct_queries", "format_breakdown", "proposal_cause", "solver_outcome",
           "solver_outcomes"]

PROPOSAL_CAUSES = (
    "valid",
    "format: still calling tools at the last turn",
    "format: cut off by max_tokens",
    "format: no question line",
    "question length",
    "leaked answer",
    "too few distinct queries",
    "RAG check",
    "other check",
    "episode error",
)


def proposal_cause(episode: Episode) -> str:
    """The first stage the episode's proposal failed, or 'valid' (one of `PROPOSAL_CAUSES`)."""
    if episode.status != "ok":
        return "episode error"
    proposers = [t for t in episode.turns if t.role == "proposer"]
    if not proposers:
        return "episode error"
    if episode.metrics.get("valid_proposal") == 1.0:
        return "valid"
    proposer = proposers[-1]  # the turn that wrote the question: the write turn when there is one
    if proposer.output is None:
        error = proposer.parse_error or ""
        if "still calling tools" in error:
            return "format: still calling tools at the last turn"
        if proposer.generations and proposer.generations[-1].finish_reason == "length":
            return "format: cut off by max_tokens"
        return "format: no question line"
    reason = proposer.reward.reason if proposer.reward is not None else ""
    for needle, cause in (("question length", "question length"), ("leaks the answer", "leaked answer"),
                          ("distinct queries", "too few distinct queries"), ("RAG check", "RAG check")):
        if needle in reason:
            return cause
    if episode.metrics.get("rules_pass") == 1.0 and episode.metrics.get("rag_pass") == 0.0:
        return "RAG check"
    return "other check"


def distinct_queries(episode: Episode, proposers: list[RoleTurn]) -> int:
    """The proposal's distinct search queries: the recipe's metric (query turns and tool calls
    alike), else, in stores older than it, the proposer's search tool calls."""
    if "distinct_queries" in episode.metrics:
        return int(episode.metrics["distinct_queries"])
    queries = {str(c.arguments.get("query", "")).strip() for t in proposers for c in t.tool_calls
               if c.name == "search" and c.error is None and c.arguments}
    return len(queries - {""})


def solver_outcomes(metrics: dict[str, float]) -> Counter[str]:
    """Right, wrong and unanswered attempts from an episode's solver metrics."""
    n = round(metrics["solver_attempts"])
    right = round(metrics.get("solve_rate", 0.0) * n)
    unanswered = round((1.0 - metrics.get("solver_answered", 1.0)) * n)
    return Counter({"right": right, "wrong": n - right - unanswered, "no answer": unanswered}) + Counter()


def solver_outcome(turn: RoleTurn) -> str:
    """'right', 'wrong' or 'no answer' (unparsable) for one solver turn (stores whose attempts were one turn)."""
    if turn.output is None:
        return "no answer"
    return "right" if turn.reward is not None and turn.reward.value >= 1.0 else "wrong"


@dataclass
class Breakdown:
    """Counts over a run's episodes (see `breakdown`)."""

    episodes: int = 0
    proposals: Counter[str] = field(default_factory=Counter)
    solver: Counter[str] = field(default_factory=Counter)
    distinct_queries: Counter[int] = field(default_factory=Counter)
    """How many distinct queries each proposal (all its proposer turns) searched with."""
    groups: dict[str, tuple[int, int]] = field(default_factory=dict)
    """role -> (groups with reward variance, groups) over groups of at least two rewarded turns."""
    examples: dict[str, list[str]] = field(default_factory=dict)
    mixed_solver_groups: tuple[int, int] = (0, 0)
    """(solver groups with a right and a wrong attempt, solver groups of two or more attempts):
    the groups whose signal is about being right, not only about answering in format."""

    @property
    def valid_rate(self) -> float:
        return self.proposals["valid"] / self.episodes if self.episodes else 0.0

    def variance_fraction(self, role: str) -> float:
        varied, total = self.groups.get(role, (0, 0))
        return varied / total if total else 0.0


def breakdown(episodes: Iterable[Episode], examples: int = 0) -> Breakdown:
    """Proposal causes, solver outcomes, and GRPO groups with reward variance per role."""
    out = Breakdown()
    rewards: dict[tuple[str, str], list[float]] = {}
    for episode in episodes:
        out.episodes += 1
        cause = proposal_cause(episode)
        out.proposals[cause] += 1
        proposers = [t for t in episode.turns if t.role == "proposer"]
        if proposers:
            out.distinct_queries[distinct_queries(episode, proposers)] += 1
            shown = out.examples.setdefault(cause, [])
            if len(shown) < examples:
                turn = proposers[-1]
                final = turn.generations[-1].text if turn.generations else ""
                example = f"{turn.output!r} <- {' '.join(final.split())[:160]!r}"
                if cause == "RAG check" and turn.reward is not None:  # what the checker answered instead
                    example += f" ({turn.reward.reason.removeprefix('invalid proposal: ')})"
                shown.append(example)
        if "solver_attempts" in episode.metrics:  # an attempt may have a query turn: count attempts
            outcomes = solver_outcomes(episode.metrics)
            out.solver.update(outcomes)
            if episode.metrics["solver_attempts"] >= 2:
                mixed, total = out.mixed_solver_groups
                right = outcomes["right"]
                out.mixed_solver_groups = (mixed + int(0 < right < episode.metrics["solver_attempts"]), total + 1)
        else:
            out.solver.update(solver_outcome(t) for t in episode.turns if t.role == "solver")
        for turn in episode.turns:
            if turn.reward is not None and turn.group_id:
                rewards.setdefault((turn.role, turn.group_id), []).append(turn.reward.value)
    for (role, _), values in rewards.items():
        if len(values) >= 2:
            varied, total = out.groups.get(role, (0, 0))
            out.groups[role] = (varied + int(max(values) - min(values) > 1e-9), total + 1)
    return out


def format_breakdown(b: Breakdown) -> str:
    lines = [f"{b.episodes} episodes; valid proposals {b.proposals['valid']} ({b.valid_rate:.0%})", "proposals:"]
    for cause, n in b.proposals.most_common():
        lines.append(f"  {n:5d}  {n / b.episodes:6.1%}  {cause}")
        lines += [f"           e.g. {e}" for e in b.examples.get(cause, [])]
    lines.append("distinct search queries per proposal: "
                 + ", ".join(f"{k}: {v}" for k, v in sorted(b.distinct_queries.items())))
    attempts = sum(b.solver.values())
    lines.append(f"solver attempts: {attempts}" + "".join(f"; {k} {v}" for k, v in b.solver.most_common()))
    for role, (varied, total) in sorted(b.groups.items()):
        lines.append(f"{role} groups with reward variance: {varied}/{total} ({b.variance_fraction(role):.0%})")
    mixed, total = b.mixed_solver_groups
    if total:
        lines.append(f"solver groups with a right and a wrong attempt: {mixed}/{total} ({mixed / total:.0%})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="traces.db")
    ap.add_argument("--run-id", default=None, help="default: the newest search-selfplay run in the store")
    ap.add_argument("--examples", type=int, default=0, help="show this many proposals per cause")
    args = ap.parse_args(argv)
    with TraceStore(args.store, read_only=True) as store:
        run_id = args.run_id
        if run_id is None:
            runs = [r for r in store.list_runs() if r.recipe == "search-selfplay"]
            if not runs:
                raise SystemExit(f"no search-selfplay run in {args.store}")
            run_id = max(runs, key=lambda r: r.created_at).run_id
        print(f"run {run_id}")
        print(format_breakdown(breakdown(store.episodes(run_id), examples=args.examples)))


if __name__ == "__main__":
    main()
