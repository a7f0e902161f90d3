"""`agentplay train` killed with SIGKILL at a moment it does not choose (once its first
checkpoint exists), then `--resume`: every iteration happens exactly once (one rollout run
each, one optimizer step each that has something to learn from) and the weight version
continues the policy's history. Kills at chosen points: test_trainer_kill.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from _recipes import SHORT_ANSWERS

from agentplay.trainers import checkpoint_history, rollout_run_id, version_history

from agentplay.traces import TraceStore

RECIPE = SHORT_ANSWERS
ITERATIONS, EPISODES = 3, 2


def _cmd(tmp: Path, *extra: str, run_flag: str = "--run-id") -> list[str]:
    return [sys.executable, "-m", "agentplay.cli", "train", RECIPE, "--iterations", str(ITERATIONS),
            "--episodes-per-iteration", str(EPISODES), "--concurrency", "2", "--store", str(tmp / "t.db"),
            "--output-dir", str(tmp / "out"), run_flag, "r", "--lora", "--learning-rate", "1e-3",
            "--micro-batch-size", "8", "--set", "n=2", *extra]


def test_resume_after_sigkill_neither_repeats_nor_skips(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "AGENTPLAY_TORCH_THREADS": "1"}
    # the first run names itself with the old flag (`--run-name`, a hidden alias of `--run-id`)
    first = subprocess.Popen(_cmd(tmp_path, run_flag="--run-name"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 400
    while not (tmp_path / "out" / "checkpoint-00000" / "state.json").exists():
        assert first.poll() is None, f"train exited early: {first.communicate()[1].decode()[-2000:]}"
        assert time.time() < deadline, "no checkpoint within the time limit"
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert first.returncode == -signal.SIGKILL
    # a second run without --resume must refuse to overwrite the checkpoints
    refused = subprocess.run(_cmd(tmp_path), env=env, capture_output=True, text=True, timeout=300, check=False)
    assert refused.returncode == 2 and "--resume" in refused.stderr

    done = subprocess.run(_cmd(tmp_path, "--resume"), env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["last_iteration"] == ITERATIONS - 1
    assert 1 <= summary["first_iteration"] <= ITERATIONS - 1  # started after a checkpoint, not from 0

    store = TraceStore(tmp_path / "t.db")
    # exactly one optimizer step per iteration that had something to learn from (none for the others)
    stepped = [p.value > 0 for p in store.metrics("r", name="samples")]
    steps = {p.iteration: p.value for p in store.metrics("r", name="optimizer_step")}
    assert steps == {i: float(sum(stepped[: i + 1])) for i in range(ITERATIONS)}
    # the weight version is the policy's, across the kill: the store's history is the checkpoint's,
    # every stored turn carries the version that sampled its iteration, never going backwards
    history = checkpoint_history(tmp_path / "out")
    assert history == version_history(store, "r") and [h.iteration for h in history] == list(range(ITERATIONS))
    assert [h.rollout_version for h in history] == [0, *(h.weight_version for h in history[:-1])]
    assert [h.weight_version for h in history] == [steps[i] for i in range(ITERATIONS)]
    turn_versions = [[t.weight_version for ep in store.episodes(rollout_run_id("r", i)) for t in ep.turns]
                     for i in range(ITERATIONS)]
    assert all(set(v) == {h.rollout_version} for v, h in zip(turn_versions, history)), turn_versions
    assert summary["weight_version"] == history[-1].weight_version
    assert store.get_cursor("r", "iteration") == ITERATIONS - 1
    for i in range(ITERATIONS):
        assert store.stored_indexes(rollout_run_id("r", i)) == set(range(EPISODES))
    assert (tmp_path / "out" / f"checkpoint-{ITERATIONS - 1:05d}" / "optimizer.pt").exists()
