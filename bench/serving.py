"""Serving throughput of the local engine against sequential `generate` calls.

Aggregate completion tokens/s at concurrency 1, 4 and 8 through
`LocalModel.chat`, against a baseline run in the same process: one
`model.generate` call per request, one after another, on the same prompts and
weights. Decoding is greedy in both, so each request produces the same tokens
(and the same number of them) in every run. Target: >= 3x the baseline at
concurrency 8.

    python bench/serving.py                    # defaults: 16 requests x 32 tokens, 2 threads
    python bench/serving.py --threads 1 --requests 8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TOPICS = [
    "the history of the bicycle", "how bread is baked", "why the sky is blue", "the water cycle",
    "how volcanoes form", "the life of honey bees", "how a compass works", "the planets of the solar system",
    "how trains run on rails", "why leaves change colour", "how rainbows appear", "the game of chess",
    "how airplanes fly", "the moon's phases", "how coffee is grown", "the invention of paper",
]


def _messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Write a long, detailed explanation of {TOPICS[i % len(TOPICS)]}."}]


def baseline(model, prompts: list[list[int]], max_tokens: int) -> tuple[int, float, float]:
    """Sequential single-request `generate`, greedy: the reference throughput."""
    import torch

    hf = model.hf_model
    eos = sorted(model._engine.eos_ids)
    tokens = 0
    started, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for ids in prompts:
            x = torch.tensor([ids])
            out = hf.generate(
                input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=max_tokens,
                do_sample=False, temperature=None, top_p=None, top_k=None,
                eos_token_id=eos, pad_token_id=model.tokenizer.pad_token_id,
            )
            tokens += out.shape[1] - x.shape[1]
    return tokens, time.perf_counter() - started, time.process_time() - cpu


async def through_engine(model, n_requests: int, max_tokens: int, concurrency: int) -> tuple[int, float, float]:
    from agentplay.models import SamplingParams

    sampling = SamplingParams(temperature=0, max_tokens=max_tokens)
    pending = list(range(n_requests))
    tokens = 0

    async def client() -> None:
        nonlocal tokens
        while pending:
            res = await model.chat(_messages(pending.pop(0)), sampling=sampling)
            tokens += res.usage.completion_tokens

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return tokens, time.perf_counter() - started, time.process_time() - cpu


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--concurrency", default="1,4,8")
    args = parser.parse_args()

    from agentplay.models import SamplingParams, load_model
    from agentplay.models._prompt import render_chat

    model = load_model("local:smollm2-135m-instruct", torch_threads=args.threads, max_batch_size=8)
    prompts = [
        model.tokenizer(render_chat(model.tokenizer, _messages(i), None), add_special_tokens=False)["input_ids"]
        for i in range(args.requests)
    ]
    await model.chat(_messages(0), sampling=SamplingParams(max_tokens=4, temperature=0))  # warm-up

    base_tokens, base_s, base_cpu = baseline(model, prompts, args.max_tokens)
    base_rate, base_cpu_rate = base_tokens / base_s, base_tokens / base_cpu
    print(f"SmolLM2-135M, {args.requests} requests x <= {args.max_tokens} tokens, {args.threads} torch threads")
    # Wall-clock rates are what a user sees; on a box shared with other jobs they swing
    # with the load, so tokens per CPU-second of this process is printed beside them.
    print(f"{'run':<30}{'tokens':>7}{'wall s':>8}{'tok/s':>8}{'ratio':>7}{'cpu s':>8}{'tok/cpu-s':>10}{'ratio':>7}")

    def row(name: str, tokens: int, secs: float, cpu: float) -> None:
        rate, cpu_rate = tokens / secs, tokens / cpu
        print(
            f"{name:<30}{tokens:>7}{secs:>8.1f}{rate:>8.1f}{rate / base_rate:>6.2f}x"
            f"{cpu:>8.1f}{cpu_rate:>10.1f}{cpu_rate / base_cpu_rate:>6.2f}x"
        )

    row("baseline: sequential generate", base_tokens, base_s, base_cpu)
    for c in (int(x) for x in args.concurrency.split(",")):
        before = len(model._engine.batch_sizes)
        tokens, secs, cpu = await through_engine(model, args.requests, args.max_tokens, c)
        row(f"engine, concurrency {c}", tokens, secs, cpu)
        print(f"{'':<4}batch rows: {model._engine.batch_sizes[before:]}")
    await model.aclose()


if __name__ == "__main__":
    asyncio.run(main())
