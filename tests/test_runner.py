"""The runner and `agentplay run`: concurrency, immediate storage, groups, resume after SIGKILL,
and the same recipe against `agentplay serve` over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentplay import RunConfig, load_recipe, run_recipe
from agentplay.traces import TraceStore

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = f"{ROOT / 'examples' / 'my_recipe.py'}:build"
AGENTPLAY = [sys.executable, "-m", "agentplay.cli"]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


async def test_run_recipe_stores_every_episode_and_resumes(tmp_path):
    recipe, _ = load_recipe(EXAMPLE, options={"max_tokens": 4, "n_solvers": 2})
    seen: list[int] = []
    with TraceStore(tmp_path / "t.db") as store:
        config = RunConfig(episodes=4, concurrency=3, run_id="r", seed=5, progress=False)
        summary = await run_recipe(recipe, config, store=store, on_episode=lambda e: seen.append(e.index))
        assert summary.completed == 4 and summary.skipped == 0 and summary.errors == 0
        assert sorted(seen) == [0, 1, 2, 3] and store.stored_indexes("r") == {0, 1, 2, 3}
        assert set(summary.mean_reward) == {"solver", "writer"} and "solve_rate" in summary.metrics
        episodes = {e.index: e for e in store.episodes("r")}
        writers = {i: next(t for t in e.turns if t.role == "writer") for i, e in episodes.items()}
        # GroupBy.seed(2): episodes 0,1 share a block (same group seed, same group id), 2,3 the next
        assert writers[0].group_id == writers[1].group_id == "r/block0/writer" != writers[2].group_id
        assert episodes[0].metadata["group_seed"] == episodes[1].metadata["group_seed"] != episodes[2].metadata["group_seed"]
        assert {t.group_id for t in episodes[2].turns if t.role == "solver"} == {"r/ep2/solver"}
        assert all(t.reward is not None and t.reward.reason for e in episodes.values() for t in e.turns)

        more = await run_recipe(recipe, config.model_copy(update={"episodes": 5, "resume": True}), store=store)
        assert more.skipped == 4 and more.completed == 1
        assert store.stored_indexes("r") == {0, 1, 2, 3, 4}
        assert store.get_run("r").status == "finished"


def test_cli_resume_after_sigkill_leaves_exactly_n(tmp_path):
    db = tmp_path / "kill.db"
    args = [*AGENTPLAY, "run", EXAMPLE, "--episodes", "3", "--concurrency", "1", "--store", str(db),
            "--run-id", "k", "--seed", "3", "--set", "max_tokens=4", "--set", "n_solvers=1", "--no-progress"]
    proc = subprocess.Popen(args, env=_env(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    stored: set[int] = set()
    try:
        while time.time() < deadline and proc.poll() is None:
            if db.exists():
                with TraceStore(db) as store:
                    stored = store.stored_indexes("k") if any(r.run_id == "k" for r in store.list_runs()) else set()
                if 1 <= len(stored) < 3:
                    break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # our own child's group only
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"run ended before the kill: {proc.stderr.read()[-2000:]}"
    assert 1 <= len(stored) < 3

    out = subprocess.run([*args, "--resume"], env=_env(), check=False, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    with TraceStore(db) as store:
        indexes = [e.index for e in store.episodes("k")]
        assert sorted(indexes) == [0, 1, 2]  # exactly N, no duplicates
        assert store.get_run("k").status == "finished"
    assert summary["skipped"] >= len(stored) and summary["skipped"] + summary["completed"] == 3


def test_cli_errors_are_clear(tmp_path):
    out = subprocess.run([*AGENTPLAY, "run", "no-such-recipe", "--store", str(tmp_path / "x.db")],
                         env=_env(), check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "no built-in recipe 'no-such-recipe'" in out.stderr
    out = subprocess.run([*AGENTPLAY, "run", EXAMPLE, "--set", "nonsense=1", "--store", str(tmp_path / "x.db")],
                         env=_env(), check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "nonsense" in out.stderr


@pytest.fixture
def served_model(smollm2_server):
    return smollm2_server  # the session's `agentplay serve` (conftest.py): only sampled from here


def test_same_recipe_over_http_against_agentplay_serve(tmp_path, served_model):
    db = tmp_path / "http.db"
    out = subprocess.run([*AGENTPLAY, "run", EXAMPLE, "--model", "openai:smollm2-135m-instruct", "--episodes", "2",
                          "--concurrency", "2", "--store", str(db), "--run-id", "h", "--set", "max_tokens=4",
                          "--no-progress"], env=_env(OPENAI_BASE_URL=served_model, OPENAI_API_KEY="local"),
                         check=False, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    with TraceStore(db) as store:
        episodes = list(store.episodes("h"))
    assert sorted(e.index for e in episodes) == [0, 1] and all(e.status == "ok" for e in episodes)
    for e in episodes:
        assert {t.role for t in e.turns} == {"writer", "solver"}
        for t in e.turns:
            assert t.generations[0].model.endswith("smollm2-135m-instruct") and t.reward is not None
            if t.token_ids is not None:  # the server returns ids: the trace is as exact as in-process
                assert len(t.token_ids) == len(t.mask) and set(t.mask) == {1}
