"""`agentplay traces ...` through the real app object and the real console entry."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from store_factory import make_episode
from typer.testing import CliRunner

from agentplay.cli import app
from agentplay.traces import RewardRecord, RoleTurn, ToolCallRecord, TraceStore

runner = CliRunner()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "traces.db"
    with TraceStore(path) as store:
        a = store.create_run("search-selfplay", {"episodes": 3}, run_id="aaaa1111")
        store.create_run("code-selfplay", run_id="bbbb2222")
        for i in range(3):
            store.append_episode(make_episode(a, i, n_turns=2, n_tokens=24))
        store.log_metrics(a, 0, {"loss": 0.5, "reward/solver": 0.25})
        store.set_run_status(a, "finished")
    return path


def _run(*args: str):
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    return result


def test_list_prints_one_run_per_line_id_first(db: Path) -> None:
    result = _run("traces", "list", "--store", str(db))
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["aaaa1111", "bbbb2222"]
    assert "search-selfplay  finished  3 episodes (ok 3)" in lines[0]
    assert "code-selfplay  running  0 episodes  mean reward -" in lines[1]
    with TraceStore(db, read_only=True) as store:  # the mean of each role's own rewards, not of all together
        episodes = list(store.episodes("aaaa1111"))
    means = {role: [t.reward.value for ep in episodes for t in ep.turns if t.role == role] for role in ("proposer", "solver")}
    expected = " ".join(f"{role} {sum(v) / len(v):.3f}" for role, v in means.items())
    assert f"mean reward {expected}  " in lines[0]


def test_show_run_and_episode(db: Path) -> None:
    result = _run("traces", "show", "aaaa", "--store", str(db))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("run aaaa1111") and '"episodes": 3' in out
    assert "metrics at iteration 0: loss=0.5  reward/solver=0.25" in out
    with TraceStore(db, read_only=True) as store:
        episodes = list(store.episodes("aaaa1111"))
    for ep in episodes:
        assert f"#{ep.index}  {ep.episode_id}  ok  2 turns  proposer=" in out

    ep = episodes[1]
    for ref in (ep.episode_id, ep.episode_id[:10], "aaaa1111:1"):
        shown = _run("traces", "show", ref, "--store", str(db))
        assert shown.exit_code == 0, shown.output
        assert shown.stdout.startswith(f"episode {ep.episode_id}  run aaaa1111  index 1")
        turn = ep.turns[1]
        assert (
            f"turn 1  solver  node solver_node  group g0"
            f"  reward {turn.reward.value:.3f} (exact match)" in shown.stdout
        )
        assert f"after prompt 24 (model {sum(turn.mask)}" in shown.stdout
        assert (
            "tool search(" in shown.stdout
            and "tool python({bad json) -> error: arguments are not valid JSON" in shown.stdout
        )

    as_json = _run("traces", "show", "aaaa1111:2", "--store", str(db), "--json")
    assert json.loads(as_json.stdout)["episode_id"] == episodes[2].episode_id


def test_show_lists_episodes_by_index_and_prints_real_newlines(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with TraceStore(path) as store:
        run_id = store.create_run("r", run_id="r1")
        for i in (2, 0, 3, 1):  # finishing order differs from index order
            store.append_episode(make_episode(run_id, i, n_turns=1))
        turn = RoleTurn(role="solver", messages=[{"role": "user", "content": "line one\nline two"}],
                        output="a\nb", reward=RewardRecord(value=1))
        store.append_episode(make_episode(run_id, 4).model_copy(update={"turns": [turn]}))
    listed = _run("traces", "show", "r1", "--store", str(path)).stdout
    assert [line.split()[0] for line in listed.splitlines() if line.startswith("  #")] == ["#0", "#1", "#2", "#3", "#4"]
    assert [line.split()[0] for line in _run("traces", "show", "r1", "--store", str(path), "--limit", "2")
            .stdout.splitlines() if line.startswith("  #")] == ["#3", "#4"]  # the highest indexes
    shown = _run("traces", "show", "r1:4", "--store", str(path)).stdout
    assert "\\n" not in shown
    assert "  [user] line one\n      line two\n" in shown and "  output: a\n      b\n" in shown


def test_show_clips_long_text_unless_full(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with TraceStore(path) as store:
        run_id = store.create_run("r", run_id="r1")
        long = "word " * 200
        turn = RoleTurn(
            role="solver",
            messages=[{"role": "user", "content": long}],
            reward=RewardRecord(value=1),
            tool_calls=[ToolCallRecord(call_id="1", name="search", result=long)],
        )
        store.append_episode(make_episode(run_id, 0).model_copy(update={"turns": [turn]}))
    short = _run("traces", "show", "r1:0", "--store", str(path)).stdout
    full = _run("traces", "show", "r1:0", "--store", str(path), "--full").stdout
    assert "…" in short and len(short) < len(full) and long.strip() in full


def test_export_jsonl_and_parquet(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = _run("traces", "export", "--store", str(db), "--format", "jsonl", "--out", str(out))
    assert result.exit_code == 0 and f"wrote 3 episodes to {out}" in result.stdout
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["index"] for e in lines] == [0, 1, 2]
    assert all(len(e["turns"]) == 2 and len(e["turns"][0]["token_ids"]) == 24 for e in lines)
    assert all(isinstance(t["reward"]["value"], float) for e in lines for t in e["turns"])

    pq_out = tmp_path / "out.parquet"
    result = _run(
        "traces", "export", "-s", str(db), "-f", "parquet", "-o", str(pq_out), "--run", "aaaa"
    )
    assert result.exit_code == 0 and "wrote 6 role turns" in result.stdout
    table = pq.read_table(pq_out)
    assert (
        table.num_rows == 6
        and table.column("completion_ids").to_pylist()[0] == lines[0]["turns"][0]["token_ids"]
    )

    bad = _run("traces", "export", "-s", str(db), "-f", "csv", "-o", str(out))
    assert bad.exit_code == 2 and "csv" in bad.output


def _older(tmp_path: Path) -> Path:
    path = tmp_path / "old.db"
    TraceStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 0")
    return path


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: p / "missing.db", "the file does not exist"),
        (lambda p: (p / "empty.db").touch() or p / "empty.db", "empty (0 bytes)"),
        (
            lambda p: (p / "x.db").write_text("not sqlite " * 100) and p / "x.db",
            "not a trace store",
        ),
        (_older, "schema version 0, but this agentplay reads version 1"),
    ],
    ids=["missing", "empty", "not-sqlite", "older-schema"],
)
def test_bad_stores_give_one_clear_line(tmp_path: Path, setup, message: str) -> None:
    path = setup(tmp_path)
    for args in (
        ["list"],
        ["show", "abc"],
        ["export", "-f", "jsonl", "-o", str(tmp_path / "o.jsonl")],
    ):
        result = _run("traces", *args, "--store", str(path))
        assert result.exit_code == 1
        assert result.stderr.startswith("error: ") and message in result.stderr
        assert result.stdout == ""
    assert not (tmp_path / "o.jsonl").exists()


def test_unknown_reference_is_a_clear_error(db: Path) -> None:
    result = _run("traces", "show", "zzzz", "--store", str(db))
    assert result.exit_code == 1 and "no run or episode 'zzzz'" in result.stderr
    result = _run("traces", "show", "aaaa1111:9", "--store", str(db))
    assert result.exit_code == 1 and "has no episode with index 9" in result.stderr


def test_console_entry_point(db: Path, tmp_path: Path) -> None:
    """`python -m agentplay.cli` is the same program users run."""
    ok = subprocess.run(
        [sys.executable, "-m", "agentplay.cli", "traces", "list", "--store", str(db)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0 and ok.stdout.splitlines()[0].startswith("aaaa1111  search-selfplay")
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentplay.cli",
            "traces",
            "list",
            "--store",
            str(tmp_path / "nope.db"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert (
        bad.stderr.strip()
        == f"error: no trace store at {tmp_path / 'nope.db'}: the file does not exist "
        "(check the path, or create one with `agentplay run ... --store FILE`)"
    )
