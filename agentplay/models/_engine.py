"""The `generate`-based in-process engine: concurrent chat requests batched into `model.generate`.

What models the lean decode path (`_decoder.py`) does not reproduce get (sliding-window or
linear-attention layers, other architectures); Llama-family models are served by
`_continuous.ContinuousEngine` under either scheduler.

Why a micro-batcher over `generate` and not transformers' continuous batching
(`generate_batch` / `ContinuousBatchingManager`, transformers 5.23): measured
on this 2-core CPU box (2 torch threads, SmolLM2-135M, 8 prompts x 32 greedy
tokens), `generate_batch` runs (paged eager attention) and returns logprobs,
but made 10.2 tokens per CPU-second, no better than sequential `generate`
(11.3), while this batcher made 37.5 (bench/serving.py). It also samples every
request from one global RNG with one `do_sample` switch, so a request's `seed`
could not reproduce its own samples and greedy and sampled requests could not
share a batch, and it has no stop strings. So concurrent requests are collected
for a few milliseconds, left-padded into one batch and decoded by `generate`
(its KV cache, attention masks, kernels); `RowSampler` gives each row its own
temperature, top_p, seed, stop strings and max_tokens. Requests arriving while a
batch runs wait for the next one (static batches, not continuous).

One worker thread runs every batch and every weight change, in arrival order:
a weight swap waits for the batch in flight, so each result was produced by
exactly one weight version, and the event loop never blocks on torch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from ._engine_base import EngineBase
from ._sampler import RowControl, RowSampler
from ._types import SamplingParams

__all__ = ["Engine"]

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class _Request:
    prompt_ids: list[int]
    sampling: SamplingParams
    future: asyncio.Future[tuple[list[RowControl], int]]


class Engine(EngineBase):
    def __init__(self, model: Any, tokenizer: Any, **knobs: Any) -> None:
        super().__init__(model, tokenizer, **knobs)
        threads = self._threads
        # torch keeps the intra-op thread count per thread: the engine's is set here, so a trainer
        # thread of the same process (asynchronous self-play) can have its own
        self._worker = ThreadPoolExecutor(
            1, thread_name_prefix="agentplay-engine",
            initializer=(lambda: torch.set_num_threads(threads)) if threads else None)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[_Request] | None = None
        self._task: asyncio.Task[None] | None = None

    async def generate(
        self, prompt_ids: list[int], sampling: SamplingParams
    ) -> tuple[list[RowControl], int]:
        """Sample `sampling.n` completions of one prompt; returns rows and the weight version."""
        self._check_prompt(prompt_ids)
        queue = self._ensure_batcher()
        future: asyncio.Future[tuple[list[RowControl], int]] = asyncio.get_running_loop().create_future()
        await queue.put(_Request(prompt_ids, sampling, future))
        return await future

    async def run_exclusive(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the engine thread between batches (weight changes)."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn)

    def close(self) -> None:
        if self._task is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._worker.shutdown(wait=True)

    def _ensure_batcher(self) -> asyncio.Queue[_Request]:
        # Each event loop gets its own queue and batcher task (tests and notebooks
        # create several loops over one model); the worker thread is shared.
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._task is None or self._task.done():
            self._loop = loop
            self._queue = asyncio.Queue()
            self._task = loop.create_task(self._batch_forever(self._queue), name="agentplay-batcher")
        assert self._queue is not None
        return self._queue

    async def _batch_forever(self, queue: asyncio.Queue[_Request]) -> None:
        loop = asyncio.get_running_loop()
        carry: _Request | None = None  # did not fit the previous batch; opens the next one
        while True:
            batch = [carry if carry is not None else await queue.get()]
            carry = None
            rows = batch[0].sampling.n
            deadline = loop.time() + self._wait
            while rows < self._max_rows:
                try:
                    if queue.empty():
                        timeout = deadline - loop.time()
                        if timeout <= 0:
                            break
                        item = await asyncio.wait_for(queue.get(), timeout)
                    else:
                        item = queue.get_nowait()
                except TimeoutError:
                    break
                if rows + item.sampling.n > self._max_rows:
                    carry = item
                    break
                batch.append(item)
                rows += item.sampling.n
            live = [r for r in batch if not r.future.done()]
            if not live:
                continue
            try:
                results = await loop.run_in_executor(self._worker, self._generate_batch, live)
            except Exception as exc:  # noqa: BLE001 - the error belongs to the callers
                for req in live:
                    if not req.future.done():
                        req.future.set_exception(exc)
                continue
            for req, res in zip(live, results):
                if not req.future.done():
                    req.future.set_result(res)

    @torch.inference_mode()
    def _generate_batch(self, batch: list[_Request]) -> list[tuple[list[RowControl], int]]:
        version = self.version
        rows: list[RowControl] = []
        prompts: list[list[int]] = []
        for req in batch:
            mine = self._rows_of(req.prompt_ids, req.sampling)
            rows += mine
            prompts += [req.prompt_ids] * len(mine)
        self._record(len(rows))
        device = self.model.device
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            input_ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
        sampler = RowSampler(
            rows, eos_ids=self.eos_ids, tokenizer=self.tokenizer, device=device, logprobs_mode=self._mode
        )
        self.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=mask.to(device),
            past_key_values=self._prefill_once_per_prompt(prompts, width) if self._share_prefill else None,
            max_new_tokens=max(r.max_tokens for r in rows),
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            logits_processor=[sampler],
            stopping_criteria=[sampler.stopping_criteria()],
            pad_token_id=self._pad,
            eos_token_id=sorted(self.eos_ids),
        )
        for row in rows:
            if row.finish is None:  # generate ran out of steps for this row
                row.finish = "length"
        out: list[tuple[list[RowControl], int]] = []
        start = 0
        for req in batch:
            out.append((rows[start : start + req.sampling.n], version))
            start += req.sampling.n
        return out

    def _prefill_once_per_prompt(self, prompts: list[list[int]], width: int) -> Any | None:
        """The KV cache of every row's prompt but its last token, each distinct prompt
        encoded once, or None when no two rows share a prompt.

        A GRPO group is n samples of one prompt; `generate` would encode that prompt n
        times (the solver's ~250-token prompt cost more than its ~27 sampled tokens). Passing
        `generate` a cache of the prompt minus its last token is transformers' documented
        prefix-reuse path: it then feeds only the last prompt token and decodes as usual.
        The rows' left padding and positions are laid out exactly as `generate` would."""
        unique: dict[tuple[int, ...], int] = {}
        index = [unique.setdefault(tuple(p), len(unique)) for p in prompts]
        if len(unique) == len(prompts) or min(len(p) for p in prompts) < 2:
            return None
        ids = torch.full((len(unique), width - 1), self._pad, dtype=torch.long)
        mask = torch.zeros((len(unique), width - 1), dtype=torch.long)
        for prompt, u in unique.items():
            ids[u, width - len(prompt) :] = torch.tensor(prompt[:-1], dtype=torch.long)
            mask[u, width - len(prompt) :] = 1
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as generate() numbers left-padded rows
        device = self.model.device
        out = self.model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                         use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        cache.reorder_cache(torch.tensor(index, dtype=torch.long, device=device))
        return cache
