"""Continuous batching for the in-process engine: requests join the batch at every decode step.

Why this and not the alternatives (profiled on the 2-core dev box on the add-game workload
of issue #21, bench/serving.py): self-play requests arrive staggered (a writer's turn, then
its solvers; tool calls between turns), so with static batches (`_engine.Engine`,
`scheduler="static"`) a request arriving while a batch decodes waits for the whole batch,
up to max_tokens steps, and rows that finished early keep being decoded (11% of the static
engine's row-steps there). Here a row leaves the batch the step it finishes and a waiting
request is prefilled and merged at the next step. In both, the model's forward passes are
81-85% of the engine's time (prefill 9-14%, decode the rest), sampling 4%, left padding 4%
of prefill tokens. transformers' own continuous batching (`generate_batch`, paged
attention) was slower than sequential `generate` on this CPU and samples every row from
one global RNG (see `_engine.py`). `torch.compile` of the decode step would cut the
per-module Python overhead inside the forward, but recompiles for every (rows, cache
length) shape a continuous batch passes through unless the cache is static and padded
to a fixed length (attention over the padding, minutes of compiling on this CPU): not
taken until measured. A llama.cpp backend would lose exact token ids/logprobs and
in-place weight updates. So the batch is
a left-padded `DynamicCache` we resize ourselves: rows are concatenated along the batch
(padding the shorter cache on the left), finished rows are dropped with an index select,
and columns that are padding in every remaining row are trimmed. Each row keeps its own
`torch.Generator`, temperature, top_p, stop strings and position ids, so a seeded
request samples the same tokens whatever shares its batch (`RowSampler`).

Weight changes (`run_exclusive`) stop admission, let the rows in flight finish, run,
then admission resumes: every result is produced by exactly one weight version, and
requests admitted after an update carry the new version.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

from ._sampler import RowControl, RowSampler
from ._types import SamplingParams

__all__ = ["ContinuousEngine", "supports_continuous_batching"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def supports_continuous_batching(model: Any) -> bool:
    """Plain full-attention decoder caches only: sliding-window or linear-attention layers keep
    state this module does not know how to pad and slice."""
    cfg = model.config
    kinds = set(getattr(cfg, "layer_types", None) or ["full_attention"])
    return kinds == {"full_attention"} and getattr(cfg, "sliding_window", None) is None


@dataclass
class _Job:
    prompt_ids: list[int]
    sampling: SamplingParams
    future: asyncio.Future[tuple[list[RowControl], int]]
    loop: asyncio.AbstractEventLoop
    rows: list[RowControl] = field(default_factory=list)
    version: int = 0


@dataclass
class _Op:
    fn: Callable[[], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


@dataclass
class _Batch:
    """Rows decoding together. Row i's cache is `mask[i]`'s ones (left padding is zeros);
    `last[i]` is the token it feeds next, at position `pos[i]`."""

    rows: list[RowControl]
    jobs: list[_Job]
    cache: Any
    mask: torch.Tensor
    pos: torch.Tensor
    last: torch.Tensor


class ContinuousEngine:
    """Same interface as `_engine.Engine`: `generate`, `run_exclusive`, `close`, `version`."""

    def __init__(self, model: Any, tokenizer: Any, *, max_batch_size: int, batch_wait_ms: float,
                 logprobs_mode: str, share_prefill: bool = True, torch_threads: int | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.version = 0
        self.batch_sizes: list[int] = []
        """Rows admitted by each prefill so far, most recent last (bounded; for tests and stats)."""
        self._max_rows = max_batch_size
        self._wait = batch_wait_ms / 1000.0
        self._mode = logprobs_mode
        self._share_prefill = share_prefill
        self._threads = torch_threads
        self._inbox: queue.SimpleQueue[_Job | _Op | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        gen_eos = model.generation_config.eos_token_id
        eos = set(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
        if tokenizer.eos_token_id is not None:
            eos.add(tokenizer.eos_token_id)
        self.eos_ids = eos
        pad = tokenizer.pad_token_id
        self._pad = pad if pad is not None else min(eos)
        self._context = getattr(model.config, "max_position_embeddings", None)

    # -- called from event loops ------------------------------------------------

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> tuple[list[RowControl], int]:
        """Sample `sampling.n` completions of one prompt; returns rows and the weight version."""
        if self._context is not None and len(prompt_ids) >= self._context:
            raise ValueError(
                f"messages: the prompt has {len(prompt_ids)} tokens, the model's context is {self._context}"
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[list[RowControl], int]] = loop.create_future()
        self._submit(_Job(list(prompt_ids), sampling, future, loop))
        return await future

    async def run_exclusive(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the engine thread once the rows in flight are done (weight changes)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._submit(_Op(fn, future, loop))
        return await future

    def close(self) -> None:
        if self._thread is not None:
            self._inbox.put(None)
            self._thread.join()
            self._thread = None

    def _submit(self, item: _Job | _Op) -> None:
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve_forever, name="agentplay-engine", daemon=True)
                self._thread.start()
        self._inbox.put(item)

    # -- the engine thread ------------------------------------------------------

    def _serve_forever(self) -> None:
        if self._threads:
            torch.set_num_threads(self._threads)  # this thread's own intra-op threads
        waiting: deque[_Job] = deque()
        ops: deque[_Op] = deque()
        batch: _Batch | None = None
        with torch.inference_mode():
            while True:
                idle = batch is None and not waiting and not ops
                if not self._take(waiting, ops, block=idle):
                    break
                if batch is None and waiting and not ops and self._wait > 0:
                    # the first arrival after idling: let the requests sent with it join its prefill
                    if not self._take(waiting, ops, block=True, timeout=self._wait):
                        break
                if ops and batch is None:
                    op = ops.popleft()
                    try:
                        _resolve(op.loop, op.future, result=op.fn())
                    except Exception as exc:  # noqa: BLE001 - the error belongs to the caller
                        _resolve(op.loop, op.future, error=exc)
                    continue
                try:
                    if waiting and not ops:  # a pending weight change stops admission
                        batch = self._admit(batch, waiting)
                    if batch is not None:
                        batch = self._step(batch)
                except Exception as exc:  # noqa: BLE001 - every request in flight fails with it
                    log.exception("engine step failed")
                    for job in {id(j): j for j in (batch.jobs if batch else [])}.values():
                        _resolve(job.loop, job.future, error=exc)
                    batch = None

    def _take(self, waiting: deque[_Job], ops: deque[_Op], *, block: bool, timeout: float | None = None) -> bool:
        """Move what arrived into `waiting` / `ops`; False once `close` was called."""
        try:
            item = self._inbox.get(timeout=timeout) if block else self._inbox.get_nowait()
            while True:
                if item is None:
                    return False
                (ops if isinstance(item, _Op) else waiting).append(item)  # type: ignore[arg-type]
                item = self._inbox.get_nowait()
        except queue.Empty:
            return True

    def _admit(self, batch: _Batch | None, waiting: deque[_Job]) -> _Batch | None:
        """Prefill the waiting jobs that fit (first come, first served) and merge them in."""
        free = self._max_rows - (len(batch.rows) if batch is not None else 0)
        jobs: list[_Job] = []
        while waiting and (waiting[0].sampling.n <= free or (batch is None and not jobs)):
            job = waiting.popleft()
            if job.future.done():  # the caller went away
                continue
            free -= job.sampling.n
            jobs.append(job)
        if not jobs:
            return batch
        new = self._prefill(jobs)
        self.batch_sizes = self.batch_sizes[-999:] + [len(new.rows)]
        merged = new if batch is None else _merge(batch, new)
        return self._drop_finished(merged)

    def _rows_of(self, job: _Job) -> list[RowControl]:
        sp = job.sampling
        base_seed = sp.seed if sp.seed is not None else random.getrandbits(62)
        room = (self._context - len(job.prompt_ids)) if self._context else sp.max_tokens
        return [RowControl(temperature=sp.temperature, top_p=sp.top_p, max_tokens=max(1, min(sp.max_tokens, room)),
                           seed=base_seed + k, stop=list(sp.stop or []), top_logprobs=sp.top_logprobs)
                for k in range(sp.n)]

    def _prefill(self, jobs: list[_Job]) -> _Batch:
        """Encode each distinct prompt once (a GRPO group's n rows share it), copy its cache to
        its rows and sample every row's first token from the last prompt position."""
        rows: list[RowControl] = []
        owners: list[_Job] = []
        prompts: list[tuple[int, ...]] = []
        for job in jobs:
            job.version = self.version
            job.rows = self._rows_of(job)
            rows += job.rows
            owners += [job] * len(job.rows)
            prompts += [tuple(job.prompt_ids)] * len(job.rows)
        if self._share_prefill:
            unique: dict[tuple[int, ...], int] = {}
            index = [unique.setdefault(p, len(unique)) for p in prompts]
            distinct = list(unique)
        else:
            index, distinct = list(range(len(prompts))), prompts
        width = max(len(p) for p in distinct)
        ids = torch.full((len(distinct), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(distinct), width), dtype=torch.long)
        for u, p in enumerate(distinct):
            ids[u, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[u, width - len(p):] = 1
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as generate() numbers left-padded rows
        device = self.model.device
        out = self.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                         position_ids=positions.to(device), use_cache=True, logits_to_keep=1)
        select = torch.tensor(index, dtype=torch.long, device=device)
        cache = out.past_key_values
        if index != list(range(len(rows))):
            cache.batch_select_indices(select)
        logits = out.logits[:, -1].index_select(0, select)
        lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long, device=device)
        first = self._sample(rows, logits)
        return _Batch(rows=rows, jobs=owners, cache=cache, mask=mask.to(device).index_select(0, select),
                      pos=lengths, last=first)

    def _sample(self, rows: list[RowControl], logits: torch.Tensor) -> torch.Tensor:
        sampler = RowSampler(rows, eos_ids=self.eos_ids, tokenizer=self.tokenizer, device=logits.device,
                             logprobs_mode=self._mode)
        return sampler.pick(logits)

    def _step(self, batch: _Batch) -> _Batch | None:
        """One decode step of every row, then the finished rows leave."""
        ones = torch.ones((len(batch.rows), 1), dtype=batch.mask.dtype, device=batch.mask.device)
        batch.mask = torch.cat([batch.mask, ones], dim=1)
        out = self.model(input_ids=batch.last.unsqueeze(1), attention_mask=batch.mask,
                         position_ids=batch.pos.unsqueeze(1), past_key_values=batch.cache, use_cache=True)
        batch.cache = out.past_key_values
        batch.pos = batch.pos + 1
        batch.last = self._sample(batch.rows, out.logits[:, -1])
        return self._drop_finished(batch)

    def _drop_finished(self, batch: _Batch) -> _Batch | None:
        for row, job in zip(batch.rows, batch.jobs):
            if row.finish is None and job.future.done():  # cancelled by its caller: stop decoding it
                row.finish = "length"
        keep = [i for i, row in enumerate(batch.rows) if row.finish is None]
        for job in {id(j): j for j in batch.jobs}.values():
            if all(r.finish is not None for r in job.rows):
                _resolve(job.loop, job.future, result=(job.rows, job.version))
        if not keep:
            return None
        if len(keep) < len(batch.rows):
            select = torch.tensor(keep, dtype=torch.long, device=batch.mask.device)
            batch.cache.batch_select_indices(select)
            batch.rows = [batch.rows[i] for i in keep]
            batch.jobs = [batch.jobs[i] for i in keep]
            batch.mask, batch.pos, batch.last = (t.index_select(0, select) for t in (batch.mask, batch.pos, batch.last))
            # columns that are left padding in every remaining row hold nothing anyone attends to
            start = int(batch.mask.any(dim=0).to(torch.long).argmax())
            if start:
                batch.mask = batch.mask[:, start:]
                for layer in batch.cache.layers:
                    layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]
        return batch


