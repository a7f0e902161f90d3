"""Checks every recipe test applies to a recorded RoleTurn (token-exactness and masks)."""

from __future__ import annotations

from typing import Any

from agentplay.traces import RoleTurn


def mask_segments(turn: RoleTurn) -> list[tuple[int, list[int]]]:
    """(mask value, ids) runs of `turn.token_ids`."""
    out: list[tuple[int, list[int]]] = []
    for tid, m in zip(turn.token_ids or [], turn.mask or [], strict=True):
        if out and out[-1][0] == m:
            out[-1][1].append(tid)
        else:
            out.append((m, [tid]))
    return out


def check_token_exact(turn: RoleTurn, tokenizer: Any) -> list[str]:
    """Assert the trace is consistent with what the model saw and wrote; returns the mask-0 texts."""
    assert turn.token_ids is not None and turn.mask is not None and turn.logprobs is not None
    assert len(turn.token_ids) == len(turn.mask) == len(turn.logprobs)
    assert turn.token_exact, f"{turn.role}: prompt re-render broke the prefix"
    assert turn.prompt_token_ids == turn.generations[0].prompt_token_ids
    model_runs = [ids for m, ids in mask_segments(turn) if m == 1]
    glue = [ids for m, ids in mask_segments(turn) if m == 0]
    gens = [g for g in turn.generations if g.completion_token_ids]
    assert model_runs == [g.completion_token_ids for g in gens]
    end = 0
    for g in turn.generations:
        # every call conditioned on exactly the first prompt plus everything recorded before it
        n = len(g.prompt_token_ids or []) - len(turn.prompt_token_ids)
        assert n >= end and g.prompt_token_ids == turn.prompt_token_ids + turn.token_ids[:n]
        ids = list(g.completion_token_ids or [])
        assert turn.token_ids[n:n + len(ids)] == ids and set(turn.mask[n:n + len(ids)]) <= {1}
        end = n + len(ids)
        if ids and ids[-1] in {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")}:
            ids = ids[:-1]  # the end-of-turn token is sampled but not part of the text
        assert tokenizer.decode(ids, skip_special_tokens=False) == g.text
        assert g.logprobs is not None and len(g.logprobs) == len(g.completion_token_ids or [])
    assert end == len(turn.token_ids)
    for lp, m in zip(turn.logprobs, turn.mask):
        assert (lp <= 0.0) and (m == 1 or lp == 0.0)
    return [tokenizer.decode(ids, skip_special_tokens=False) for ids in glue]
