"""Does code self-play make SmolLM2 better at something it was not trained on?

Held-out set: `bench/heldout_code.jsonl`, small "what does f(x) return" problems
written here from fixed templates (not by the proposer), expected outputs computed
by running them (`python bench/learning.py --write-heldout` regenerates it
byte-for-byte). Protocol: evaluate the served model on the set (greedy, the
code-selfplay solver prompt), run code self-play + GRPO for at most `--budget-min`
minutes of self-play and training (evaluation excluded), evaluating every
`--eval-every` iterations, evaluate again; print accuracy before/after with standard
errors, the paired difference in standard errors, and the curve. Also writes
`learning.json` into --output-dir.

Accuracy is the recipe's own: the value in the ```output block the solver is asked
for. "Lenient" accuracy takes any literal answer in the text, to tell knowing the
value apart from writing it where asked.

Defaults (deduction tasks, 4 proposals and 8 solver samples per episode, temperature
0.7, LoRA lr 2e-4, AZR format rewards, a buffer seeded with simple programs unlike the
held-out families) are the ones that gave a small model the most reward variance here.

    python bench/learning.py --budget-min 30
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import json
import math
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
HELDOUT = HERE / "heldout_code.jsonl"

# (program template, input generator); {a}/{b}/{c} are filled from the rng
FAMILIES: list[tuple[str, Any]] = [
    ("def f(x):\n    return x + {a}", lambda r: str(r.randint(-20, 40))),
    ("def f(x):\n    return x * {a}", lambda r: str(r.randint(-9, 12))),
    ("def f(x):\n    return x - {a}", lambda r: str(r.randint(0, 50))),
    ("def f(x):\n    return x // {a}", lambda r: str(r.randint(10, 99))),
    ("def f(x):\n    return x % {a}", lambda r: str(r.randint(10, 99))),
    ("def f(x):\n    if x > {a}:\n        return x\n    return -x", lambda r: str(r.randint(-10, 20))),
    ("def f(xs):\n    return len(xs)", lambda r: str([r.randint(0, 9) for _ in range(r.randint(1, 6))])),
    ("def f(xs):\n    return sum(xs)", lambda r: str([r.randint(0, 9) for _ in range(r.randint(2, 5))])),
    ("def f(xs):\n    return max(xs)", lambda r: str([r.randint(-9, 20) for _ in range(r.randint(2, 5))])),
    ("def f(xs):\n    return min(xs)", lambda r: str([r.randint(-9, 20) for _ in range(r.randint(2, 5))])),
    ("def f(xs):\n    return sorted(xs)", lambda r: str([r.randint(0, 9) for _ in range(r.randint(2, 5))])),
    ("def f(xs):\n    return xs[:{k}]", lambda r: str([r.randint(0, 9) for _ in range(r.randint(3, 6))])),
    ("def f(xs):\n    return [v * 2 for v in xs]", lambda r: str([r.randint(0, 9) for _ in range(r.randint(2, 4))])),
    ("def f(s):\n    return s[::-1]", lambda r: repr("".join(r.choice("abcdefgh") for _ in range(r.randint(2, 5))))),
    ("def f(s):\n    return s.upper()", lambda r: repr("".join(r.choice("abcxyz") for _ in range(r.randint(2, 5))))),
    ("def f(s):\n    return len(s)", lambda r: repr("".join(r.choice("abcdef ") for _ in range(r.randint(1, 8))))),
    ("def f(s):\n    return s + '{t}'", lambda r: repr("".join(r.choice("pqrs") for _ in range(r.randint(1, 4))))),
    ("def f(s):\n    return s.count('{c}')", lambda r: repr("".join(r.choice("aab") for _ in range(r.randint(3, 7))))),
    ("def f(a, b):\n    return (b, a)", lambda r: f"{r.randint(0, 9)}, {r.randint(10, 30)}"),
    ("def f(a, b):\n    return a * b + {a}", lambda r: f"{r.randint(1, 6)}, {r.randint(1, 6)}"),
]
PER_FAMILY = 4  # 80 problems


TRAIN_SEEDS: list[dict[str, Any]] = [
    {"program": "def f(x):\n    return x * x", "inputs": ["3", "-4", "7"]},
    {"program": "def f(x):\n    return abs(x)", "inputs": ["-6", "2", "-11"]},
    {"program": "def f(x):\n    return -x", "inputs": ["5", "-8", "0"]},
    {"program": "def f(xs):\n    return xs[-1]", "inputs": ["[4, 8, 1]", "[9]", "[2, 7]"]},
    {"program": "def f(xs):\n    return xs[0]", "inputs": ["[6, 2, 5]", "[3, 3]", "[10]"]},
    {"program": "def f(s):\n    return s * 2", "inputs": ["'ab'", "'x'", "'hey'"]},
    {"program": "def f(s):\n    return s.lower()", "inputs": ["'ABC'", "'Hi'", "'QwE'"]},
    {"program": "def f(xs):\n    return xs[::-1]", "inputs": ["[1, 2, 3]", "[5, 0]", "[7, 8, 9, 1]"]},
    {"program": "def f(x):\n    return x * x + 1", "inputs": ["2", "5", "-3"]},
    {"program": "def f(s):\n    return s[0]", "inputs": ["'dog'", "'apple'", "'z'"]},
    {"program": "def f(xs):\n    return xs + [0]", "inputs": ["[1, 2]", "[]", "[9]"]},
    {"program": "def f(x):\n    return str(x)", "inputs": ["12", "-3", "0"]},
]
"""Easy training-buffer programs for `--easy-buffer`: other operations than the held-out
families (square, abs, negation, indexing, repetition...), so the held-out problems
stay unseen while the solver gets tasks it sometimes solves (reward variance)."""


def write_heldout(path: Path = HELDOUT, seed: int = 20261122) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    rows = []
    for fam, (template, make_input) in enumerate(FAMILIES):
        seen: set[tuple[str, str]] = set()
        while len([1 for p, _ in seen]) < PER_FAMILY:
            program = template.format(a=rng.randint(2, 9), k=rng.randint(1, 3), t=rng.choice(["!", "ab", "z"]),
                                      c=rng.choice("ab"))
            inp = make_input(rng)
            if (program, inp) in seen:
                continue
            seen.add((program, inp))
            scope: dict[str, Any] = {}
            exec(program, scope)  # noqa: S102 - our own fixed templates, not model output
            value = eval(f"f({inp})", scope)
            rows.append({"id": f"h{fam:02d}-{len(seen) - 1}", "program": program, "input": inp,
                         "output": repr(value)})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


_LITERAL_HINT = re.compile(r"(?:returns?|is|==|:)\s*`?([^`\n]+?)`?\s*(?:[.,;]\s|[.]?$)", re.MULTILINE)


def lenient_deduction_parser(text: str) -> str:
    """The answer to "what does f return" however the model wrote it: an ```output block,
    else the last fenced/inline-code span or "returns X"/"is X" phrase that is a Python literal.

    Only for the secondary "lenient" accuracy: it separates "knows the value" from "writes
    the ```output block the recipe asks for" (the primary, strict accuracy needs both).
    """
    from agentplay.graphs._code_exec import fenced_blocks

    blocks = fenced_blocks(text)
    tagged = [b for tag, b in blocks if tag == "output" and b]
    if tagged:
        return tagged[-1]
    spans = ([b for _, b in blocks] + re.findall(r"`([^`\n]+)`", text) + _LITERAL_HINT.findall(text)
             + re.findall(r"(?:returns?|is)\s+(\S[^\n]*?)\.?\s*$", text, re.MULTILINE))
    for cand in reversed(spans):
        cand = cand.strip().rstrip(".")
        try:
            ast.literal_eval(cand)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        return cand
    raise ValueError("no ```output block and no literal answer in the text")


def load_heldout(path: Path = HELDOUT) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _same(predicted: str, expected: str) -> bool:
    """Literal equality with exact types (True is not 1, (1,) is not [1])."""
    try:
        a, b = ast.literal_eval(predicted.strip()), ast.literal_eval(expected)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return type(a) is type(b) and a == b and repr(a) == repr(b)


async def evaluate(model: Any, problems: list[dict[str, Any]], max_tokens: int = 96) -> dict[str, Any]:
    """Greedy accuracy with the code-selfplay solver prompt. `accuracy` uses the recipe's own
    parser (the ```output block it asks for and rewards); `lenient_accuracy` takes any literal
    answer, so the two together say whether a change is in knowing or in writing the answer.
    Answers are literals compared in-process: no sandbox needed."""
    import jinja2
    from agentplay.graphs.code_selfplay import SOLVER_SYSTEM, SOLVER_USER, _answer_parser

    from agentplay.models import SamplingParams

    template = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(SOLVER_USER["deduction"])
    strict = _answer_parser("deduction")
    greedy = SamplingParams(max_tokens=max_tokens, temperature=0.0, logprobs=False)
    samples: list[str] = []

    def mark(parse: Any, text: str, expected: str) -> tuple[int, int]:
        try:
            answer = parse(text)
        except ValueError:
            return 0, 0
        return int(_same(answer, expected)), 1

    async def one(p: dict[str, Any]) -> tuple[tuple[int, int], tuple[int, int]]:
        user = template.render(program=p["program"], inputs=[p["input"]])
        res = await model.chat([{"role": "system", "content": SOLVER_SYSTEM}, {"role": "user", "content": user}],
                               sampling=greedy)
        if len(samples) < 3:
            samples.append(res.choice.text)
        return mark(strict, res.choice.text, p["output"]), mark(lenient_deduction_parser, res.choice.text, p["output"])

    marks = await asyncio.gather(*(one(p) for p in problems))
    n = len(marks)
    correct = [m[0][0] for m in marks]
    lenient = [m[1][0] for m in marks]
    acc, lacc = sum(correct) / n, sum(lenient) / n
    return {"accuracy": acc, "stderr": math.sqrt(acc * (1 - acc) / n), "n": n,
            "format_rate": sum(m[0][1] for m in marks) / n,
            "lenient_accuracy": lacc, "lenient_stderr": math.sqrt(lacc * (1 - lacc) / n),
            "correct": correct, "lenient_correct": lenient, "samples": samples}


def _line(e: dict[str, Any]) -> str:
    return (f"accuracy {e['accuracy']:.3f} ± {e['stderr']:.3f} (```output block written {e['format_rate']:.2f});"
            f" lenient {e['lenient_accuracy']:.3f} ± {e['lenient_stderr']:.3f}")


