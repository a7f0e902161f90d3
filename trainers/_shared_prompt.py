"""Score a group's completions with their shared prompt encoded once.

A GRPO group is G completions of one prompt. Scored as G padded rows, the prompt runs
through the model G times, forward and backward. In code self-play the solver's prompt
is ~250 tokens and its answer ~27, so nine tenths of the trainer's compute re-encoded
identical prompts. Here the rows become one sequence -- prompt, completion 1, ...,
completion G -- with a block attention mask (a completion sees the prompt and its own
earlier tokens, never a sibling's) and position ids that restart after the prompt. Every
token's logprob is the padded computation's up to float rounding, and the gradient
through the prompt is the sum over the group, as before.

Written here because neither library does it: TRL's GRPO scores each completion with
its own copy of the prompt, and transformers' packing (`DataCollatorWithFlattening`)
packs unrelated sequences side by side; nobody shares a prefix between rows.
"""

from __future__ import annotations

import torch

__all__ = ["PackedRows", "shared_prompt_length"]


def shared_prompt_length(input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int) -> int | None:
    """Tokens of the prompt every row shares (left-padded, as TRL lays prompts out), or
    None when the rows do not share one, there is one row, or a completion is not
    right-padded (a layout this packer does not read)."""
    if input_ids.size(0) < 2 or logits_to_keep <= 0:
        return None
    split = input_ids.size(1) - logits_to_keep
    ids, mask = input_ids[:, :split], attention_mask[:, :split]
    if not (torch.equal(ids, ids[:1].expand_as(ids)) and torch.equal(mask, mask[:1].expand_as(mask))):
        return None
    completion = attention_mask[:, split:]
    if bool((completion[:, 1:] > completion[:, :-1]).any()):
        return None
    length = int(mask[0].sum())
    return length or None


class PackedRows:
    """One sequence holding the prompt once and every row's completion after it."""

    def __init__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int,
                 dtype: torch.dtype = torch.float32):
        split = input_ids.size(1) - logits_to_keep
        device = input_ids.device
        prompt = input_ids[0, :split][attention_mask[0, :split].bool()]
        self.completion_mask = attention_mask[:, split:].bool()
        self.labels = input_ids[:, split:][self.completion_mask]  # row-major: row 0's tokens, then row 1's...
        lengths = self.completion_mask.sum(1)
        p, n = prompt.numel(), self.labels.numel()
        total = p + n
        row = torch.repeat_interleave(torch.arange(lengths.numel(), device=device), lengths)
        self.rows = row
        """(n,) the row each packed completion token belongs to."""
        first = torch.cumsum(lengths, 0) - lengths  # offset of each row's first token among the completions
        offset = torch.arange(n, device=device) - first[row]  # token j of its row
        self.input_ids = torch.cat([prompt, self.labels])[None]
        self.position_ids = torch.cat([torch.arange(p, device=device), p + offset])[None]
        owner = torch.cat([torch.full((p,), -1, device=device), row])
        index = torch.arange(total, device=device)
        visible = (index[None, :] <= index[:, None]) & ((owner[None, :] == -1) | (owner[None, :] == owner[:, None]))
        # additive float mask: both the sdpa and the eager attention read it as-is
        self.attention_mask = torch.zeros((total, total), dtype=dtype, device=device).masked_fill(
            ~visible, torch.finfo(dtype).min)[None, None]
        # the logit that scores token j of a row is the previous token's: the prompt's last for j = 0
        previous = torch.arange(p, total, device=device) - 1
        self.score_positions = torch.where(offset == 0, torch.full_like(previous, p - 1), previous)

    def unpack(self, per_token: torch.Tensor) -> torch.Tensor:
        """(n,) values in packed order -> (rows, completion length), zero on padding."""
        return per_token.new_zeros(self.completion_mask.shape).masked_scatter(self.completion_mask, per_token)