def _merge(a: _Batch, b: _Batch) -> _Batch:
    """One batch of both: the shorter cache is left-padded to the longer one's length."""
    width = max(a.mask.shape[1], b.mask.shape[1])

    def left_pad(t: torch.Tensor, dim_from_end: int, to: int) -> torch.Tensor:
        missing = to - t.shape[-dim_from_end]
        if missing == 0:
            return t
        pad = [0, 0] * (dim_from_end - 1) + [missing, 0]
        return F.pad(t, pad)

    for la, lb in zip(a.cache.layers, b.cache.layers):
        la.keys = torch.cat([left_pad(la.keys, 2, width), left_pad(lb.keys, 2, width)], dim=0)
        la.values = torch.cat([left_pad(la.values, 2, width), left_pad(lb.values, 2, width)], dim=0)
    return _Batch(rows=a.rows + b.rows, jobs=a.jobs + b.jobs, cache=a.cache,
                  mask=torch.cat([left_pad(a.mask, 1, width), left_pad(b.mask, 1, width)], dim=0),
                  pos=torch.cat([a.pos, b.pos]), last=torch.cat([a.last, b.last]))


def _resolve(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], *, result: Any = None,
             error: BaseException | None = None) -> None:
    def settle() -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    try:
        loop.call_soon_threadsafe(settle)
    except RuntimeError:  # that event loop is closed: nobody is waiting
        pass