def _point(iteration: int, e: dict[str, Any]) -> dict[str, Any]:
    return {"iteration": iteration, **{k: e[k] for k in ("accuracy", "stderr", "format_rate", "lenient_accuracy")}}


def paired_z(before: list[int], after: list[int]) -> tuple[float, float]:
    """Mean paired difference and its standard error (same problems before and after)."""
    d = [a - b for a, b in zip(after, before)]
    n = len(d)
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var / n)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from agentplay.trainers import SelfPlayTrainer, TrainConfig

    from agentplay.models import load_model

    problems = load_heldout()[:: max(1, 80 // args.heldout_limit)][: args.heldout_limit]
    served = load_model("local:smollm2-135m-instruct")
    out = Path(args.output_dir)
    t0 = time.perf_counter()
    before = await evaluate(served, problems, max_tokens=args.eval_max_tokens)
    eval_s = time.perf_counter() - t0
    print(f"before: {_line(before)} (n={before['n']}, {eval_s:.0f}s)", flush=True)
    curve = [_point(-1, before)]
    options = json.loads(args.recipe_options)
    cfg = TrainConfig(recipe="code-selfplay", iterations=args.max_iterations,
                      episodes_per_iteration=args.episodes, concurrency=args.episodes, store=out / "traces.db",
                      output_dir=out, run_name="learning", lora=args.lora, learning_rate=args.lr,
                      loss_type=args.loss_type, micro_batch_size=4, max_completion_length=256,
                      time_budget_s=args.budget_min * 60, recipe_options=options, seed=args.seed,
                      temperature=options.get("temperature", 1.0))
    recipe = None
    if args.easy_buffer:
        from agentplay.graphs.code_selfplay import TaskBuffer, build

        recipe = build(model="local:smollm2-135m-instruct", buffer=TaskBuffer(seeds=TRAIN_SEEDS), **options)
    trainer = SelfPlayTrainer(cfg, served=served, recipe=recipe)
    history: list[dict[str, float]] = []

    async def on_iteration(it: int, m: dict[str, float]) -> None:
        history.append({"iteration": it, **m})
        print(f"it {it}: solver={m.get('reward/solver', float('nan')):.3f} proposer={m.get('reward/proposer', float('nan')):.3f}"
              f" solve={m.get('solve_rate', float('nan')):.2f} format={m.get('episode/solver_format', float('nan')):.2f}"
              f" valid={m.get('valid_proposal', float('nan')):.2f} dropped={m['dropped_group_fraction']:.2f}"
              f" samples={int(m['samples'])} entropy={m.get('entropy', float('nan')):.3f}"
              f" rollout={m['time/rollout_s']:.0f}s train={m['time/train_s']:.0f}s update={m['time/update_s']:.1f}s",
              flush=True)
        if args.eval_every and (it + 1) % args.eval_every == 0:
            e = await evaluate(served, problems, max_tokens=args.eval_max_tokens)
            curve.append(_point(it, e))
            print(f"  held-out after it {it}: {_line(e)}", flush=True)

    trainer.on_iteration = on_iteration
    t1 = time.perf_counter()
    summary = await trainer.run()
    train_s = time.perf_counter() - t1
    after = await evaluate(served, problems, max_tokens=args.eval_max_tokens)
    if not curve or curve[-1]["iteration"] != summary.last_iteration:
        curve.append(_point(summary.last_iteration, after))
    diff, diff_se = paired_z(before["correct"], after["correct"])
    ldiff, ldiff_se = paired_z(before["lenient_correct"], after["lenient_correct"])
    se_unpaired = math.sqrt(before["stderr"] ** 2 + after["stderr"] ** 2)
    result = {
        "before": before,
        "after": after,
        "improvement": diff, "paired_stderr": diff_se,
        "improvement_in_paired_se": diff / diff_se if diff_se > 0 else float("nan"),
        "improvement_in_unpaired_se": diff / se_unpaired if se_unpaired > 0 else float("nan"),
        "lenient_improvement": ldiff, "lenient_paired_stderr": ldiff_se,
        "iterations": summary.last_iteration + 1, "train_wall_s": train_s, "curve": curve,
        "history": history, "config": cfg.model_dump(mode="json"), "load_avg_at_end": os.getloadavg(),
    }
    print(f"after:  {_line(after)}")
    print(f"improvement {diff:+.3f} = {result['improvement_in_paired_se']:.2f} paired SE "
          f"({result['improvement_in_unpaired_se']:.2f} unpaired SE); {result['iterations']} iterations in {train_s / 60:.1f} min")
    print(f"lenient accuracy (any literal answer): {ldiff:+.3f} ± {ldiff_se:.3f} paired")
    print("curve (iteration:accuracy/lenient): "
          + ", ".join(f"{c['iteration']}:{c['accuracy']:.3f}/{c['lenient_accuracy']:.3f}" for c in curve))
    (out / "learning.json").write_text(json.dumps(result, indent=2, default=str))
    await served.aclose()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write-heldout", action="store_true", help="regenerate bench/heldout_code.jsonl and exit")
    ap.add_argument("--budget-min", type=float, default=30.0, help="self-play + training wall-clock budget")
    ap.add_argument("--max-iterations", type=int, default=1000)
    ap.add_argument("--episodes", type=int, default=4, help="episodes per iteration")
    ap.add_argument("--eval-every", type=int, default=3, help="held-out evaluation every N iterations (0: off)")
    ap.add_argument("--heldout-limit", type=int, default=80, help="evaluate on an evenly spaced subset")
    ap.add_argument("--eval-max-tokens", type=int, default=96)
    ap.add_argument("--easy-buffer", action=argparse.BooleanOptionalAction, default=True,
                    help="seed the task buffer with TRAIN_SEEDS (else the recipe's SEED_PROGRAMS)")
    ap.add_argument("--lora", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--loss-type", default="dapo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recipe-options", default=json.dumps({
        "task_types": ["deduction"], "n_proposals": 4, "n_solvers": 8, "proposer_tools": False,
        "proposer_max_tokens": 128, "solver_max_tokens": 80, "temperature": 0.7}))
    ap.add_argument("--output-dir", default="runs/learning")
    args = ap.parse_args()
    if args.write_heldout:
        rows = write_heldout()
        print(f"wrote {len(rows)} problems to {HELDOUT}")
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(int(os.environ.get("AGENTPLAY_TORCH_THREADS", "2")))
    out = Path(args.output_dir)
    if out.exists() and any(out.iterdir()):
        sys.exit(f"--output-dir {out} is not empty; choose a fresh one")
    out.mkdir(parents=True, exist_ok=True)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
