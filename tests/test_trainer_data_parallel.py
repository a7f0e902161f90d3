"""Data-parallel training over gloo with 2 CPU processes: the same batch gives the same
loss and the same updated weights as one process, and `agentplay train --processes 2`
resumes after a kill."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _recipes import SHORT_ANSWERS

from agentplay.traces import TraceStore

HERE = Path(__file__).parent
RECIPE = SHORT_ANSWERS


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "AGENTPLAY_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1", **extra}


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def test_two_processes_take_the_same_step_as_one(tmp_path):
    single = subprocess.run([sys.executable, str(HERE / "_dp_step.py"), str(tmp_path / "one.pt")], env=_env(),
                            capture_output=True, text=True, timeout=600, check=False)
    assert single.returncode == 0, single.stderr[-3000:]
    double = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
                             "--master-addr", "127.0.0.1", "--master-port", _port(), str(HERE / "_dp_step.py"),
                             str(tmp_path / "two.pt")], env=_env(), capture_output=True, text=True, timeout=600,
                            check=False)
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert (one["world"], two["world"]) == (1, 2)
    assert two["metrics"]["loss"] == pytest.approx(one["metrics"]["loss"], rel=1e-5, abs=1e-7)
    assert two["metrics"]["grad_norm"] == pytest.approx(one["metrics"]["grad_norm"], rel=1e-4)
    assert two["metrics"]["mismatch/all/tokens"] == one["metrics"]["mismatch/all/tokens"]  # both shares counted
    moved = max(float((one["after"][n] - one["before"][n]).abs().max()) for n in one["after"])
    apart = max(float((two["after"][n] - one["after"][n]).abs().max()) for n in one["after"])
    assert moved > 1e-4, "the step did not move the weights: nothing was compared"
    assert apart < 1e-5, (apart, moved)  # lr 1e-3: the same update to float rounding
    assert all(torch.equal(two["before"][n], one["before"][n]) for n in one["before"])


def _train(tmp: Path, *extra: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "agentplay.cli", "train", RECIPE, "--processes", "2", "--iterations", "2",
           "--episodes-per-iteration", "2", "--concurrency", "2", "--store", str(tmp / "t.db"),
           "--output-dir", str(tmp / "out"), "--run-id", "dp", "--lora", "--lora-r", "4", "--learning-rate", "1e-3",
           "--micro-batch-size", "2", "--zero-variance", "keep", "--set", "n=2", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)


@pytest.mark.slow
def test_train_with_two_processes_resumes_after_a_kill(tmp_path):
    # the main process SIGKILLs itself after iteration 1's first episode is stored; torchrun ends the other
    killed = _train(tmp_path, env=_env(AGENTPLAY_TEST_KILL_AT="rollout@1"))
    assert killed.returncode != 0
    assert (tmp_path / "out" / "checkpoint-00000").is_dir() and not (tmp_path / "out" / "checkpoint-00001").exists()
    done = _train(tmp_path, "--resume", env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["first_iteration"], summary["last_iteration"]) == (1, 1)
    store = TraceStore(tmp_path / "t.db", read_only=True)
    steps = {p.iteration: p.value for p in store.metrics("dp", name="optimizer_step")}
    assert steps == {0: 1.0, 1: 2.0}  # one step per iteration, none repeated across the kill
    assert (tmp_path / "out" / "checkpoint-00001").is_dir()
