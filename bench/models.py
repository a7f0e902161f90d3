"""Which packaged model gives more per CPU-minute: SmolLM2-135M-Instruct or Gemma 3 270M?

For each `local:` model, in one process on the same threads (measurements interleaved, so a
busy machine slows both alike): generation tokens/s (sampled completions of the code-selfplay
solver's prompt on held-out problems, several rows per batch as rollouts run), the time of one
LoRA GRPO step on those completions (the `bench/learning.py` trainer settings: DAPO, lr 5e-5,
KL 0.04 against the adapter disabled), and the untrained model's solve rate on held-out code
problems (`bench/heldout_code.jsonl`, greedy, the solver's own prompt and parser, deduction). Prints each figure and the ratio of every model to the first.

    python bench/models.py                       # both models, 40 held-out problems
    python bench/models.py --heldout-limit 80 --output models.json
    python bench/models.py --steps 0 --heldout-limit 0 --gen-tokens 32   # speed only

Measured (2026-12-07, 1 torch thread on a 2-core machine shared with six other jobs, load
average 10-13: ratios, not absolute figures), SmolLM2 first, Gemma 3 270M second:
- decode, 8 greedy rows x 32 tokens at fixed length: 13.1 vs 6.1 tokens/s (Gemma x0.47: twice
  the parameters, and a 262k-token vocabulary whose LM head is 168M of its 268M parameters);
- rollouts (8 samples of the solver prompt, T 0.7, 64 tokens max): 6.2 vs 9.4 tokens/s (x1.51),
  but only because every Gemma row runs to the limit (2048 of 2048 tokens) while SmolLM2 ends
  its answers (899 of 2048) and the static batch decodes on for its longest row;
- one LoRA GRPO step on those 16 samples: 31.3 s (486 completion tokens) vs 125.2 s (1024):
  x4.0 per step, x1.9 per trained token;
- untrained, held-out deduction (40 of 80 problems, greedy): 0.125 +- 0.053 (5 solved, answer
  block written 1.00) vs 0.025 +- 0.025 (1 solved, answer block 0.20, any literal 0.100).
The packaged Gemma is the pretrained base model (the only Gemma 3 GGUF on PyPI), not the
instruction-tuned one: in Gemma's turn format it rarely writes the requested block, never ends
its turn, and at this size its rollouts give GRPO almost no reward variance to learn from,
at about twice SmolLM2's cost per token. SmolLM2-135M-Instruct stays the benchmark default.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

MODELS = ["local:smollm2-135m-instruct", "local:gemma3-270m"]


async def generate(model: Any, problems: list[dict[str, Any]], rows: int, tokens: int, seed: int) -> tuple[float, list[Any]]:
    """Wall seconds for `rows` sampled completions of each problem's solver prompt, and the results."""
    from agentplay.graphs.code_selfplay import solver_role
    from agentplay.models import SamplingParams

    solver = solver_role("deduction")
    t0 = time.perf_counter()
    results = await asyncio.gather(*(
        model.chat(solver.build_messages(None, {"program": p["program"], "inputs": [p["input"]], "outputs": [p["output"]]}),
                   sampling=SamplingParams(max_tokens=tokens, temperature=0.7, n=rows, seed=seed + i))
        for i, p in enumerate(problems)
    ))
    return time.perf_counter() - t0, results


def fixed_length_rate(model: Any, rows: int, tokens: int) -> float:
    """Tokens/s of `rows` greedy rows decoded for exactly `tokens` tokens (end of turn ignored):
    the per-token cost alone, where `generate`'s figure also counts when each model stops."""
    import torch

    ids = model.tokenizer("The history of the city begins", return_tensors="pt")["input_ids"].repeat(rows, 1)
    t0 = time.perf_counter()
    with torch.no_grad():
        model.hf_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=tokens,
                                min_new_tokens=tokens, do_sample=False)
    return rows * tokens / (time.perf_counter() - t0)


def train_samples(results: list[Any], seed: int) -> list[Any]:
    from agentplay.traces import RewardRecord, RoleTurn
    from agentplay.trainers import TrainSample

    rng = random.Random(seed)
    samples = []
    for g, res in enumerate(results):
        for c in res.choices:
            a = rng.choice([-1.0, 1.0])
            samples.append(TrainSample(
                turn=RoleTurn(role="solver", group_id=f"g{g}", prompt_token_ids=res.prompt_token_ids,
                              token_ids=c.completion_token_ids, mask=[1] * len(c.completion_token_ids),
                              logprobs=c.logprobs, reward=RewardRecord(value=a)),
                episode_id=f"e{g}", advantage=a, reward=a))
    return samples


