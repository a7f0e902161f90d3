"""Asynchronous self-play: samples/s and wall time per iteration at async_level K = 0, 1, 2.

The model is served by `agentplay serve` in its own process (its own torch thread); this
process trains LoRA steps on its own thread and publishes each adapter over the LoRA
endpoints, as `agentplay train --base-url ... --async-level K` does. Every K runs the same
iterations of the same recipe (short answers, graded by length so every group has signal)
from the same initial weights (the adapter is unloaded to version 0 between runs); K=0 is
the baseline of the ratios. Also printed: the off-policy lag each K actually reached.

    python bench/async.py                          # 4 iterations x 4 episodes, K = 0,1,2
    python bench/async.py --iterations 6 --levels 0,1
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx

from agentplay import load_recipe

SHORT_ANSWERS = f"{Path(__file__).resolve().parents[1] / 'examples' / 'short_answers.py'}:build"
"""One role, n answers per question, fewer written tokens is better: rewards differ in almost
every group, so every iteration takes an optimizer step (a version to be behind by)."""


def start_server(threads: int) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "AGENTPLAY_TORCH_THREADS": str(threads)}
    proc = subprocess.Popen([sys.executable, "-m", "agentplay.cli", "serve", "--model", "local:smollm2-135m-instruct",
                             "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 300
    while True:
        if proc.poll() is not None:
            raise SystemExit("agentplay serve exited before answering")
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise SystemExit("agentplay serve did not answer within 300 s")
        time.sleep(0.5)


async def one_level(url: str, level: int, args: argparse.Namespace, work: Path) -> dict[str, float]:
    from agentplay.models import load_model
    from agentplay.traces import TraceStore
    from agentplay.trainers import SelfPlayTrainer, TrainConfig

    served = load_model("openai:smollm2-135m-instruct", base_url=url)
    for name in ("agentplay",):  # back to the initial weights, as a fresh server holds them
        try:
            await served.unload_lora_adapter(name, version=0)
        except Exception:  # noqa: BLE001 - the first run finds no adapter
            pass
    cfg = TrainConfig(recipe="short-answers", model="openai:smollm2-135m-instruct", iterations=args.iterations,
                      episodes_per_iteration=args.episodes, concurrency=args.concurrency,
                      store=work / f"k{level}.db", output_dir=work / f"k{level}", run_name=f"k{level}", lora=True,
                      lora_r=8, learning_rate=1e-3, micro_batch_size=8, report_to=[], async_level=level,
                      train_threads=args.train_threads, tis_cap=2.0 if level else None)
    recipe, _ = load_recipe(SHORT_ANSWERS, model="openai:smollm2-135m-instruct",
                            options={"n": args.n, "max_tokens": args.max_tokens, "questions": 6})
    store = TraceStore(cfg.store)
    started = time.perf_counter()
    summary = await SelfPlayTrainer(cfg, recipe=recipe, served=served, store=store).run()
    wall = time.perf_counter() - started
    await served.aclose()
    samples = sum(m["samples"] for m in summary.metrics)
    return {"wall": wall, "per_iteration": wall / args.iterations, "samples_per_s": samples / wall,
            "samples": samples, "lag_max": max(m["off_policy_lag/max"] for m in summary.metrics),
            "lag_mean": sum(m["off_policy_lag/mean"] for m in summary.metrics) / len(summary.metrics),
            "rollout_s": sum(m["time/rollout_s"] for m in summary.metrics) / len(summary.metrics),
            "train_s": sum(m["time/train_s"] for m in summary.metrics) / len(summary.metrics)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=4)
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--n", type=int, default=4, help="answers per question (the GRPO group)")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--levels", default="0,1,2")
    parser.add_argument("--server-threads", type=int, default=1)
    parser.add_argument("--train-threads", type=int, default=1)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.train_threads)
    proc, url = start_server(args.server_threads)
    results: dict[int, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for level in (int(x) for x in args.levels.split(",")):
                results[level] = await one_level(url, level, args, Path(tmp))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # our own child's process group only
        proc.wait(timeout=30)
    base = results[min(results)]
    print(f"SmolLM2-135M LoRA, {args.iterations} iterations x {args.episodes} episodes x n={args.n} "
          f"(<= {args.max_tokens} tokens), concurrency {args.concurrency}; agentplay serve "
          f"({args.server_threads} thread) + trainer ({args.train_threads} thread) on {os.cpu_count()} cores")
    print(f"{'K':>3}{'wall s':>9}{'s/iter':>9}{'ratio':>8}{'samples/s':>11}{'ratio':>8}"
          f"{'rollout s':>11}{'train s':>9}{'lag max':>9}{'lag mean':>10}")
    for level, r in results.items():
        speedup = base["per_iteration"] / r["per_iteration"]
        print(f"{level:>3}{r['wall']:>9.1f}{r['per_iteration']:>9.1f}{speedup:>7.2f}x"
              f"{r['samples_per_s']:>11.2f}{r['samples_per_s'] / base['samples_per_s']:>7.2f}x"
              f"{r['rollout_s']:>11.1f}{r['train_s']:>9.1f}{r['lag_max']:>9.0f}{r['lag_mean']:>10.2f}")
    print("ratio: K=0's seconds per iteration / K's (higher is faster); rollout s: time the trainer waited "
          "for an iteration's rollouts (overlapped ones are already done)")


if __name__ == "__main__":
    asyncio.run(main())
