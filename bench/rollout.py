"""Rollout overhead: search self-play through agentplay vs a hand-written asyncio loop.

Both sides make the same model calls (same prompts, demos, tools, sampling,
greedy decoding so both write the same tokens) and the same tool calls on the
same corpus, for the same episode seeds, in one process on one model engine.
The hand-written loop has no graph, no roles, no trace capture, no rewards
bookkeeping and no store: the ratio is what agentplay costs. Target: <= 1.10.

    python bench/rollout.py --episodes 4 --concurrency 4 --repeats 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import tempfile
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agentplay.graphs import search_selfplay as ssp
from agentplay.tools import SearchTool, Toolbox, default_corpus_index

from agentplay import RunConfig, resolve_model, run_recipe
from agentplay.models import DEFAULT_MODEL_SPEC, SamplingParams
from agentplay.rewards import exact_match, normalize_answer
from agentplay.runner import episode_seeds
from agentplay.traces import TraceStore

OPTIONS = {
    "search_protocol": "tool_calls",  # the hand-written episode below makes tool calls
    "rag_check": "model",  # ...asks the model to check the question
    "search_mode": "bm25",  # ...and searches with BM25
    "n_solvers": 2,
    "group_k": 2,
    "max_tool_turns": 2,
    "proposer_max_tokens": 48,
    "solver_max_tokens": 32,
    "rag_max_tokens": 12,
    "temperature": 0.0,
    "gate_solvers": False,
    "min_distinct_queries": 1,
}


async def hand_written_episode(model: Any, index_: Any, cfg: ssp.SearchSelfPlayConfig, seed: int,
                               group_seed: int) -> dict[str, Any]:
    """The same calls as the recipe, written directly against the model and the toolbox."""
    toolbox = Toolbox([SearchTool(index_, k=cfg.search_k, mode=cfg.search_mode, snippet_chars=cfg.snippet_chars)])
    schemas = toolbox.schemas()

    async def loop(messages: list[dict[str, Any]], max_tokens: int, tools: bool) -> tuple[str, list[str]]:
        params = SamplingParams(max_tokens=max_tokens, temperature=cfg.temperature)
        queries: list[str] = []
        for round_ in range(cfg.max_tool_turns + 1):
            choice = (await model.chat(messages, tools=schemas if tools else None, sampling=params)).choice
            messages = [*messages, choice.assistant_message()]
            if not tools or not (choice.tool_calls or choice.tool_call_failures) or round_ == cfg.max_tool_turns:
                return (choice.content or "").strip(), queries
            records = await toolbox.execute([*choice.tool_calls, *choice.tool_call_failures])
            queries += [str((r.arguments or {}).get("query", "")) for r in records if r.name == "search" and not r.error]
            messages += [toolbox.tool_message(r) for r in records]
        raise AssertionError("unreachable")

    docs = index_.sample_documents(16, seed=group_seed, min_chars=80)
    target = next((d for d in docs if ":" not in d.id and "." in d.id), docs[0])
    user = ssp.PROPOSER_USER.replace("{{ answer }}", target.id).replace("{{ doc }}", ssp._excerpt(target.text, cfg.doc_chars))
    text, queries = await loop([{"role": "system", "content": ssp.PROPOSER_SYSTEM}, *ssp.PROPOSER_DEMO,
                                {"role": "user", "content": user}], cfg.proposer_max_tokens, True)
    try:
        question = ssp.parse_question(text)
    except ValueError:
        return {"valid": False}
    rules = normalize_answer(target.id) not in normalize_answer(question)
    seen = {h.doc_id: f"{h.title}: {ssp._excerpt(h.text, cfg.doc_chars)}"
            for q in dict.fromkeys(queries) if q for h in index_.search(q, cfg.search_k, cfg.search_mode)}
    noise = [d for d in index_.sample_documents(cfg.noise_docs + len(seen) + 1, seed=seed)
             if d.id not in seen and d.id != target.id][: cfg.noise_docs]
    shown_docs = list(seen.values()) + [f"{d.title}: {ssp._excerpt(d.text, cfg.doc_chars)}" for d in noise]
    random.Random(seed).shuffle(shown_docs)
    shown = "\n".join(f"[{i}] {d}" for i, d in enumerate(shown_docs, 1)) or "(no documents)"
    rag_text, _ = await loop([{"role": "system", "content": ssp.RAG_SYSTEM},
                              {"role": "user", "content": f"Documents:\n{shown}\n\nQuestion: {question}"}],
                             cfg.rag_max_tokens, False)
    answers = await asyncio.gather(*(
        loop([{"role": "system", "content": ssp.SOLVER_SYSTEM}, *ssp.SOLVER_DEMO, {"role": "user", "content": question}],
             cfg.solver_max_tokens, True) for _ in range(cfg.n_solvers)))
    scores = [exact_match(a, target.id) for a, _ in answers]
    return {"valid": rules and exact_match(rag_text, target.id) == 1.0, "solve_rate": sum(scores) / len(scores)}


async def bench(episodes: int, concurrency: int, repeats: int) -> None:
    model = await resolve_model(DEFAULT_MODEL_SPEC)
    index_ = default_corpus_index()
    recipe = ssp.build(DEFAULT_MODEL_SPEC, index=index_, **OPTIONS).compile()
    cfg = ssp.SearchSelfPlayConfig(**OPTIONS)

    async def ours() -> float:
        with tempfile.TemporaryDirectory() as tmp, TraceStore(f"{tmp}/bench.db") as store:
            start = time.perf_counter()
            await run_recipe(recipe, RunConfig(episodes=episodes, concurrency=concurrency, seed=0, progress=False),
                             store=store)
            return episodes / (time.perf_counter() - start)

    async def theirs() -> float:
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with gate:
                await hand_written_episode(model, index_, cfg, *episode_seeds(0, i, cfg.group_k))

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(episodes)))
        return episodes / (time.perf_counter() - start)

    await theirs()  # warm-up: weights, kernels, corpus pages
    a_runs, b_runs = [], []
    for _ in range(repeats):  # interleaved so load drift hits both sides alike
        a_runs.append(await ours())
        b_runs.append(await theirs())
    a, b = statistics.median(a_runs), statistics.median(b_runs)
    print(f"agentplay    : {a:.4f} episodes/s  (runs: {', '.join(f'{x:.4f}' for x in a_runs)})")
    print(f"hand-written : {b:.4f} episodes/s  (runs: {', '.join(f'{x:.4f}' for x in b_runs)})")
    print(f"time ratio agentplay / hand-written: {b / a:.3f}  (target <= 1.10)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(bench(args.episodes, args.concurrency, args.repeats))


if __name__ == "__main__":
    main()
