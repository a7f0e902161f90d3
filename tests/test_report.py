"""`agentplay report` over a real recipe store, the charts' figures, and bad store files."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from _servers import cli_env
from typer.testing import CliRunner

from agentplay.cli import app
from agentplay.traces import SCHEMA_VERSION, Episode, RoleTurn, TraceStore
from agentplay.ui import SeriesCache, distinct_n, write_report

runner = CliRunner()
pytestmark = pytest.mark.timeout(1800)  # the first test to ask for recipe_store pays for the real run
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CHARTS = ["reward", "headline-valid_proposal", "headline-solve_rate", "dropped_group_fraction",
          "proposal_diversity", "time_split"]
"""search-selfplay declares valid_proposal and solve_rate as its headline metrics."""


def test_report_writes_pngs_and_html_from_a_real_run(recipe_store: tuple[Path, str], tmp_path: Path) -> None:
    path, run_id = recipe_store
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", run_id[:4], "--store", str(path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    html = (out / "index.html").read_text()
    for key in CHARTS:
        png = out / f"{key}.png"
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, key
        assert f'src="{key}.png"' in html
    assert str(out / "index.html") in result.stdout
    with TraceStore(path, read_only=True) as store:
        run = store.get_run(run_id)
        episodes = list(store.episodes(run_id))
    assert f"<td class=\"value\">{run.mean_reward:.3f}</td>" in html
    assert "<th>episodes</th><td class=\"value\">3 (" in html
    valid = [ep.metrics["valid_proposal"] for ep in episodes]
    assert re.search(rf"valid_proposal</th><td class=\"value\">{valid[-1]:.3f} last, "
                     rf"{sum(valid) / len(valid):.3f} mean", html), html


def test_charts_from_episodes_match_the_stored_rewards(recipe_store: tuple[Path, str]) -> None:
    path, run_id = recipe_store
    with TraceStore(path, read_only=True) as store:
        charts = {c.key: c for c in SeriesCache(store).charts(run_id).charts}
        episodes = list(store.episodes(run_id))
    reward = {s.name: s.points for s in charts["reward"].series}
    for i, ep in enumerate(episodes):
        for role in {t.role for t in ep.turns if t.reward is not None}:
            values = [t.reward.value for t in ep.turns if t.role == role and t.reward is not None]
            assert (float(i + 1), pytest.approx(sum(values) / len(values))) in reward[role]
    times = {s.name for s in charts["time_split"].series}
    assert {t.role for ep in episodes for t in ep.turns} <= times


def test_charts_prefer_trainer_metrics_and_read_rollout_runs(tmp_path: Path, recipe_store) -> None:
    """A training run: logged per-iteration figures, diversity from its `<run>/itNNNNN` rollouts."""
    with TraceStore(recipe_store[0], read_only=True) as src:
        episodes = list(src.episodes(recipe_store[1]))
    path = tmp_path / "train.db"
    with TraceStore(path) as store:
        store.create_run("train", {}, run_id="t")
        for it in range(2):
            child = store.create_run("search-selfplay", {}, run_id=f"t/it{it:05d}")
            for i, ep in enumerate(episodes):
                store.append_episode(ep.model_copy(update={"run_id": child, "index": i,
                                                           "episode_id": f"{it}-{i}", "seq": None}))
            store.log_metrics("t", it, {"reward/solver": 0.25 * it, "dropped_group_fraction": 0.5,
                                        "time/rollout_s": 3.0, "time/train_s": 2.0, "time/update_s": 0.5})
        charts = {c.key: c for c in SeriesCache(store).charts("t").charts}
    assert charts["reward"].series[0].points == [(0.0, 0.0), (1.0, 0.25)]
    assert [s.name for s in charts["time_split"].series] == ["rollout", "train", "update"]
    proposals = [t for ep in episodes for t in ep.turns if t.role == "proposer"]
    from agentplay.ui._series import proposal_text

    expected = distinct_n([proposal_text(t) for t in proposals])
    if expected is not None:
        assert charts["proposal_diversity"].series[0].points == [(0.0, pytest.approx(expected)),
                                                                 (1.0, pytest.approx(expected))]


def test_diversity_reads_every_proposing_role() -> None:
    from agentplay.ui._series import digest

    turns = [RoleTurn(role=role, output={"question": f"q from {role}"})
             for role in ("proposer", "challenger", "curriculum", "solver", "player_0")]
    assert digest(Episode(turns=turns)).proposals == ["q from proposer", "q from challenger", "q from curriculum"]


def test_distinct_n_sees_collapse() -> None:
    assert distinct_n(["what is the capital of france"] * 4) == pytest.approx(0.25)
    assert distinct_n(["a b c", "d e f"]) == 1.0
    assert distinct_n(["one"]) is None


# -- bad input: one clear line, non-zero exit, no traceback


def _bad_stores(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    empty = tmp_path / "empty.db"
    empty.touch()
    old = tmp_path / "old.db"
    TraceStore(old).close()
    with sqlite3.connect(old) as conn:
        conn.execute("PRAGMA user_version = 0")
    return {
        "missing": (tmp_path / "nope.db", "does not exist"),
        "empty": (empty, "is empty"),
        "older schema": (old, f"schema version 0, but this agentplay reads version {SCHEMA_VERSION}"),
    }


@pytest.mark.parametrize("command", [["ui", "--port", "0"], ["report", "r", "--out", "OUT"]])
def test_bad_store_files_get_one_clear_line(tmp_path: Path, command: list[str]) -> None:
    for kind, (path, message) in _bad_stores(tmp_path).items():
        args = [a.replace("OUT", str(tmp_path / "out")) for a in command] + ["--store", str(path)]
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (kind, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), kind
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (kind, lines)
        assert not (tmp_path / "out").exists()


def test_report_names_a_missing_run(recipe_store: tuple[Path, str], tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", "zzzz", "--store", str(recipe_store[0]), "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no run or episode 'zzzz'")


def test_console_entry_prints_no_traceback(tmp_path: Path) -> None:
    """The installed command as a user runs it: stderr is the message, nothing else."""
    empty = tmp_path / "empty.db"
    empty.touch()
    done = subprocess.run([sys.executable, "-m", "agentplay.cli", "report", "x", "--store", str(empty),
                           "--out", str(tmp_path / "o")], check=False, capture_output=True, text=True, env=cli_env(), timeout=300)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip() == f"error: {empty} is empty (0 bytes): not a trace store; it was never written by agentplay"


def test_write_report_refuses_an_unknown_run(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with TraceStore(path) as store:
        store.create_run("r", run_id="a")
        with pytest.raises(Exception, match="no run 'b'"):
            write_report(store, "b", tmp_path / "out")
    assert not (tmp_path / "out").exists()
