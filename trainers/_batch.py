"""RoleTurns -> the tensors TRL's GRPO loss reads.

A turn is `prompt_token_ids` (first prompt) + `token_ids` (everything after it:
model tokens, tool outputs, template glue). TRL's loss takes the prompt and the
completion separately and multiplies `completion_mask` by `tool_mask`; we pass the
turn's `mask` as `tool_mask`, so tool-output and template tokens carry no loss.
Prompts are left-padded and completions right-padded, as TRL does; with rotary
positions the shift from left padding does not change attention scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from agentplay.traces._types import turn_sampling

from ._advantages import TrainSample

__all__ = ["MicroBatch", "make_micro_batches", "scoring_temperature"]


@dataclass
class MicroBatch:
    inputs: dict[str, torch.Tensor]
    """prompt_ids, prompt_mask, completion_ids, completion_mask, tool_mask, advantages,
    old_per_token_logps (NaN rows where the trace had no logprobs), num_items_in_batch."""
    missing_old_logps: torch.Tensor
    """(B,) bool: rows whose sampling logprobs were not recorded (scored on-policy instead)."""
    size: int
    temperatures: torch.Tensor | None = None
    """(B,) the temperature each row is scored at: the one its tokens were sampled at."""
    roles: list[str] | None = None
    """The role of each row (mismatch metrics are per role)."""
    clip_high_bonus: torch.Tensor | None = None
    """(B,) per-row widening of the upper clip bound (`TrainSample.clip_high_bonus`); None when
    every row has 0 (the loss then clips at the batch's bounds, TRL's own path)."""


def scoring_temperature(sample: TrainSample, default: float) -> float:
    """The temperature whose distribution the row's recorded logprobs are of.

    `temperature` logprobs (ours, and what we assume of a server that cannot say) are
    log_softmax(logits / T) at the sampling T; `raw` ones (vLLM's default, and every
    greedy row) are of T = 1. `processed` ones also applied top_p, which the trainer does
    not: those rows are scored at T, and the mismatch metrics show the gap. A turn with no
    record (an older trace) is scored at `default`, the recipe's declared temperature."""
    record = turn_sampling(sample.turn)
    if record is None:
        return default
    if record.logprobs_mode == "raw" or record.temperature == 0:
        return 1.0
    return record.temperature


def _completion(sample: TrainSample, max_len: int) -> tuple[list[int], list[int], list[float] | None]:
    turn = sample.turn
    ids = list(turn.token_ids or [])[:max_len]
    mask = [1 if m else 0 for m in (turn.mask or [])][:max_len]
    lps = turn.logprobs
    if lps is not None and len(lps) >= len(ids):
        return ids, mask, [float(x) for x in lps[: len(ids)]]
    return ids, mask, None


def _row_order(parts: list[tuple], micro_batch_size: int, share_prompts: bool) -> list[list[int]]:
    """Micro-batches as lists of sample indices. With `share_prompts`, rows of one prompt
    go together (up to `micro_batch_size` each) so the learner encodes the prompt once;
    rows whose prompt no other row has are batched by length (less padding)."""
    def length(i: int) -> int:
        return len(parts[i][0].turn.prompt_token_ids or []) + len(parts[i][1])

    singles = list(range(len(parts)))
    chunks: list[list[int]] = []
    if share_prompts and micro_batch_size > 1:
        by_prompt: dict[tuple[int, ...], list[int]] = {}
        for i, (s, *_) in enumerate(parts):
            by_prompt.setdefault(tuple(s.turn.prompt_token_ids or []), []).append(i)
        singles = []
        for rows in by_prompt.values():
            for start in range(0, len(rows), micro_batch_size):
                chunk = rows[start : start + micro_batch_size]
                if len(chunk) > 1:
                    chunks.append(chunk)
                else:
                    singles.extend(chunk)
    singles.sort(key=length)
    return chunks + [singles[s : s + micro_batch_size] for s in range(0, len(singles), micro_batch_size)]


def make_micro_batches(
    samples: list[TrainSample], *, micro_batch_size: int, max_completion_length: int, pad_token_id: int,
    share_prompts: bool = False, default_temperature: float = 1.0,
) -> list[MicroBatch]:
    """Split the batch into micro-batches: rows of one prompt together (`share_prompts`,
    see `_shared_prompt`), the rest by similar length.

    `num_items_in_batch` is the number of trained tokens of the WHOLE batch, the
    normaliser TRL's dapo/cispo losses divide by; every micro-batch carries it.
    """
    parts = [(s, *_completion(s, max_completion_length)) for s in samples]
    total_tokens = float(sum(sum(mask) for _, _, mask, _ in parts))
    batches: list[MicroBatch] = []
    for chunk in _row_order(parts, micro_batch_size, share_prompts):
        rows = [parts[i] for i in chunk]
        p_len = max(len(s.turn.prompt_token_ids or []) for s, *_ in rows)
        c_len = max(len(ids) for _, ids, _, _ in rows)
        b = len(rows)
        prompt_ids = torch.full((b, p_len), pad_token_id, dtype=torch.long)
        prompt_mask = torch.zeros((b, p_len), dtype=torch.long)
        completion_ids = torch.full((b, c_len), pad_token_id, dtype=torch.long)
        completion_mask = torch.zeros((b, c_len), dtype=torch.long)
        tool_mask = torch.zeros((b, c_len), dtype=torch.long)
        old = torch.zeros((b, c_len), dtype=torch.float32)
        missing = torch.zeros(b, dtype=torch.bool)
        adv = torch.zeros(b, dtype=torch.float32)
        for r, (s, ids, mask, lps) in enumerate(rows):
            prompt = list(s.turn.prompt_token_ids or [])
            prompt_ids[r, p_len - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            prompt_mask[r, p_len - len(prompt) :] = 1
            completion_ids[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            completion_mask[r, : len(ids)] = 1
            tool_mask[r, : len(ids)] = torch.tensor(mask, dtype=torch.long)
            if lps is None or not all(math.isfinite(x) for x, m in zip(lps, mask) if m):
                missing[r] = True
            else:
                old[r, : len(ids)] = torch.tensor(lps, dtype=torch.float32)
            adv[r] = s.advantage
        inputs = {
            "prompt_ids": prompt_ids,
            "prompt_mask": prompt_mask,
            "completion_ids": completion_ids,
            "completion_mask": completion_mask,
            "tool_mask": tool_mask,
            "advantages": adv,
            "old_per_token_logps": old,
            "num_items_in_batch": torch.tensor(max(total_tokens, 1.0)),
        }
        temps = torch.tensor([scoring_temperature(s, default_temperature) for s, *_ in rows], dtype=torch.float32)
        bonus = [s.clip_high_bonus for s, *_ in rows]
        batches.append(MicroBatch(inputs=inputs, missing_old_logps=missing, size=b, temperatures=temps,
                                  roles=[s.turn.role for s, *_ in rows],
                                  clip_high_bonus=torch.tensor(bonus, dtype=torch.float32) if any(bonus) else None))
    return batches
