"""What both in-process engines hold: the model, its stop tokens and pad id, the batching knobs,
the weight version, and how a request becomes sampled rows (`RowControl`s)."""

from __future__ import annotations

import random
from typing import Any

from ._sampler import RowControl
from ._types import SamplingParams

__all__ = ["EngineBase"]


class EngineBase:
    """State shared by `_engine.Engine` (static batches through `generate`) and
    `_continuous.ContinuousEngine` (the lean decode path); both add `generate`,
    `run_exclusive` and `close`."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_batch_size: int,
        batch_wait_ms: float,
        logprobs_mode: str,
        share_prefill: bool = True,
        torch_threads: int | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.version = 0
        self.batch_sizes: list[int] = []
        """Rows started by each batch (static) or admission (continuous), most recent last (bounded;
        for tests and stats)."""
        self._max_rows = max_batch_size
        self._wait = batch_wait_ms / 1000.0
        self._mode = logprobs_mode
        self._share_prefill = share_prefill
        self._threads = torch_threads
        gen_eos = model.generation_config.eos_token_id
        eos = set(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos.add(tokenizer.eos_token_id)
        self.eos_ids = eos
        pad = tokenizer.pad_token_id
        self._pad = pad if pad is not None else min(eos)
        self._context = getattr(model.config, "max_position_embeddings", None)

    def _check_prompt(self, prompt_ids: list[int]) -> None:
        if self._context is not None and len(prompt_ids) >= self._context:
            raise ValueError(
                f"messages: the prompt has {len(prompt_ids)} tokens, the model's context is {self._context}"
            )

    def _rows_of(self, prompt_ids: list[int], sp: SamplingParams) -> list[RowControl]:
        """The request's `n` rows: seeds `seed, seed+1, ...` and room capped by the context."""
        base_seed = sp.seed if sp.seed is not None else random.getrandbits(62)
        room = (self._context - len(prompt_ids)) if self._context else sp.max_tokens
        return [RowControl(temperature=sp.temperature, top_p=sp.top_p, max_tokens=max(1, min(sp.max_tokens, room)),
                           seed=base_seed + k, stop=list(sp.stop or []), top_logprobs=sp.top_logprobs)
                for k in range(sp.n)]

    def _record(self, rows: int) -> None:
        self.batch_sizes = self.batch_sizes[-999:] + [rows]
