"""Asynchronous self-play (`async_level=K`): rollouts of the next iterations run while one
trains, every stored turn is at most K weight versions behind the policy that trains on it,
K=0 is the synchronous loop, and a kill + `--resume` neither repeats nor skips a sample."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from agentplay.models import load_model
from agentplay.traces import TraceStore
from agentplay.trainers import SelfPlayTrainer, TrainConfig, checkpoint_history, rollout_run_id, version_history

sys.path.insert(0, str(Path(__file__).parent))
from _recipes import SHORT_ANSWERS
from _recipes import short_answers as build_recipe

RECIPE = SHORT_ANSWERS


def _lags(store: TraceStore, run: str, iterations: int) -> dict[int, list[int]]:
    """Per iteration, each stored turn's lag: the policy's version when it trained - the turn's."""
    trained_at = {h.iteration: h.rollout_version for h in version_history(store, run)}
    return {i: [trained_at[i] - t.weight_version for ep in store.episodes(rollout_run_id(run, i)) for t in ep.turns]
            for i in range(iterations)}


def _cfg(tmp: Path, run: str, **kw) -> TrainConfig:
    return TrainConfig(recipe="unused", episodes_per_iteration=2, store=tmp / "t.db", output_dir=tmp / run,
                       run_name=run, lora=True, learning_rate=1e-3, micro_batch_size=8, report_to=[],
                       zero_variance="keep", **kw)  # every iteration trains: one version per iteration


async def test_staleness_never_exceeds_k_and_reaches_it(tmp_path):
    """K=2 on the in-process engine: iterations 0-2 roll out together on version 0, so iteration 2
    trains (at version 2) on samples exactly 2 versions old; none is older, none from the future."""
    served = load_model("local:smollm2-135m-instruct")
    try:
        store = TraceStore(tmp_path / "t.db")
        cfg = _cfg(tmp_path, "a", iterations=4, concurrency=2, async_level=2, train_threads=1)
        summary = await SelfPlayTrainer(cfg, recipe=build_recipe(n=4), served=served, store=store).run()
        history = version_history(store, "a")
        assert [h.rollout_version for h in history] == [0, 1, 2, 3]
        assert summary.weight_version == served.weight_version == history[-1].weight_version
        lags = _lags(store, "a", 4)
        assert all(lags.values()) and all(0 <= x <= 2 for v in lags.values() for x in v), lags
        assert set(lags[2]) == {2}, lags  # rolled out on version 0 while iterations 0 and 1 trained
        logged = {p.iteration: p.value for p in store.metrics("a", name="off_policy_lag/max")}
        assert logged == {i: float(max(v)) for i, v in lags.items()}  # the metric of the trained samples
        for i in range(4):
            assert store.stored_indexes(rollout_run_id("a", i)) == {0, 1}
    finally:
        await served.aclose()


async def test_k0_is_the_synchronous_loop(tmp_path):
    """K=0: every turn sampled by the policy's current weights, each iteration rolled out only after
    the previous one was committed, and two runs on one seed agree token for token and step for step."""
    served = load_model("local:smollm2-135m-instruct")
    try:
        store = TraceStore(tmp_path / "t.db")
        runs = {}
        for run in ("x", "y"):
            if served.adapters:  # each run starts from the initial weights, as a fresh server would
                await served.unload_lora_adapter(served.adapters[-1], version=0)
            cfg = _cfg(tmp_path, run, iterations=2, concurrency=1, async_level=0, seed=7)
            await SelfPlayTrainer(cfg, recipe=build_recipe(n=4), served=served, store=store).run()
            # iteration 1 trained at version 1 on samples of version 1: rolled out after the publish
            assert version_history(store, run)[1].rollout_version == 1
            assert all(x == 0 for v in _lags(store, run, 2).values() for x in v)
            eps = [sorted(store.episodes(rollout_run_id(run, i)), key=lambda e: e.index) for i in range(2)]
            runs[run] = ([[(t.token_ids, t.logprobs, t.weight_version) for e in it for t in e.turns] for it in eps],
                         [(p.name, p.value) for p in store.metrics(run) if not p.name.startswith("time/")])
        assert runs["x"] == runs["y"]
    finally:
        await served.aclose()


def _cmd(tmp: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "agentplay.cli", "train", RECIPE, "--iterations", "4",
            "--episodes-per-iteration", "2", "--concurrency", "2", "--store", str(tmp / "t.db"),
            "--output-dir", str(tmp / "out"), "--run-id", "k", "--lora", "--learning-rate", "1e-3",
            "--micro-batch-size", "8", "--set", "n=4", "--async-level", "1", "--option", "train_threads=1",
            "--option", 'zero_variance="keep"',
            *extra]


def test_kill_during_a_step_with_rollouts_ahead_then_resume(tmp_path):
    """SIGKILL inside iteration 2's optimizer step while iteration 3 rolls out, then --resume: episodes
    stored before the kill stay (not re-sampled), every iteration has each index once, one optimizer
    step each, and the lag bound holds across the kill."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "AGENTPLAY_TORCH_THREADS": "1"}
    killed = subprocess.run(_cmd(tmp_path), env={**env, "AGENTPLAY_TEST_KILL_AT": "step@2"}, capture_output=True,
                            text=True, timeout=600, check=False)
    assert killed.returncode == -9, killed.stderr[-3000:]
    store = TraceStore(tmp_path / "t.db")
    before = {i: {e.index: e.episode_id for e in store.episodes(rollout_run_id("k", i))} for i in range(4)}
    assert set(before[2]) == {0, 1} and before[3], "iteration 3 did not roll out while iteration 2 trained"
    assert [h.iteration for h in checkpoint_history(tmp_path / "out")] == [0, 1]

    done = subprocess.run(_cmd(tmp_path, "--resume"), env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["first_iteration"], summary["last_iteration"], summary["weight_version"]) == (2, 3, 4)
    store = TraceStore(tmp_path / "t.db")
    after = {i: {e.index: e.episode_id for e in store.episodes(rollout_run_id("k", i))} for i in range(4)}
    for i in range(4):
        assert set(after[i]) == {0, 1}
        assert before[i].items() <= after[i].items()  # nothing stored before the kill was sampled again
    steps = [p.value for p in store.metrics("k", name="optimizer_step")]
    assert steps == [1.0, 2.0, 3.0, 4.0]  # one step per iteration, none twice
    assert checkpoint_history(tmp_path / "out") == version_history(store, "k")
    lags = _lags(store, "k", 4)
    assert all(0 <= x <= 1 for v in lags.values() for x in v), lags
