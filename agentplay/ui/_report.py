"""`agentplay report`: the web UI's charts as PNG files plus one static HTML page.

For papers and issue threads: the same `ChartSet` the web app draws, rendered
by matplotlib (Agg backend, no display) into `DIR/<chart>.png`, and
`DIR/index.html` that shows them with a table of the run's key figures.
"""

from __future__ import annotations

from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, Field

from agentplay.traces import TraceStore

from ._series import Chart, ChartSet, SeriesCache, child_runs

__all__ = ["ReportResult", "write_report"]

_HERE = Path(__file__).parent
_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


class ReportResult(BaseModel):
    """What `write_report` wrote."""

    index: Path
    """The HTML page."""
    images: list[Path] = Field(default_factory=list)
    """One PNG per chart, in page order."""
    figures: list[tuple[str, str]] = Field(default_factory=list)
    """The key-figures table as (name, value) rows."""


def _plot(chart: Chart, x_label: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=110)
    try:
        series = [s for s in chart.series if s.points]
        if not series:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="#889")
        elif chart.stacked:
            xs = sorted({x for s in series for x, _ in s.points})
            bottom = [0.0] * len(xs)
            width = 0.6 * (min(b - a for a, b in pairwise(xs)) if len(xs) > 1 else 1.0)
            for i, s in enumerate(series):
                ys = [dict(s.points).get(x, 0.0) for x in xs]
                ax.bar(xs, ys, width=width, bottom=bottom, label=s.name, color=_COLORS[i % len(_COLORS)])
                bottom = [b + y for b, y in zip(bottom, ys)]
        else:
            for i, s in enumerate(series):
                line_x, line_y = zip(*s.points)
                ax.plot(line_x, line_y, marker="o", markersize=3, label=s.name, color=_COLORS[i % len(_COLORS)])
        ax.set_title(chart.title, fontsize=10)
        ax.set_xlabel(x_label, fontsize=9)
        ax.set_ylabel(chart.y_label, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if series:
            ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _figures(store: TraceStore, run_id: str, charts: ChartSet) -> list[tuple[str, str]]:
    run = store.get_run(run_id)
    children = child_runs(store.list_runs(), run_id)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(run.status_counts.items()))
    rows = [
        ("run", run.run_id), ("recipe", run.recipe), ("status", run.status),
        ("started", datetime.fromtimestamp(run.created_at).strftime("%Y-%m-%d %H:%M:%S")),
        ("episodes", f"{charts.episodes}" + (f" ({counts})" if counts else "")),
        ("mean reward (all turns)", _fmt(run.mean_reward)),
    ]
    if children:
        rows.append(("rollout runs", str(len(children))))
    for chart in charts.charts:
        for s in chart.series:
            if s.points and not chart.stacked:
                ys = [y for _, y in s.points]
                name = chart.title if len(chart.series) == 1 and chart.key != "reward" else f"{chart.title}: {s.name}"
                rows.append((name, f"{_fmt(ys[-1])} last, {_fmt(sum(ys) / len(ys))} mean"))
            elif s.points:
                rows.append((f"{chart.title}: {s.name}", f"{_fmt(sum(y for _, y in s.points) / len(s.points))} s mean"))
    return rows


def write_report(store: TraceStore, run_id: str, out: str | Path) -> ReportResult:
    """Write `out/index.html` and one PNG per chart for a run; StoreError if there is no such run."""
    out = Path(out)
    store.get_run(run_id)
    charts = SeriesCache(store).charts(run_id)
    out.mkdir(parents=True, exist_ok=True)
    images: list[Path] = []
    entries: list[dict[str, Any]] = []
    for chart in charts.charts:
        path = out / f"{chart.key}.png"
        _plot(chart, charts.x_label, path)
        images.append(path)
        entries.append({"file": path.name, "title": chart.title,
                        "empty": not any(s.points for s in chart.series)})
    figures = _figures(store, run_id, charts)
    env = Environment(loader=FileSystemLoader(_HERE / "templates"), autoescape=select_autoescape(["jinja"]))
    html = env.get_template("report.html.jinja").render(
        run_id=run_id, charts=entries, figures=figures, source=charts.source, x_label=charts.x_label,
        store=str(store.path), generated=datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
    )
    index = out / "index.html"
    index.write_text(html, encoding="utf-8")
    return ReportResult(index=index, images=images, figures=figures)
