"""Rollout/trainer mismatch of one propose-solve-judge iteration, scored the old way and the new.

Rolls out propose-solve-judge with the local engine (the judge samples at 0.7, the other roles
at 1.0), then scores the batch with a fresh trainer copy of the same weights through the
learner's own scoring hook -- the logprobs the loss computes before the step -- twice: every
row at `TrainConfig.temperature` (1.0: what the trainer did before sampling settings were
recorded) and every row at its recorded settings. On a fresh step both policies are the same
weights, so the second must be float noise; the first shows what the judge's ratios were.

    python bench/mismatch.py --episodes 4

Measured here (4 episodes, 80 rows, 5057 trained tokens; 2 shared cores):
    judge   before: mean |ratio-1| 0.38, max 17.1, 55% of tokens outside the clip range, KL 0.149
            after:  mean |ratio-1| 5e-6, max 4e-5, none outside, KL 0.0
    proposer and solver (sampled at 1.0): 1e-5 before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import AutoModelForCausalLM

from agentplay.models import DEFAULT_MODEL_SPEC, load_model
from agentplay.traces import TraceStore
from agentplay.trainers import GRPOLearner, SelfPlayTrainer, TrainConfig, compute_advantages, make_micro_batches
from agentplay.trainers._rollout_correction import MismatchStats
from agentplay.trainers._trl_grpo import RowScoring


async def rollouts(tmp: Path, episodes: int) -> tuple[list, object]:
    served = load_model(DEFAULT_MODEL_SPEC)
    cfg = TrainConfig(recipe="propose-solve-judge", iterations=1, episodes_per_iteration=episodes, concurrency=4,
                      store=tmp / "t.db", output_dir=tmp / "out", run_name="psj", lora=True, report_to=[])
    trainer = SelfPlayTrainer(cfg, served=served, store=TraceStore(tmp / "t.db"))
    compiled, _, _ = await trainer._setup(False)
    try:
        return await trainer.rollouts(compiled, 0), served
    finally:
        await served.aclose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("AGENTPLAY_TORCH_THREADS", "2")))
    with tempfile.TemporaryDirectory() as tmp:
        episodes, served = asyncio.run(rollouts(Path(tmp), args.episodes))
        samples, _ = compute_advantages(episodes, zero_variance="keep")
        cfg = TrainConfig(output_dir=Path(tmp) / "learner", report_to=[], micro_batch_size=8, temperature=1.0)
        learner = GRPOLearner(AutoModelForCausalLM.from_pretrained(served.model_dir, dtype=torch.float32),
                              served.tokenizer, cfg)
    t = learner.trainer
    print(f"{len(episodes)} episodes, {len(samples)} rows")
    stats = {f"before (every row at TrainConfig.temperature {cfg.temperature})": MismatchStats(cfg.epsilon, cfg.epsilon),
             "after (every row at its recorded sampling settings)": MismatchStats(cfg.epsilon, cfg.epsilon)}
    for mb in make_micro_batches(samples, micro_batch_size=8, max_completion_length=cfg.max_completion_length,
                                 pad_token_id=learner.pad_token_id, share_prompts=True,
                                 default_temperature=cfg.temperature):
        known = ~mb.missing_old_logps
        trained = (mb.inputs["completion_mask"] * mb.inputs["tool_mask"]).bool() & known[:, None]
        one = torch.full_like(mb.temperatures, cfg.temperature)
        for st, temps in zip(stats.values(), (one, mb.temperatures), strict=True):
            t.rows = RowScoring(temperatures=temps)
            with torch.no_grad():
                st.add(mb.roles, t.score(t.model, mb.inputs), mb.inputs["old_per_token_logps"], trained)
        t.rows = None
    for label, st in stats.items():
        print(label)
        for key, value in st.metrics().items():
            print(f"  {key:36s} {value:.6f}")


if __name__ == "__main__":
    main()