def learner_for(model: Any, out: Path) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    from agentplay.trainers import GRPOLearner, TrainConfig

    cfg = TrainConfig(model=model.spec, output_dir=out, lora=True, learning_rate=5e-5, loss_type="dapo", beta=0.04,
                      temperature=0.7, micro_batch_size=16, report_to=[])
    return GRPOLearner(AutoModelForCausalLM.from_pretrained(model.model_dir, dtype=torch.float32), model.tokenizer, cfg)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from learning import evaluate, load_heldout

    from agentplay.models import ModelConfig, load_model

    problems = load_heldout()
    gen_problems = problems[:: max(1, len(problems) // args.gen_prompts)][: args.gen_prompts]
    heldout = problems[:: max(1, len(problems) // max(1, args.heldout_limit))][: args.heldout_limit]
    models = {}
    for spec in args.models:
        t0 = time.perf_counter()
        models[spec] = load_model(ModelConfig(backend="local", name=spec.removeprefix("local:"),
                                              max_batch_size=64, torch_threads=args.threads))
        print(f"{spec}: loaded in {time.perf_counter() - t0:.1f}s "
              f"({sum(p.numel() for p in models[spec].hf_model.parameters()) / 1e6:.0f}M parameters)", flush=True)
    report: dict[str, dict[str, Any]] = {s: {"gen_tokens": 0, "gen_s": 0.0, "step_s": [], "trained_tokens": [],
                                             "fixed_length_tokens_per_s": []} for s in models}
    await asyncio.gather(*(generate(m, gen_problems[:1], 2, 4, 0) for m in models.values()))  # warm-up
    last: dict[str, list[Any]] = {}
    for rep in range(args.reps):  # interleaved: load on the box changes both models' figures alike
        for spec, m in models.items():
            secs, results = await generate(m, gen_problems, args.gen_rows, args.gen_tokens, seed=100 * rep)
            report[spec]["gen_s"] += secs
            report[spec]["gen_tokens"] += sum(len(c.completion_token_ids) for r in results for c in r.choices)
            last[spec] = results
            report[spec]["fixed_length_tokens_per_s"].append(fixed_length_rate(m, args.gen_rows, args.gen_tokens))
    with tempfile.TemporaryDirectory() as tmp:
        learners = {spec: learner_for(m, Path(tmp) / spec.replace(":", "_")) for spec, m in models.items()}
        for step in range(args.steps + 1 if args.steps else 0):  # step 0 warms up (allocations, first-call overheads)
            for spec, learner in learners.items():
                samples = train_samples(last[spec], seed=step)
                t0 = time.perf_counter()
                learner.step(samples)
                if step:
                    report[spec]["step_s"].append(time.perf_counter() - t0)
                    report[spec]["trained_tokens"].append(sum(len(s.turn.token_ids) for s in samples))
        del learners
    for spec, m in models.items():
        if not args.heldout_limit:
            await m.aclose()
            continue
        t0 = time.perf_counter()
        e = await evaluate(m, heldout, args.task, max_tokens=args.eval_max_tokens)
        r = report[spec]
        r.update(eval_s=time.perf_counter() - t0, accuracy=e["accuracy"], stderr=e["stderr"], n=e["n"],
                 format_rate=e["format_rate"], lenient_accuracy=e["lenient_accuracy"], solved=e["correct_ids"],
                 sample=e["samples"][:1])
        await m.aclose()
    if not args.heldout_limit or not args.steps:  # a partial run: the measured figures only
        print(json.dumps({spec: {"gen_tokens_per_s": r["gen_tokens"] / r["gen_s"],
                                 "fixed_length_tokens_per_s": statistics.median(r["fixed_length_tokens_per_s"]),
                                 "step_s": r["step_s"]} for spec, r in report.items()}, indent=1))
        return report
    base = report[args.models[0]]
    print(f"\nthreads={args.threads}, load average {os.getloadavg()[0]:.1f} (shared machine: ratios, not absolute figures)")
    for spec, r in report.items():
        tok_s = r["gen_tokens"] / r["gen_s"]
        step = statistics.median(r["step_s"])
        fixed = statistics.median(r["fixed_length_tokens_per_s"])
        per_token = step / statistics.mean(r["trained_tokens"])
        r.update(gen_tokens_per_s=tok_s, step_median_s=step, fixed_length_median=fixed, step_s_per_token=per_token)
        ratio = "" if r is base else (f"  [x{tok_s / base['gen_tokens_per_s']:.2f} tokens/s, x{fixed / base['fixed_length_median']:.2f}"
                                      f" fixed-length tokens/s, x{step / base['step_median_s']:.2f} step time,"
                                      f" x{per_token / base['step_s_per_token']:.2f} step time per trained token]")
        print(f"{spec}: generation {tok_s:.1f} tokens/s ({r['gen_tokens']} tokens), {fixed:.1f} tokens/s at fixed length;"
              f" GRPO LoRA step {step:.1f}s median "
              f"({statistics.mean(r['trained_tokens']):.0f} completion tokens/step); held-out {args.task} "
              f"{r['accuracy']:.3f} ± {r['stderr']:.3f} (n={r['n']}, answer block {r['format_rate']:.2f}"
              + (f", lenient {r['lenient_accuracy']:.3f}" if r["lenient_accuracy"] is not None else "")
              + f", {r['eval_s']:.0f}s){ratio}", flush=True)
        print(f"  solved: {r['solved']}\n  first answer: {r['sample'][0][:300]!r}" if r["sample"] else "", flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2, default=str))
    return report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("AGENTPLAY_TORCH_THREADS", "1")))
    ap.add_argument("--gen-prompts", type=int, default=2, help="held-out prompts sampled per generation round")
    ap.add_argument("--gen-rows", type=int, default=8, help="samples per prompt (a solver group)")
    ap.add_argument("--gen-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=2, help="interleaved generation rounds per model")
    ap.add_argument("--steps", type=int, default=2, help="timed GRPO steps per model (after one warm-up; 0: none)")
    ap.add_argument("--heldout-limit", type=int, default=40, help="held-out problems evaluated (0: none)")
    ap.add_argument("--task", choices=["deduction"], default="deduction",
                    help="deduction answers are checked in-process (abduction would need a sandbox)")
    ap.add_argument("--eval-max-tokens", type=int, default=96)
    ap.add_argument("--output", help="write the figures as JSON here")
    args = ap.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
