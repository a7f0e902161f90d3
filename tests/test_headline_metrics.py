"""A recipe declares its headline metrics; the progress line, run summary, trainer log
line and summary table, UI charts and report show those, whatever they are called.

The recipe here has no model role (its one node computes the episode's figures), so the
run is real (runner, SQLite store, charts, PNG report) and takes no model load.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph
from rich.console import Console

from agentplay import Recipe, RecipeError, RunConfig, run_recipe
from agentplay.cli._train import _summary_table, iteration_line
from agentplay.traces import TraceStore
from agentplay.ui import SeriesCache, write_report


class CountState(TypedDict, total=False):
    index: int


def counting_recipe(headline: list[str], *, with_metrics: bool = True) -> Recipe:
    graph = StateGraph(CountState)
    graph.add_node("count", lambda state: {"index": state["index"]})
    graph.add_edge(START, "count")
    graph.add_edge("count", END)

    def metrics(state: dict[str, Any], turns: list) -> dict[str, float]:
        return {"accuracy": 1.0 if state["index"] % 2 else 0.0, "steps": float(state["index"])}

    return Recipe(name="counting", graph=graph, roles={}, rewards={},
                  initial_state=lambda ctx: {"index": ctx.index},
                  metrics=metrics if with_metrics else None, headline_metrics=headline)


async def test_a_custom_recipe_shows_its_own_headline_figures(tmp_path: Path):
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False)
    store_path = tmp_path / "t.db"
    summary = await run_recipe(counting_recipe(["accuracy"]),
                               RunConfig(episodes=4, concurrency=2, store=str(store_path), progress=True, run_id="c"),
                               console=console)
    assert summary.headline == {"accuracy": 0.5}
    assert summary.metrics == {"accuracy": 0.5, "steps": 1.5}
    printed = out.getvalue()
    assert "accuracy" in printed and "0.500" in printed
    assert "solve" not in printed and "valid" not in printed and "nan" not in printed

    with TraceStore(store_path, read_only=True) as store:
        assert store.get_run("c").config["headline_metrics"] == ["accuracy"]
        charts = {c.key: c for c in SeriesCache(store).charts("c").charts}
        assert "headline-accuracy" in charts and not any("solve" in k or "valid" in k for k in charts)
        assert "headline-steps" not in charts  # only the declared figure gets a chart
        assert charts["headline-accuracy"].title == "accuracy"
        assert [y for _, y in charts["headline-accuracy"].series[0].points] == [0.0, 1.0, 0.0, 1.0]
        report = write_report(store, "c", tmp_path / "report")
    assert (tmp_path / "report" / "headline-accuracy.png").is_file()
    assert ("accuracy", "1.000 last, 0.500 mean") in report.figures


async def test_no_headline_declared_shows_none():
    out = io.StringIO()
    summary = await run_recipe(counting_recipe([]), RunConfig(episodes=2, progress=True),
                               console=Console(file=out, width=200))
    assert summary.headline == {} and summary.metrics["accuracy"] == 0.5
    assert "metric: accuracy" in out.getvalue()  # still in the summary table, as an ordinary metric


def test_headline_metrics_need_a_metrics_fn():
    with pytest.raises(RecipeError, match="headline_metrics: accuracy need a `metrics` fn"):
        counting_recipe(["accuracy"], with_metrics=False).compile()
    with pytest.raises(RecipeError, match="appears twice"):
        counting_recipe(["accuracy", "accuracy"]).compile()


def test_trainer_line_and_table_show_the_logged_headline_figures():
    m = {"reward/solver": 0.25, "headline/accuracy": 0.75, "episode/accuracy": 0.75, "episode/steps": 3.0,
         "dropped_group_fraction": 0.5, "samples": 8.0, "time/rollout_s": 1.0, "time/train_s": 2.0,
         "time/update_s": 0.1, "weight_version": 3.0}
    line = iteration_line(m)
    assert line.startswith("solver=0.250 accuracy=0.750 dropped=0.50") and "solve=" not in line and "nan" not in line

    class Summary:
        run_id, first_iteration, last_iteration, weight_version = "t", 0, 1, 3
        metrics = [m | {"headline/accuracy": 0.25}, m]

    out = io.StringIO()
    Console(file=out, width=200).print(_summary_table(Summary()))
    table = out.getvalue()
    assert "headline/accuracy" in table and "0.250" in table and "0.750" in table and "solve_rate" not in table
