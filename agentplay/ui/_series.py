"""The figures charted per run, from logged metrics or derived from the episodes themselves.

A training run logs one row of metrics per iteration (`reward/<role>`,
`solve_rate`, `dropped_group_fraction`, `time/rollout_s`...), and its rollouts
are runs of their own named `<run>/it00003`. A plain `agentplay run` logs no
metrics, so its charts are computed from its episodes in buckets of
consecutive episodes: per-role mean reward, the recipe's headline metrics
(`Recipe.headline_metrics`, stored in the run's config), groups without reward
variance, proposal diversity and where the time went. Logged metrics win over
derived figures wherever both exist.

Episodes are digested once and cached per run, so a page polling every two
seconds only reads the episodes stored since its last poll.
"""

from __future__ import annotations

import math
import re
import threading
from collections import defaultdict
from collections.abc import Sequence

from pydantic import BaseModel, Field

from agentplay.traces import Episode, RoleTurn, RunInfo, TraceStore

__all__ = ["Chart", "ChartSet", "EpisodeDigest", "Series", "SeriesCache", "child_runs", "distinct_n", "headline_of"]

MAX_POINTS = 40
"""Plain runs are bucketed so a chart never has more points than this."""
_ITERATION = re.compile(r"/it(\d+)$")
STORED_BEFORE_HEADLINES = ["valid_proposal", "solve_rate"]
"""Headline metrics of a run stored before recipes declared theirs (its config has no
`headline_metrics`): the two figures the built-in recipes reported then."""


class Series(BaseModel):
    """One line of a chart."""

    name: str
    points: list[tuple[float, float]] = Field(default_factory=list)
    """(x, y) pairs in x order; NaN values are left out."""


class Chart(BaseModel):
    """One chart: a title, what the axes mean and its lines."""

    key: str
    title: str
    y_label: str = ""
    stacked: bool = False
    """Series add up (a time split) rather than overlap."""
    series: list[Series] = Field(default_factory=list)


class ChartSet(BaseModel):
    """Every chart of a run, on one shared x axis."""

    run_id: str
    source: str
    """"metrics" (logged per training iteration) or "episodes" (derived in buckets)."""
    x_label: str
    charts: list[Chart]
    episodes: int = 0
    last_seq: int | None = None


class EpisodeDigest(BaseModel):
    """What the charts need from one episode (kept in memory instead of the episode)."""

    seq: int
    rewards: dict[str, list[float]] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    proposals: list[str] = Field(default_factory=list)
    groups: list[tuple[str, float]] = Field(default_factory=list)
    """(group key, reward) for every rewarded turn that belongs to a group."""
    seconds: dict[str, float] = Field(default_factory=dict)
    """Model seconds per role, and tool seconds under "tools"."""


_PROPOSING = ("propos", "challeng", "curricul")
"""What the proposing role is called across the recipes: proposer (AZR, SSP, MAE), challenger
(R-Zero, SPICE), curriculum (Agent0)."""


def is_proposer(role: str) -> bool:
    """Whether the role writes the tasks others solve (its texts feed the diversity chart)."""
    return any(word in role.lower() for word in _PROPOSING)


def proposal_text(turn: RoleTurn) -> str:
    """What the proposer proposed: its parsed output, else its last message."""
    out = turn.output
    if isinstance(out, str):
        return out
    if isinstance(out, dict):
        for key in ("question", "task", "problem", "prompt"):
            if isinstance(out.get(key), str):
                return out[key]
        return " ".join(str(v) for v in out.values())
    if out is not None:
        return str(out)
    for msg in reversed(turn.messages):
        if msg.get("role") == "assistant" and isinstance(msg.get("content"), str):
            return msg["content"]
    return ""


def digest(episode: Episode) -> EpisodeDigest:
    d = EpisodeDigest(seq=episode.seq or 0, metrics=dict(episode.metrics))
    for turn in episode.turns:
        if turn.reward is not None and math.isfinite(turn.reward.value):
            d.rewards.setdefault(turn.role, []).append(turn.reward.value)
            if turn.group_id:
                d.groups.append((f"{turn.role}:{turn.group_id}", turn.reward.value))
        if is_proposer(turn.role):
            d.proposals.append(proposal_text(turn))
        tool_s = sum(call.latency_s for call in turn.tool_calls)
        d.seconds[turn.role] = d.seconds.get(turn.role, 0.0) + max(turn.latency_s - tool_s, 0.0)
        d.seconds["tools"] = d.seconds.get("tools", 0.0) + tool_s
    return d


