"""Live figures of a run: the numbers that say whether self-play is working.

Episodes/s says whether the engine is busy; the recipe's headline metrics
(`Recipe.headline_metrics`, e.g. the valid-proposal rate: does the proposer
still write usable tasks?) say whether the game is healthy; per-role mean
reward shows one role running away from the other.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agentplay._health import ErrorTally
from agentplay.traces import Episode

if TYPE_CHECKING:
    from types import TracebackType

    from agentplay.runner import RunSummary


class RunStats:
    """Running sums over the episodes finished so far."""

    def __init__(self, headline: list[str] | None = None) -> None:
        self.headline = list(headline or [])
        """Episode metrics shown in the progress line and the summary (`Recipe.headline_metrics`)."""
        self.count = 0
        self.errors = 0
        self.started = time.perf_counter()
        self._reward_sum: dict[str, float] = defaultdict(float)
        self._reward_n: dict[str, int] = defaultdict(int)
        self._metric_sum: dict[str, float] = defaultdict(float)
        self._metric_n: dict[str, int] = defaultdict(int)
        self.tally = ErrorTally()
        """Errors by cause and reward failures by role: what run health judges."""

    def add(self, episode: Episode) -> None:
        self.count += 1
        self.errors += episode.status == "error"
        self.tally.add(episode)
        for turn in episode.turns:
            if turn.reward is not None:
                self._reward_sum[turn.role] += turn.reward.value
                self._reward_n[turn.role] += 1
        for name, value in episode.metrics.items():
            self._metric_sum[name] += value
            self._metric_n[name] += 1

    def rate(self) -> float:
        elapsed = time.perf_counter() - self.started
        return self.count / elapsed if elapsed > 0 else 0.0

    def headline_means(self) -> dict[str, float]:
        """Mean of each headline metric reported so far, in the recipe's order."""
        return {m: self._metric_sum[m] / self._metric_n[m] for m in self.headline if self._metric_n.get(m)}

    def mean_rewards(self) -> dict[str, float]:
        return {r: self._reward_sum[r] / n for r, n in sorted(self._reward_n.items()) if n}

    def mean_metrics(self) -> dict[str, float]:
        return {m: self._metric_sum[m] / n for m, n in sorted(self._metric_n.items()) if n}

    def line(self) -> str:
        parts = [f"{self.rate():.2f} ep/s"]
        parts += [f"{name} {value:.2f}" for name, value in self.headline_means().items()]
        parts += [f"{role} {value:+.2f}" for role, value in self.mean_rewards().items()]
        if self.errors:
            parts.append(f"[red]{self.errors} errors[/]")
        failed = self.tally.total_reward_failures()
        if failed:
            parts.append(f"[red]{failed} reward failures[/]")
        return "  ".join(parts)


class RunProgress:
    """A rich progress bar with the run's figures; silent when disabled."""

    def __init__(self, *, total: int, recipe: str, enabled: bool, console: Console | None) -> None:
        self._enabled = enabled
        self._console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn(f"[bold]{recipe}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[figures]}"), console=self._console, disable=not enabled,
        )
        self._task = self._progress.add_task("episodes", total=total, figures="")

    def __enter__(self) -> RunProgress:  # noqa: PYI034 - not subclassed
        self._progress.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._progress.__exit__(exc_type, exc, tb)

    def update(self, stats: RunStats) -> None:
        self._progress.update(self._task, advance=1, figures=stats.line())

    def print_summary(self, summary: RunSummary) -> None:
        table = Table(title=f"run {summary.run_id} ({summary.recipe})", show_header=False)
        table.add_row("episodes", f"{summary.completed} this run, {summary.skipped} resumed, {summary.requested} requested")
        table.add_row("errors", str(summary.errors))
        for cause, n in summary.errors_by_cause.items():
            table.add_row(f"  {cause}", f"{n} (first: {escape(summary.first_errors.get(cause, '')[:160])})")
        if summary.retried:
            table.add_row("retried episodes", f"{summary.retried} (after infrastructure failures)")
        for role, n in summary.reward_failures.items():
            table.add_row(f"reward failures: {role}", f"{n} turns (no reward, not trained on)")
        table.add_row("episodes/s", f"{summary.episodes_per_s:.3f}")
        for name, value in summary.headline.items():
            table.add_row(f"[bold]{name}[/]", f"[bold]{value:.3f}[/]")
        for role, value in summary.mean_reward.items():
            table.add_row(f"mean reward: {role}", f"{value:.3f}")
        for name, value in summary.metrics.items():
            if name not in summary.headline:
                table.add_row(f"metric: {name}", f"{value:.3f}")
        self._console.print(table)
