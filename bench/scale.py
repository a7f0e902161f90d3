"""Scale-out: episodes/s with the local executor and with Ray at 1 and 2 workers.

Same recipe, same seeds, same serving endpoints (`agentplay serve` subprocesses
with SmolLM2) for every executor; only where the episodes run changes. Two
workloads:

- `model`: examples/my_recipe.py over HTTP (real model calls): what users get.
- `null`: a graph with no model call, so the difference between executors is
  the executor's own cost; (Ray time - local time) / episodes is Ray's overhead
  per episode (pickling the spec and the Episode, the actor call, the driver loop).
  `null-serial` runs it one episode at a time (the full round trip, unhidden);
  `null` with the usual concurrency, where workers overlap the driver's store writes.

Cluster start and worker setup are timed apart from the episodes (paid once per run).
On a 2-core box 2 workers cannot beat 1 on CPU-bound work: the serving engine
and the workers share the same cores. Run:

    python bench/scale.py --episodes 8 --null-episodes 128 --concurrency 4 --servers 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TypedDict

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from langgraph.graph import END, START, StateGraph

from agentplay import RayConfig, RayExecutor, Recipe, RecipeRef, RunConfig, close_models, load_recipe, run_recipe
from agentplay._executors import register_endpoints
from agentplay.traces import TraceStore

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from _servers import SERVED, start_server, stop_server  # the tests' server helper

MODEL_REF = f"{ROOT / 'examples' / 'my_recipe.py'}:build"
NULL_REF = f"{Path(__file__).resolve()}:null_recipe"


class _NullState(TypedDict, total=False):
    x: int


def null_recipe(model: str | None = None) -> Recipe:
    """One node, no model: what is left of an episode is the executor's own work."""

    def step(state: _NullState) -> dict[str, Any]:
        return {"x": state["x"] + 1}

    graph = StateGraph(_NullState)
    graph.add_node("step", step)
    graph.add_edge(START, "step")
    graph.add_edge("step", END)
    return Recipe(name="null", graph=graph, roles={}, rewards={}, groups={},
                  initial_state=lambda ctx: {"x": ctx.index}, metrics=lambda s, t: {"x": float(s["x"])})


async def run_once(ref: RecipeRef, executor: str, workers: int, episodes: int, concurrency: int,
                   seed: int) -> dict[str, Any]:
    recipe, _ = load_recipe(ref.recipe, model=ref.model, options=ref.options)
    compiled = recipe.compile()
    runner = None
    setup_s = 0.0
    if executor == "ray":
        runner = RayExecutor(ref, RayConfig(workers=workers, concurrency=concurrency))
        t = time.perf_counter()
        await runner.start()
        setup_s = time.perf_counter() - t
    elif ref.endpoints and ref.model:
        register_endpoints(ref.model, ref.endpoints)
    with tempfile.TemporaryDirectory() as tmp, TraceStore(Path(tmp) / "b.db") as store:
        try:
            summary = await run_recipe(compiled, RunConfig(episodes=episodes, concurrency=concurrency, seed=seed,
                                                           run_id="b", progress=False), store=store, executor=runner)
        finally:
            if runner is not None:
                await runner.aclose()
            await close_models()
        seeds = sorted((e.index, e.seed) for e in store.episodes("b"))
    return {"executor": executor, "workers": workers if executor == "ray" else 0,
            "elapsed_s": summary.elapsed_s, "episodes_per_s": summary.episodes_per_s,
            "setup_s": setup_s, "errors": summary.errors, "seeds": seeds}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=8)
    ap.add_argument("--null-episodes", type=int, default=128)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--servers", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    servers = [start_server() for _ in range(args.servers)]
    urls = [u for _, u in servers]
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        workloads = {
            # one at a time: each episode pays the full round trip, nothing overlaps it
            "null-serial": (RecipeRef(recipe=NULL_REF), args.null_episodes, 1),
            "null": (RecipeRef(recipe=NULL_REF), args.null_episodes, args.concurrency),
            "model": (RecipeRef(recipe=MODEL_REF, model=SERVED, endpoints=urls,
                                options={"max_tokens": args.max_tokens, "n_solvers": 2}), args.episodes,
                      args.concurrency),
        }
        for name, (ref, n, concurrency) in workloads.items():
            rows = results[name] = []
            for executor, workers in (("local", 0), ("ray", 1), ("ray", 2)):
                row = await run_once(ref, executor, workers, n, concurrency, args.seed)
                rows.append(row)
                print(f"{name:11s} {executor:5s} workers={workers}  {row['episodes_per_s']:7.2f} ep/s  "
                      f"episodes {row['elapsed_s']:6.2f} s  setup {row['setup_s']:5.1f} s  errors {row['errors']}",
                      flush=True)
            assert all(r["seeds"] == rows[0]["seeds"] for r in rows), "executors ran different episodes"
    finally:
        for proc, _ in servers:
            stop_server(proc)

    print("\nratios against the local executor (same process, same seeds):")
    report: dict[str, Any] = {}
    for name, rows in results.items():
        local = rows[0]
        n = len(local["seeds"])
        for r in rows[1:]:
            key = f"{name}/ray{r['workers']}"
            report[key] = {
                "episodes_per_s": round(r["episodes_per_s"], 3),
                "speed_vs_local": round(r["episodes_per_s"] / local["episodes_per_s"], 3),
                "overhead_ms_per_episode": round(1000 * (r["elapsed_s"] - local["elapsed_s"]) / n, 2),
                "setup_s": round(r["setup_s"], 1),
            }
        report[f"{name}/local"] = {"episodes_per_s": round(local["episodes_per_s"], 3)}
    for key, row in report.items():
        print(f"  {key:18s} {json.dumps(row)}")


if __name__ == "__main__":
    asyncio.run(main())