def distinct_n(texts: list[str], n: int = 2) -> float | None:
    """Distinct word n-grams over all n-grams of the texts (1.0: no repeats; low: collapse)."""
    grams: list[tuple[str, ...]] = []
    for text in texts:
        words = text.lower().split()
        grams += [tuple(words[i : i + n]) for i in range(max(len(words) - n + 1, 0))]
    return len(set(grams)) / len(grams) if grams else None


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def child_runs(runs: list[RunInfo], run_id: str) -> dict[int, str]:
    """Rollout runs of a training run, by iteration (`<run>/it00003` -> 3)."""
    out: dict[int, str] = {}
    for run in runs:
        if run.run_id.startswith(run_id + "/"):
            m = _ITERATION.search(run.run_id)
            if m:
                out[int(m.group(1))] = run.run_id
    return out


def headline_of(run: RunInfo, runs: list[RunInfo]) -> list[str]:
    """The headline metrics of a run: its config's, else its first rollout run's (a training run)."""
    children = child_runs(runs, run.run_id)
    by_id = {r.run_id: r for r in runs}
    for candidate in [run, *(by_id[c] for _, c in sorted(children.items()) if c in by_id)]:
        if "headline_metrics" in candidate.config:
            return [str(n) for n in candidate.config["headline_metrics"]]
    return list(STORED_BEFORE_HEADLINES)


def headline_key(name: str) -> str:
    """The chart key of a headline metric (also its PNG file name in a report)."""
    return "headline-" + re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _bucket_figures(digests: list[EpisodeDigest], groups_closing: dict[str, list[float]],
                    headline: list[str]) -> dict[str, dict[str, float]]:
    """chart key -> series name -> value, for one bucket of episodes."""
    fig: dict[str, dict[str, float]] = defaultdict(dict)
    rewards: dict[str, list[float]] = defaultdict(list)
    for d in digests:
        for role, values in d.rewards.items():
            rewards[role] += values
    for role, values in sorted(rewards.items()):
        fig["reward"][role] = sum(values) / len(values)
    for name in headline:
        value = _mean([d.metrics[name] for d in digests if name in d.metrics])
        if value is not None:
            fig[headline_key(name)][name] = value
    sized = [v for v in groups_closing.values() if len(v) >= 2]
    if sized:
        fig["dropped_group_fraction"]["no reward variance"] = sum(
            max(v) - min(v) < 1e-9 for v in sized
        ) / len(sized)
    diversity = distinct_n([p for d in digests for p in d.proposals])
    if diversity is not None:
        fig["proposal_diversity"]["distinct-2"] = diversity
    seconds: dict[str, float] = defaultdict(float)
    for d in digests:
        for name, s in d.seconds.items():
            seconds[name] += s
    for name, s in sorted(seconds.items(), key=lambda kv: kv[0] == "tools"):
        fig["time_split"][name] = s / len(digests)
    return fig


_CHARTS: list[tuple[str, str, str, bool]] = [
    ("reward", "Mean reward per role", "reward", False),
    ("headline", "", "", False),  # one chart per headline metric of the run's recipe, in its order
    ("dropped_group_fraction", "Dropped-group fraction (no reward variance)", "fraction", False),
    ("proposal_diversity", "Proposal diversity (distinct-2)", "distinct-2", False),
    ("time_split", "Step time split", "seconds", True),
]


