"""Kill trials: `agentplay train` SIGKILLed at chosen points, resumed each time, ends exactly
where an uninterrupted run with the same seeds ends (issue #25).

A kill point (`agentplay._kill_points`, armed by `AGENTPLAY_TEST_KILL_AT`) makes the
process SIGKILL itself at an exact place: after an episode of an iteration is stored
(`rollout`), inside the optimizer step (`step`), after the checkpoint commits
(`checkpoint`), during the weight update (`publish`: the adapter is saved, the served
model has not taken it), after the update but before the store logs the iteration
(`sync`). Each killed run is resumed with `--resume`; afterwards:

- every iteration's episodes and metrics exist once, with the values the uninterrupted
  run logged (so no metric was computed from a half-done iteration);
- optimizer steps are neither repeated nor skipped (one per iteration with samples);
- the weight version history in the store equals the checkpoint's and the uninterrupted
  run's, and every stored turn carries the version that sampled its iteration;
- the final weights equal the uninterrupted run's, bit for bit.

The same trial through `agentplay serve` (trainer and server in separate processes)
kills the trainer once and the server once, during a weight update, and checks that the
restarted server, after `--resume`, answers a fixed prompt with the uninterrupted run's
logprobs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from _recipes import SHORT_ANSWERS
from safetensors.torch import load_file

from agentplay._kill_points import KILL_AT_ENV
from agentplay.traces import TraceStore
from agentplay.trainers import checkpoint_history, rollout_run_id, version_history

RECIPE = SHORT_ANSWERS
EPISODES = 2
BASE = "smollm2-135m-instruct"
FIXED = [{"role": "user", "content": "What is the capital of France?"}]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "AGENTPLAY_TORCH_THREADS": "1"}
ENV.pop(KILL_AT_ENV, None)


def _train(out: Path, iterations: int, *, lora: bool, kill: str | None = None, base_url: str | None = None,
           timeout: float = 600) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "agentplay.cli", "train", RECIPE, "--iterations", str(iterations),
           "--episodes-per-iteration", str(EPISODES), "--concurrency", "2", "--store", str(out / "t.db"),
           "--output-dir", str(out / "ckpt"), "--run-id", "r", "--seed", "3", "--set", "n=2",
           "--micro-batch-size", "8", "--resume"]
    cmd += ["--lora", "--learning-rate", "1e-3"] if lora else ["--learning-rate", "1e-5"]
    if base_url is not None:
        cmd += ["--model", f"openai:{BASE}", "--base-url", base_url]
    env = ENV if kill is None else {**ENV, KILL_AT_ENV: kill}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _killed(out: Path, iterations: int, kill: str, **kw) -> None:
    proc = _train(out, iterations, kill=kill, **kw)
    assert proc.returncode == -9, f"{kill}: expected a SIGKILL, got {proc.returncode}: {proc.stderr[-3000:]}"
    assert f"SIGKILL at {kill}" in proc.stderr


def _finished(out: Path, iterations: int, **kw) -> dict:
    proc = _train(out, iterations, **kw)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _final_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for f in sorted((ckpt / "weights").glob("*.safetensors")):
        tensors.update(load_file(str(f)))
    assert tensors, f"no weights in {ckpt}"
    return tensors


def _untimed(store: TraceStore) -> dict[tuple[int, str], float]:
    return {(p.iteration, p.name): p.value for p in store.metrics("r") if not p.name.startswith("time/")}


def _check_same_run(ref: Path, killed: Path, iterations: int) -> None:
    """The killed-and-resumed run stored, stepped and versioned exactly what the reference did."""
    store, ref_store = TraceStore(killed / "t.db"), TraceStore(ref / "t.db")
    last = killed / "ckpt" / f"checkpoint-{iterations - 1:05d}"
    for i in range(iterations):
        run = rollout_run_id("r", i)
        assert store.stored_indexes(run) == set(range(EPISODES)) and store.count_episodes(run) == EPISODES
    assert store.get_cursor("r", "iteration") == iterations - 1

    metrics = _untimed(store)
    assert {it for it, _ in metrics} == set(range(iterations))
    assert metrics == pytest.approx(_untimed(ref_store), rel=1e-9, abs=1e-12)

    stepped = [metrics[(i, "samples")] > 0 for i in range(iterations)]
    assert [metrics[(i, "optimizer_step")] for i in range(iterations)] == [sum(stepped[: i + 1]) for i in range(iterations)]
    assert json.loads((last / "state.json").read_text())["global_step"] == sum(stepped)

    history = checkpoint_history(killed / "ckpt")
    assert history == version_history(store, "r") == checkpoint_history(ref / "ckpt")
    versions = [h.rollout_version for h in history]
    assert versions == sorted(versions) and [h.weight_version for h in history] == [sum(stepped[: i + 1]) for i in range(iterations)]
    for h in history:
        turns = [t.weight_version for ep in store.episodes(rollout_run_id("r", h.iteration)) for t in ep.turns]
        assert turns and set(turns) == {h.rollout_version}, (h, turns)

    mine, theirs = _final_weights(last), _final_weights(ref / "ckpt" / last.name)
    assert mine.keys() == theirs.keys()
    moved = [k for k in mine if not torch.equal(mine[k], theirs[k])]
    assert not moved, f"{len(moved)} tensors differ from the uninterrupted run's, e.g. {moved[:3]}"


# Each trial: the kill points of its successive runs, in order; a final `--resume` finishes it.
# With --seed 3 both iterations take a step (a point that is never reached fails the trial).
# `publish@1` after `checkpoint@1` lands in the resumed run's re-publish of checkpoint 1.
LORA_DEFAULT = ["rollout@0", "step@1", "sync@1"]
EVERY_POINT = ["rollout@0", "step@0", "sync@0", "rollout@1", "step@1", "checkpoint@1", "publish@1"]


@pytest.mark.parametrize(("lora", "iterations", "kills"), [
    pytest.param(True, 2, LORA_DEFAULT, id="lora", marks=pytest.mark.timeout(900)),
    pytest.param(True, 2, EVERY_POINT, id="lora-every-point", marks=[pytest.mark.slow, pytest.mark.timeout(2400)]),
    pytest.param(False, 2, EVERY_POINT, id="full-every-point", marks=[pytest.mark.slow, pytest.mark.timeout(2400)]),
])
def test_killed_at_each_point_ends_like_an_uninterrupted_run(tmp_path, lora, iterations, kills):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    ref_summary = _finished(ref, iterations, lora=lora)
    for kill in kills:
        _killed(killed, iterations, kill, lora=lora)
    summary = _finished(killed, iterations, lora=lora)
    assert summary["last_iteration"] == iterations - 1
    assert summary["weight_version"] == ref_summary["weight_version"]
    _check_same_run(ref, killed, iterations)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """`agentplay serve` in its own process (optionally armed with a kill point)."""

    def __init__(self, kill: str | None = None, port: int | None = None) -> None:
        self.port = port if port is not None else _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = ENV if kill is None else {**ENV, KILL_AT_ENV: kill}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agentplay.cli", "serve", "--model", f"local:{BASE}", "--port", str(self.port),
             "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 180
        while True:
            assert self.proc.poll() is None, f"agentplay serve exited: {self.proc.stderr.read()[-2000:]}"
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "agentplay serve did not come up"
            time.sleep(0.5)

    def fixed_prompt(self, model: str) -> tuple[list[float], int]:
        """Greedy logprobs of a fixed prompt and the weight version that answered it."""
        resp = httpx.post(f"{self.url}/v1/chat/completions", timeout=120, json={
            "model": model, "messages": FIXED, "max_tokens": 6, "temperature": 0, "logprobs": True})
        resp.raise_for_status()
        body = resp.json()
        assert int(resp.headers["x-weight-version"]) == body["weight_version"]
        return [e["logprob"] for e in body["choices"][0]["logprobs"]["content"]], body["weight_version"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.mark.timeout(900)
def test_killed_trainer_and_server_end_like_an_uninterrupted_run(tmp_path):
    """Trainer and `agentplay serve` in separate processes: the trainer is killed inside an
    optimizer step, later the server dies right after taking the last iteration's adapter
    (before answering the trainer). A fresh server plus `--resume` serves exactly the last
    checkpoint's weights (the uninterrupted run's logprobs on a fixed prompt) under its
    version, and the run ends where an uninterrupted one ends."""
    iterations = 2
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    server = _Server()
    try:
        ref_summary = _finished(ref, iterations, lora=True, base_url=f"{server.url}/v1")
        ref_logprobs, ref_version = server.fixed_prompt("agentplay")
        assert ref_version == ref_summary["weight_version"]
    finally:
        server.stop()

    # adapter loads: 0 = iteration 0's weights; after the trainer's kill, 1 = checkpoint 0 again,
    # 2 = the last iteration's: there the server dies, holding weights the trainer never heard it
    # take, and the store has not logged the iteration
    server = _Server(kill="serve_load@2")
    try:
        _killed(killed, iterations, "step@1", lora=True, base_url=f"{server.url}/v1")
        broken = _train(killed, iterations, lora=True, base_url=f"{server.url}/v1")
        assert broken.returncode == 2, broken.stderr[-2000:]  # a clear error, not a traceback
        said = " ".join(broken.stderr.split())  # rich wraps long lines
        assert "did not take weight version" in said and "--resume" in said, said[-2000:]
        assert server.proc.wait(timeout=30) == -9
    finally:
        server.stop()
    # a fresh server (base weights, version 0); the resumed trainer has no iteration left to run:
    # it publishes the last checkpoint and logs its metrics, and the server answers as the
    # uninterrupted run's did after its last step
    server = _Server()
    try:
        summary = _finished(killed, iterations, lora=True, base_url=f"{server.url}/v1")
        assert summary["first_iteration"] == iterations and summary["weight_version"] == ref_summary["weight_version"]
        logprobs, version = server.fixed_prompt("agentplay")
        assert version == ref_version and logprobs == ref_logprobs
        cards = httpx.get(f"{server.url}/v1/models", timeout=30).json()["data"]
        assert {c["weight_version"] for c in cards} == {ref_version}
    finally:
        server.stop()
    _check_same_run(ref, killed, iterations)


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_server_killed_during_rollouts_and_restarted_is_waited_out(tmp_path):
    """The server dies with a rollout request in flight (its fourth chat: iteration 1, after
    the first weight update) and comes back on the same port with base weights; the trainer
    is not restarted. Its endpoint pool waits the outage out, gives the new server the
    adapter under the policy's version, and the request is sent again: the run ends as an
    uninterrupted one does, every turn labelled with the version that really sampled it."""
    iterations = 2
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    server = _Server()
    try:
        ref_summary = _finished(ref, iterations, lora=True, base_url=f"{server.url}/v1")
    finally:
        server.stop()
    server = _Server(kill="serve_chat@3")
    trainer = subprocess.Popen(  # the trainer runs on while the test restarts the server under it
        [sys.executable, "-m", "agentplay.cli", "train", RECIPE,
         "--iterations", str(iterations), "--episodes-per-iteration", str(EPISODES), "--concurrency", "2",
         "--store", str(killed / "t.db"), "--output-dir", str(killed / "ckpt"), "--run-id", "r", "--seed", "3",
         "--set", "n=2", "--micro-batch-size", "8", "--resume", "--lora", "--learning-rate", "1e-3",
         "--model", f"openai:{BASE}", "--base-url", f"{server.url}/v1"],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.proc.wait(timeout=900) == -9, "the server was not killed at its fourth chat"
        assert trainer.poll() is None, f"the trainer gave up at once: {trainer.communicate()[1][-3000:]}"
        server = _Server(port=server.port)
        out, err = trainer.communicate(timeout=900)
        assert trainer.returncode == 0, err[-3000:]
        summary = json.loads(out.strip().splitlines()[-1])
        assert summary["weight_version"] == ref_summary["weight_version"]
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait(timeout=30)
        server.stop()
    _check_same_run(ref, killed, iterations)
