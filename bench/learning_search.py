"""Does search self-play make SmolLM2 better at answering questions with search?

Held-out set: `bench/heldout_search.jsonl`, 240 questions over the shipped stdlib-docs
corpus, written here from fixed templates over its documents (not by the proposer): each
asks for the documented name (function, class or method) whose docstring's first
sentence the question quotes or paraphrases. `python bench/learning_search.py
--write-heldout` regenerates it byte for byte (on the interpreter whose docs the corpus
holds: the corpus is the running Python's own documentation).

Protocol: evaluate the served model on the set (greedy, the search-selfplay solver's own
turns, prompts, worked examples, search tool and parsers; normalised exact match like the recipe),
run search self-play + GRPO for at most `--budget-min` minutes (evaluation excluded),
evaluate again; print accuracy before/after with standard errors, the paired difference
in paired standard errors, the questions gained and lost, and how many held-out answers
were self-play targets. Writes `learning_search.json` into --output-dir. Paired
statistics are `bench/learning.py`'s (imported, not copied).

Measured at the recipe's defaults (retriever RAG check, cited answers, hybrid search;
`--budget-min 22`, 2 torch threads): 0.125 ± 0.021 -> 0.142 ± 0.023, +1.16 paired SE, 8 gained
and 4 lost, 9 iterations in 21.9 min; 3 of the 18 self-play targets were held-out answers, one
of them gained. Before the defaults changed (model RAG check, answers by name, BM25) the
"before" was 1/240. `--micro-batch` stays small: at 16 rows the learner's forward over
prompts that show search hits took 24 GB and the OOM killer ended the run.

Two 30-minute variants (same seed) did no better, so neither is the default: `--lr 2e-4 --beta 0`
gave 0.096 (-1.22 paired SE; 13 gained, 20 lost; 13 iterations, and the proposer's valid rate
fell from 15/40 in its first 5 iterations to 6/48 after); `--role-weights '{"proposer": 0}'`
(solver only) gave 0.113 (-0.60 paired SE; 11 gained, 14 lost; 27 iterations, but most of its
solver groups had no reward variance, so it trained on 0-24 rows an iteration). Both runs
lost the same 12 questions and both learned the answer line (96% -> 99.6%). What limits it is
solver data: 2-3 valid proposals an iteration, and on them the target was among the
solver's hits in about a third of attempts and at [1] in under a fifth, where the model
almost never cites [1] (greedy on the held-out set: never; citing [1] would score 0.358).

    python bench/learning_search.py --budget-min 30
    python bench/learning_search.py --eval-only --heldout-limit 60     # just the before figure
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from learning import _mean_se, in_se, paired_z  # noqa: E402  the code self-play bench's statistics

HELDOUT = HERE / "heldout_search.jsonl"
N_QUESTIONS = 240

# {kind}: function / class / method; {owner}: module or class; {summary}: the docstring's first sentence
TEMPLATES = [
    "Which {kind} of {owner} is documented as follows: {summary}",
    "Name the {kind} of {owner} that does this: {summary}",
    "What is the {kind} of {owner} whose documentation says: \"{summary}\"?",
]
_SENTENCE_END = re.compile(r"(?<=[a-z0-9)\]`'\"])\.(\s|$)")


def summary_sentence(doc_id: str, text: str) -> str | None:
    """The first sentence of the docstring after its signature line, or None."""
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]
    if len(paragraphs) < 2 or not paragraphs[0].startswith(doc_id.split(".")[-1]) and doc_id not in paragraphs[0]:
        return None
    first = paragraphs[1]
    end = _SENTENCE_END.search(first)
    sentence = (first[: end.start()] if end else first).strip()
    sentence = sentence.rstrip(".") + "."
    return sentence if 20 <= len(sentence) <= 160 else None


def _candidate(doc: Any, summaries: dict[str, int]) -> dict[str, Any] | None:
    from agentplay.rewards import normalize_answer

    if ":" in doc.id or doc.id.count(".") not in (1, 2) or any(p.startswith("_") for p in doc.id.split(".")):
        return None
    summary = summary_sentence(doc.id, doc.text)
    if summary is None or summaries.get(summary, 0) > 1:
        return None  # a summary two documents share has two right answers
    owner = doc.id.rsplit(".", 1)[0]
    if doc.title.endswith("(function)"):
        kind, owner_text = "function", f"the {owner} module"
    elif doc.title.endswith("(class)"):
        kind, owner_text = "class", f"the {owner} module"
    elif doc.id.count(".") == 2:
        kind, owner_text = "method", f"the {owner} class"
    else:
        return None
    name = normalize_answer(doc.id.split(".")[-1])
    if f" {name} " in f" {normalize_answer(summary)} ":
        return None  # the question would name its answer (ast.Dict: "Dict(expr* keys, ...)")
    return {"answer": doc.id, "kind": kind, "owner": owner_text, "summary": summary}


def write_heldout(path: Path = HELDOUT, seed: int = 20261207, n: int = N_QUESTIONS) -> list[dict[str, Any]]:
    """`n` template questions over the default corpus, drawn reproducibly, sorted by answer."""
    from agentplay.tools import default_corpus_index

    index = default_corpus_index()
    docs = sorted((index.get(doc_id) for doc_id in index.ids), key=lambda d: d.id)
    summaries: dict[str, int] = {}
    for doc in docs:
        s = summary_sentence(doc.id, doc.text)
        if s is not None:
            summaries[s] = summaries.get(s, 0) + 1
    candidates = [c for c in (_candidate(d, summaries) for d in docs) if c is not None]
    rng = random.Random(seed)
    chosen = sorted(rng.sample(candidates, n), key=lambda c: c["answer"])
    rows = []
    for i, c in enumerate(chosen):
        template = TEMPLATES[rng.randrange(len(TEMPLATES))]
        rows.append({"id": f"s{i:03d}", "question": template.format(**c), "answer": c["answer"], "kind": c["kind"]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def load_heldout(path: Path = HELDOUT) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


async def evaluate(model: Any, problems: list[dict[str, Any]], options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Greedy accuracy of the recipe's own solver (`search_selfplay.solver`: the same turns,
    prompts, worked examples, search tool and parsers as training, under the same
    `search_protocol`; graded by normalised exact match) on `problems`."""
    from agentplay.graphs.search_selfplay import SearchSelfPlayConfig, solver

    from agentplay.rewards import exact_match

    cfg = SearchSelfPlayConfig(**(options or {}))
    solving = solver(model, cfg)
    greedy = {"temperature": 0.0, "logprobs": False}
    shown: list[str] = []

    async def one(p: dict[str, Any]) -> tuple[float, float, float]:
        turns = await solving.attempt(p["question"], sampling=greedy)
        answer = turns[-1]
        if len(shown) < 3:
            shown.append(f"{p['question']} -> {answer.output!r}")
        searched = float(len(turns) > 1 and turns[0].output is not None
                         or any(c.name == "search" and c.error is None for c in answer.tool_calls))
        return exact_match(answer.output, p["answer"]), float(answer.output is not None), searched

    marks = await asyncio.gather(*(one(p) for p in problems))
    correct = [m[0] for m in marks]
    acc, se = _mean_se(correct)
    return {"accuracy": acc, "stderr": se, "n": len(marks), "correct": correct,
            "format_rate": sum(m[1] for m in marks) / len(marks), "search_rate": sum(m[2] for m in marks) / len(marks),
            "correct_ids": [p["id"] for p, c in zip(problems, correct) if c], "samples": shown}