def _metric_figures(rows: Sequence[tuple[int, str, float]], headline: list[str]) -> dict[int, dict[str, dict[str, float]]]:
    """iteration -> chart key -> series -> value, from logged trainer metrics."""
    logged_as = {f"{prefix}/{name}": name for name in headline for prefix in ("headline", "episode")}
    out: dict[int, dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    for it, name, value in rows:
        if value is None or not math.isfinite(value):
            continue
        fig = out[it]
        if name.startswith("reward/"):
            fig["reward"][name.split("/", 1)[1]] = value
        elif name in logged_as:  # the trainer logs each episode metric as episode/<name>
            fig[headline_key(logged_as[name])].setdefault(logged_as[name], value)
        elif name in ("dropped_group_fraction", "dropped_group_frac"):
            fig["dropped_group_fraction"]["no reward variance"] = value
        elif name in ("proposal_diversity", "diversity/proposals"):
            fig["proposal_diversity"]["distinct-2"] = value
        elif name.startswith("time/"):
            label = name.split("/", 1)[1].removesuffix("_s")
            fig["time_split"][label] = value
    return out


def _charts(points: dict[float, dict[str, dict[str, float]]], headline: list[str]) -> list[Chart]:
    charts = []
    specs: list[tuple[str, str, str, bool]] = []
    for spec in _CHARTS:
        if spec[0] == "headline":
            specs += [(headline_key(n), n, "", False) for n in headline]
        else:
            specs.append(spec)
    for key, title, y_label, stacked in specs:
        series: dict[str, Series] = {}
        for x in sorted(points):
            for name, value in points[x].get(key, {}).items():
                series.setdefault(name, Series(name=name)).points.append((x, value))
        charts.append(Chart(key=key, title=title, y_label=y_label, stacked=stacked,
                            series=list(series.values())))
    return charts


class SeriesCache:
    """Digested episodes per run, refreshed with `since_seq` on every request."""

    def __init__(self, store: TraceStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._digests: dict[str, list[EpisodeDigest]] = {}

    def digests(self, run_id: str) -> list[EpisodeDigest]:
        with self._lock:
            known = self._digests.setdefault(run_id, [])
            since = known[-1].seq if known else None
            known += [digest(ep) for ep in self._store.episodes(run_id, since_seq=since)]
            return list(known)

    def charts(self, run_id: str) -> ChartSet:
        runs = self._store.list_runs()
        run = next((r for r in runs if r.run_id == run_id), None) or self._store.get_run(run_id)
        children = child_runs(runs, run_id)
        headline = headline_of(run, runs)
        logged = _metric_figures(self._store.metrics(run_id), headline)
        if children or logged:
            return self._by_iteration(run, children, logged, headline)
        return self._by_bucket(run, headline)

    def _by_iteration(self, run: RunInfo, children: dict[int, str],
                      logged: dict[int, dict[str, dict[str, float]]], headline: list[str]) -> ChartSet:
        points: dict[float, dict[str, dict[str, float]]] = {}
        total = 0
        for it, child in sorted(children.items()):
            digests = self.digests(child)
            total += len(digests)
            if digests:
                points[float(it)] = _bucket_figures(digests, _groups(digests), headline)
        for it, fig in logged.items():
            merged = points.setdefault(float(it), {})
            merged.update({key: dict(values) for key, values in fig.items()})  # logged wins
        return ChartSet(run_id=run.run_id, source="metrics", x_label="iteration",
                        charts=_charts(points, headline), episodes=total, last_seq=run.last_seq)

    def _by_bucket(self, run: RunInfo, headline: list[str]) -> ChartSet:
        digests = self.digests(run.run_id)
        size = max(1, math.ceil(len(digests) / MAX_POINTS))
        groups_last: dict[str, int] = {}
        for i, d in enumerate(digests):
            for key, _ in d.groups:
                groups_last[key] = i // size
        all_groups = _groups(digests)
        points: dict[float, dict[str, dict[str, float]]] = {}
        for b, start in enumerate(range(0, len(digests), size)):
            chunk = digests[start : start + size]
            closing = {k: v for k, v in all_groups.items() if groups_last[k] == b}
            points[float(start + len(chunk))] = _bucket_figures(chunk, closing, headline)
        label = "episodes" if size == 1 else f"episodes (buckets of {size})"
        return ChartSet(run_id=run.run_id, source="episodes", x_label=label,
                        charts=_charts(points, headline), episodes=len(digests), last_seq=run.last_seq)


def _groups(digests: list[EpisodeDigest]) -> dict[str, list[float]]:
    groups: dict[str, list[float]] = defaultdict(list)
    for d in digests:
        for key, value in d.groups:
            groups[key].append(value)
    return groups
