"""How far the policy that sampled a batch is from the trainer's, and the correction for it.

The GRPO ratio pi_theta / pi_old uses the engine's recorded logprobs as pi_old. On a
fresh step (same weights in engine and trainer) the ratio must be 1 up to float
noise; anything else is a mismatch: tokens scored at another temperature than they
were sampled at, a quantized or different engine, stale weights. `MismatchStats`
measures it per role from the logprobs the loss computes anyway (no extra forward):
mean and max |ratio - 1|, the fraction of tokens outside the clip range, and
KL(rollout || trainer) estimated on the rollout's own tokens with Schulman's k3
estimator (r - 1 - log r, r = pi_trainer / pi_rollout: unbiased and never negative).

When the rollout policy genuinely differs, `correction_weights` gives the loss
per-token weights (verl and others call these TIS and MIS):
- TIS, truncated importance sampling: each token's loss is weighted by
  min(pi_trainer / pi_rollout, tis_cap);
- MIS, masked importance sampling: a sequence whose ratio (the geometric mean over
  its trained tokens, so length does not decide) is outside [1/mis_bound, mis_bound]
  is rejected: its tokens get weight 0.
With either on, the PPO ratio is taken against the trainer's own logprobs (TRL's
"old = current, detached" path) and the weights carry the rollout/trainer gap.
Written here because TRL computes these only inside its vLLM generation path.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import torch

__all__ = ["CorrectionConfig", "MismatchStats", "correction_weights"]


@dataclass(frozen=True)
class CorrectionConfig:
    tis_cap: float | None = None
    """Token weights are min(ratio, tis_cap); None: no truncated importance sampling."""
    mis_bound: float | None = None
    """Reject sequences whose geometric-mean ratio is outside [1/mis_bound, mis_bound]; None: keep all."""

    @property
    def active(self) -> bool:
        return self.tis_cap is not None or self.mis_bound is not None


def correction_weights(trainer_logps: torch.Tensor, rollout_logps: torch.Tensor, mask: torch.Tensor,
                       cfg: CorrectionConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """(B, T) loss weights (1 where `mask` is 0) and the counts of what they touched:
    `tis_truncated_tokens`, `mis_rejected_sequences`, `mis_rejected_tokens`, `tokens`, `sequences`."""
    mask = mask.bool()
    log_ratio = torch.where(mask, trainer_logps.detach().double() - rollout_logps.double(), 0.0)
    ratio = torch.exp(log_ratio)
    weights = torch.ones_like(ratio)
    counts = {"tokens": float(mask.sum()), "sequences": float(mask.any(1).sum()),
              "tis_truncated_tokens": 0.0, "mis_rejected_sequences": 0.0, "mis_rejected_tokens": 0.0}
    if cfg.tis_cap is not None:
        weights = torch.where(mask, torch.clamp(ratio, max=cfg.tis_cap), 1.0)
        counts["tis_truncated_tokens"] = float((mask & (ratio > cfg.tis_cap)).sum())
    if cfg.mis_bound is not None:
        n = mask.sum(1)
        seq_log_ratio = log_ratio.sum(1) / n.clamp(min=1)
        rejected = (n > 0) & (seq_log_ratio.abs() > math.log(cfg.mis_bound))
        weights = torch.where(mask & rejected[:, None], 0.0, weights)
        counts["mis_rejected_sequences"] = float(rejected.sum())
        counts["mis_rejected_tokens"] = float((mask & rejected[:, None]).sum())
    return weights, counts


class MismatchStats:
    """Rollout/trainer mismatch accumulated over a step's micro-batches, per role and overall."""

    def __init__(self, clip_low: float, clip_high: float):
        self.low, self.high = clip_low, clip_high
        self._sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def add(self, roles: list[str], trainer_logps: torch.Tensor, rollout_logps: torch.Tensor,
            mask: torch.Tensor) -> None:
        """`mask` (B, T): trained tokens whose rollout logprob was recorded."""
        mask = mask.bool()
        log_ratio = torch.where(mask, trainer_logps.detach().double() - rollout_logps.double(), 0.0)
        ratio = torch.exp(log_ratio)
        dev = (ratio - 1).abs()
        outside = mask & ((ratio < 1 - self.low) | (ratio > 1 + self.high))
        k3 = ratio - 1 - log_ratio
        for r, role in enumerate(roles):
            m = mask[r]
            n = float(m.sum())
            if n == 0:
                continue
            for key in (role, "all"):
                s = self._sums[key]
                s["tokens"] += n
                s["dev"] += float(dev[r][m].sum())
                s["dev_max"] = max(s["dev_max"], float(dev[r][m].max()))
                s["outside"] += float(outside[r].sum())
                s["kl"] += float(k3[r][m].sum())

    def state(self) -> dict[str, dict[str, float]]:
        return {key: dict(s) for key, s in self._sums.items()}

    def merge(self, states: list[dict[str, dict[str, float]]]) -> None:
        """Replace the sums by those of several processes' `state()` (this one's included)."""
        self._sums.clear()
        for state in states:
            for key, s in state.items():
                mine = self._sums[key]
                for name, value in s.items():
                    mine[name] = max(mine[name], value) if name == "dev_max" else mine[name] + value

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, s in sorted(self._sums.items()):
            n = s["tokens"]
            out[f"mismatch/{key}/ratio_dev_mean"] = s["dev"] / n
            out[f"mismatch/{key}/ratio_dev_max"] = s["dev_max"]
            out[f"mismatch/{key}/clip_fraction"] = s["outside"] / n
            out[f"mismatch/{key}/kl"] = s["kl"] / n
            out[f"mismatch/{key}/tokens"] = n
        return out