def _line(e: dict[str, Any]) -> str:
    return (f"accuracy {e['accuracy']:.3f} ± {e['stderr']:.3f} (n={e['n']}; answer line {e['format_rate']:.2f},"
            f" searched {e['search_rate']:.2f})")


def trained_on_heldout(store_path: Path, problems: list[dict[str, Any]]) -> dict[str, int]:
    """How many held-out answers were self-play targets (the proposer asked about them)."""
    import sqlite3

    answers = {p["answer"] for p in problems}
    targets: set[str] = set()
    with sqlite3.connect(store_path) as db:
        for (messages,) in db.execute("SELECT messages FROM turns WHERE role = 'proposer'"):
            user = [m for m in json.loads(messages) if m["role"] == "user"][-1]["content"]
            found = re.search(r"Target answer: (\S+)", user)
            if found:
                targets.add(found.group(1))
    return {"selfplay_targets": len(targets), "heldout_answers_among_targets": len(targets & answers)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from agentplay.trainers import SelfPlayTrainer, TrainConfig

    from agentplay.models import ModelConfig, load_model

    problems = load_heldout()
    if args.heldout_limit:
        problems = problems[:: max(1, len(problems) // args.heldout_limit)][: args.heldout_limit]
    options = json.loads(args.recipe_options)
    served = load_model(ModelConfig(backend="local", name="smollm2-135m-instruct", max_batch_size=64))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    before = await evaluate(served, problems, options)
    print(f"before: {_line(before)} ({time.perf_counter() - t0:.0f}s)", flush=True)
    print("  e.g. " + "\n  e.g. ".join(before["samples"]), flush=True)
    if args.eval_only:
        await served.aclose()
        return {"before": before}
    cfg = TrainConfig(recipe="search-selfplay", iterations=args.max_iterations,
                      episodes_per_iteration=args.episodes, concurrency=args.episodes, store=out / "traces.db",
                      output_dir=out, run_name="learning-search", lora=True, learning_rate=args.lr,
                      loss_type="dapo", beta=args.beta, micro_batch_size=args.micro_batch, role_weights=args.role_weights,
                      max_completion_length=256,
                      time_budget_s=args.budget_min * 60, recipe_options=options, seed=args.seed,
                      temperature=options.get("temperature", 0.7))
    trainer = SelfPlayTrainer(cfg, served=served)
    history: list[dict[str, float]] = []

    async def on_iteration(it: int, m: dict[str, float]) -> None:
        history.append({"iteration": it, **m})
        print(f"it {it}: solver={m.get('reward/solver', float('nan')):.3f} proposer={m.get('reward/proposer', float('nan')):.3f}"
              f" valid={m.get('episode/valid_proposal', float('nan')):.2f} solve={m.get('episode/solve_rate', float('nan')):.2f}"
              f" dropped={m['dropped_group_fraction']:.2f} samples={int(m['samples'])}"
              f" rollout={m['time/rollout_s']:.0f}s train={m['time/train_s']:.0f}s", flush=True)

    trainer.on_iteration = on_iteration
    t1 = time.perf_counter()
    summary = await trainer.run()
    train_s = time.perf_counter() - t1
    after = await evaluate(served, problems, options)
    diff, diff_se = paired_z(before["correct"], after["correct"])
    gained = sorted(set(after["correct_ids"]) - set(before["correct_ids"]))
    lost = sorted(set(before["correct_ids"]) - set(after["correct_ids"]))
    result = {
        "before": before, "after": after, "improvement": diff, "paired_stderr": diff_se,
        "improvement_in_paired_se": in_se(diff, diff_se), "gained": gained, "lost": lost,
        "contamination": trained_on_heldout(out / "traces.db", problems),
        "iterations": summary.last_iteration + 1, "train_wall_s": train_s, "history": history,
        "config": cfg.model_dump(mode="json"), "load_avg_at_end": os.getloadavg(),
    }
    print(f"after:  {_line(after)}")
    print(f"improvement {diff:+.3f} = {result['improvement_in_paired_se']:.2f} paired SE; gained {len(gained)} "
          f"{gained}, lost {len(lost)} {lost}; {result['iterations']} iterations in {train_s / 60:.1f} min")
    print(f"held-out answers among self-play targets: {result['contamination']}")
    (out / "learning_search.json").write_text(json.dumps(result, indent=2, default=str))
    await served.aclose()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write-heldout", action="store_true", help="regenerate bench/heldout_search.jsonl and exit")
    ap.add_argument("--eval-only", action="store_true", help="evaluate the untrained model and exit")
    ap.add_argument("--budget-min", type=float, default=30.0, help="self-play + training wall-clock budget")
    ap.add_argument("--max-iterations", type=int, default=1000)
    ap.add_argument("--episodes", type=int, default=8, help="episodes per iteration")
    ap.add_argument("--heldout-limit", type=int, default=0, help="evaluate on an even subsample (0: all)")
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--micro-batch", type=int, default=4,
                    help="rows per learner forward: at 16 the search prompts (hits shown) took 24 GB and the OOM killer")
    ap.add_argument("--beta", type=float, default=0.04)
    ap.add_argument("--role-weights", type=json.loads, default={},
                    help='JSON role -> advantage weight, e.g. \'{"proposer": 0}\' trains the solver only')
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recipe-options", default="{}", help="JSON options of the search-selfplay recipe")
    ap.add_argument("--output-dir", default="runs/learning_search")
    args = ap.parse_args()
    if args.write_heldout:
        rows = write_heldout()
        print(f"wrote {len(rows)} questions to {HELDOUT}")
        return
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
