"""GRPO step time: prompts encoded once per group (`share_prompts`) vs row by row.

The batch is what code self-play trains on: groups of solver completions of one
abduction prompt (the recipe's own solver prompt with its worked examples, ~250 tokens,
on held-out problems) with answers of 8-60 tokens, LoRA, DAPO, KL against the adapter
disabled (beta 0.04), as in `bench/learning.py`. Both learners start from the same
weights in one process; the baseline is TRL's row-by-row scoring at 4 and at 16 rows
per forward. Also prints the tokens each forward carries. Target: >= 2x.

    python bench/train_step.py --groups 2 --group-size 16

Data parallel: `--processes 2` also times the shared-prompt step with 2 trainer processes over
gloo (torchrun, each process training on half the micro-batches, gradients averaged) and prints
trained tokens/s of 1 and 2 processes.

TRL pinned vs another version: `--other-trl DIR` (a folder made with
`pip install --no-deps --target DIR trl==1.16.0`) times the shared-prompt step again in a
subprocess importing TRL from DIR, and prints the ratio to this process's TRL. The trainer
scores tokens with its own hook (trainers/_trl_grpo.py), so TRL's own scoring path (1.15+
routes it through a chunked LM head, slow on CPU) is not on the step's path.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from agentplay.graphs.code_selfplay import solver_role
from agentplay.trainers import GRPOLearner, TrainConfig, TrainSample, make_micro_batches
from agentplay.trainers._shared_prompt import shared_prompt_length

from agentplay.models import default_model_dir
from agentplay.traces import RewardRecord, RoleTurn

HELDOUT = Path(__file__).parent / "heldout_code.jsonl"
FILLER = ["because", "f", "returns", "its", "input", "unchanged", "so", "the", "output", "is", "the", "same", "value", "as", "the", "input"]


def group_samples(tok, groups: int, group_size: int, seed: int = 0) -> list[TrainSample]:
    rng = random.Random(seed)
    solver = solver_role("abduction")
    problems = [json.loads(line) for line in HELDOUT.read_text().splitlines()][:: 80 // groups][:groups]
    samples = []
    for g, p in enumerate(problems):
        messages = solver.build_messages(None, {"program": p["program"], "inputs": [p["input"]],
                                                "outputs": [p["output"]]})
        prompt = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
        rewards = [rng.choice([0.0, 1.0]) for _ in range(group_size)]
        mean = statistics.fmean(rewards)
        std = statistics.pstdev(rewards) or 1.0
        for r in rewards:
            words = " ".join(rng.choices(FILLER, k=rng.randint(0, 40)))
            text = f"```input\n{rng.randint(0, 999)!r}\n```\n{words}"
            ids = tok.encode(text, add_special_tokens=False)[:60]
            turn = RoleTurn(role="solver", group_id=f"g{g}", prompt_token_ids=prompt, token_ids=ids,
                            mask=[1] * len(ids), logprobs=None, reward=RewardRecord(value=r))
            samples.append(TrainSample(turn=turn, episode_id=f"e{g}", advantage=(r - mean) / std, reward=r))
    return samples


def forwarded_tokens(samples: list[TrainSample], micro_batch_size: int, share: bool) -> int:
    """Tokens the model reads per pass over the batch (padding included, packed rows once)."""
    total = 0
    for mb in make_micro_batches(samples, micro_batch_size=micro_batch_size, max_completion_length=64,
                                 pad_token_id=0, share_prompts=share):
        x = mb.inputs
        ids = torch.cat([x["prompt_ids"], x["completion_ids"]], 1)
        mask = torch.cat([x["prompt_mask"], x["completion_mask"]], 1)
        prompt = shared_prompt_length(ids, mask, x["completion_ids"].size(1)) if share else None
        if prompt is not None:  # the learner's own test for taking the packed path
            total += prompt + int(x["completion_mask"].sum())
        else:
            total += x["prompt_ids"].numel() + x["completion_ids"].numel()
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=2)
    ap.add_argument("--group-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=1, help="timed steps per learner (median)")
    ap.add_argument("--other-trl", type=Path, default=None,
                    help="folder holding another TRL version: time the shared-prompt step with it too")
    ap.add_argument("--only-shared", action="store_true", help=argparse.SUPPRESS)  # the --other-trl child
    ap.add_argument("--processes", type=int, default=1,
                    help="also time the shared-prompt step with this many data-parallel processes")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("AGENTPLAY_TORCH_THREADS", "2")))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = default_model_dir()
    tok = AutoTokenizer.from_pretrained(folder)
    samples = group_samples(tok, args.groups, args.group_size)
    n_prompt = len(samples[0].turn.prompt_token_ids)
    n_completion = statistics.fmean(len(s.turn.token_ids) for s in samples)
    print(f"{len(samples)} rows in {args.groups} groups; prompt {n_prompt} tokens, completions {n_completion:.1f} on average")
    setups = [("row by row, 4 rows per forward", 4, False), ("row by row, 16 rows per forward", 16, False),
              ("shared prompt, 16 rows per forward", 16, True)]
    if args.only_shared:
        setups = setups[-1:]
    import trl

    print(f"TRL {trl.__version__} from {Path(trl.__file__).parent}")
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, mbs, share in setups:
            cfg = TrainConfig(output_dir=Path(tmp) / label.replace(" ", "_"), lora=True, loss_type="dapo", beta=0.04,
                              learning_rate=1e-9, micro_batch_size=mbs, max_completion_length=64, report_to=[],
                              share_prompts=share)
            learner = GRPOLearner(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), tok, cfg)
            learner.step(samples[:2])  # warm-up: allocator, kernels
            runs = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                learner.step(samples)
                runs.append(time.perf_counter() - t0)
            times[label] = statistics.median(runs)
            learner.close()
            print(f"{label:36s} {times[label]:7.1f} s/step  {forwarded_tokens(samples, mbs, share):7d} tokens per pass",
                  flush=True)
    packed = times[setups[-1][0]]
    if args.only_shared:
        from agentplay.trainers._distributed import data_parallel

        if data_parallel().is_main:
            print(json.dumps({"trl": trl.__version__, "step_s": packed}))
        return
    for label, *_ in setups[:-1]:
        print(f"speed-up of shared prompts over {label}: {times[label] / packed:.2f}x")
    if args.processes > 1:
        tokens = sum(sum(s.turn.mask or []) for s in samples)
        dp = _time_child(args, {}, ["-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node",
                                    str(args.processes), "--master-addr", "127.0.0.1", "--master-port", "29533"])
        print(f"trained tokens/s: 1 process {tokens / packed:.1f}, {args.processes} processes "
              f"{tokens / dp['step_s']:.1f} ({packed / dp['step_s']:.2f}x)")
    if args.other_trl is not None:
        other = _time_with_other_trl(args)
        print(f"TRL {other['trl']}: {other['step_s']:.1f} s/step with shared prompts, "
              f"{other['step_s'] / packed:.2f}x the time of TRL {trl.__version__}")


def _time_with_other_trl(args: argparse.Namespace) -> dict[str, Any]:
    """The shared-prompt step timed in a child process that imports TRL from `args.other_trl`."""
    return _time_child(args, {"PYTHONPATH": os.pathsep.join([str(args.other_trl), os.environ.get("PYTHONPATH", "")])},
                       [])


def _time_child(args: argparse.Namespace, env: dict[str, str], launcher: list[str]) -> dict[str, Any]:
    """The shared-prompt step timed in child process(es): another TRL, or several processes."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, *launcher, __file__, "--groups", str(args.groups), "--group-size",
                          str(args.group_size), "--repeats", str(args.repeats), "--only-shared"],
                         env={**os.environ, **env}, capture_output=True, text=True, check=True)
    lines = out.stdout.strip().splitlines()
    print("\n".join(line for line in lines if not line.startswith("{")))
    return json.loads([line for line in lines if line.startswith("{")][-1])


if __name__ == "__main__":
    main()
