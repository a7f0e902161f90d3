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

    python bench/mismatch.py --episodes 4 --decode-dtype bfloat16

bf16 rollouts (`ModelConfig.decode_dtype`, issue #21) against the fp32 trainer, same 4 episodes'
shape (4446 trained tokens; 1 thread, shared box): after scoring at the recorded settings, mean
|ratio-1| 0.017 (max 0.19), KL 0.00035, no token outside the clip range; |dlogprob| mean 0.017,
max 0.19. TIS at cap 2 truncates 0% of tokens and MIS at bound 1.1 rejects 0% of sequences: the
gap is per-token noise (ratios within 1 +- 0.19) that the correction weights carry into the loss.
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
from agentplay.trainers._rollout_correction import CorrectionConfig, MismatchStats, correction_weights
from agentplay.trainers._trl_grpo import RowScoring


async def rollouts(tmp: Path, episodes: int, decode_dtype: str) -> tuple[list, object]:
    served = load_model(DEFAULT_MODEL_SPEC, decode_dtype=decode_dtype)
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
    ap.add_argument("--decode-dtype", default="float32", choices=["float32", "bfloat16"],
                    help="what the rollout engine multiplies (ModelConfig.decode_dtype)")
    ap.add_argument("--tis-cap", type=float, default=2.0, help="TIS cap whose effect on the batch is printed")
    ap.add_argument("--mis-bound", type=float, default=1.1, help="MIS bound whose effect on the batch is printed")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("AGENTPLAY_TORCH_THREADS", "2")))
    with tempfile.TemporaryDirectory() as tmp:
        episodes, served = asyncio.run(rollouts(Path(tmp), args.episodes, args.decode_dtype))
        samples, _ = compute_advantages(episodes, zero_variance="keep")
        cfg = TrainConfig(output_dir=Path(tmp) / "learner", report_to=[], micro_batch_size=8, temperature=1.0)
        learner = GRPOLearner(AutoModelForCausalLM.from_pretrained(served.model_dir, dtype=torch.float32),
                              served.tokenizer, cfg)
    t = learner.trainer
    print(f"{len(episodes)} episodes, {len(samples)} rows, rollouts decoded in {args.decode_dtype}")
    correction = CorrectionConfig(tis_cap=args.tis_cap, mis_bound=args.mis_bound)
    touched: dict[str, float] = {}
    gaps: list[torch.Tensor] = []
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
                scored = t.score(t.model, mb.inputs)
                st.add(mb.roles, scored, mb.inputs["old_per_token_logps"], trained)
        # the last scoring is at the recorded settings: what the trainer's TIS/MIS would see
        gaps.append((scored - mb.inputs["old_per_token_logps"]).abs()[trained].double())
        for key, value in correction_weights(scored, mb.inputs["old_per_token_logps"], trained, correction)[1].items():
            touched[key] = touched.get(key, 0.0) + value
        t.rows = None
    for label, st in stats.items():
        print(label)
        for key, value in st.metrics().items():
            print(f"  {key:36s} {value:.6f}")
    gap = torch.cat(gaps)
    print(f"|trainer - rollout logprob| at the recorded settings: mean {gap.mean():.4f}, max {gap.max():.4f} "
          f"over {gap.numel()} tokens")
    print(f"TIS (cap {args.tis_cap}): {touched['tis_truncated_tokens'] / touched['tokens']:.2%} of tokens truncated; "
          f"MIS (bound {args.mis_bound}): {touched['mis_rejected_sequences'] / touched['sequences']:.2%} of "
          f"sequences rejected")


if __name__ == "__main__":
    main()
