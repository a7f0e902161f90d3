"""The in-process engine for Llama-family models: the lean decode path (`_decoder.py`) under a
static or continuous scheduler.

`continuous`: requests join the batch at every decode step. Self-play requests arrive staggered
(a writer's turn, then its solvers; tool calls between turns): with static batches a request
arriving while a batch decodes waits for the whole batch, up to max_tokens steps, and rows that
finished early keep being decoded (11% of the static engine's row-steps on the add-game workload
of issue #21). Here a row leaves the batch the step it finishes and a waiting request is
prefilled and merged at the next step (the default). `static`: waiting requests are admitted only
when no row is decoding (one batch decoded to its end, then the next).

With one torch thread a row's tokens and logprobs are the same bits whatever shares its batch
(see `_decoder.py`: unpadded per-row attention, matmuls kept inside MKL's row-invariant shapes),
so continuous admission, whose batches depend on timing, still lets a killed-and-resumed run
re-sample exactly what it had (tests/test_trainer_kill.py).

Each row keeps its own unpadded KV cache (`RowCache`), so merging and dropping rows is list
surgery, no cache is re-padded, and a row's attention never reads another row's padding (the old
left-padded `DynamicCache` version of this engine moved logprobs by ~2e-6 with the batch). transformers'
own continuous batching (`generate_batch`, paged attention) was slower than sequential `generate`
on this CPU and samples every row from one global RNG (see `_engine.py`). Each row keeps its own
`torch.Generator`, temperature, top_p and stop strings (`RowSampler`), so a seeded request samples
the same tokens whatever shares its batch.

Weight changes (`run_exclusive`) stop admission, let the rows in flight finish, run, rebuild the
decoder's fused weights, then admission resumes: every result is produced by exactly one weight
version, and requests admitted after an update carry the new version.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from ._decoder import LeanDecoder, RowCache, supports_lean_decoder
from ._engine_base import EngineBase
from ._sampler import RowControl, RowSampler
from ._types import SamplingParams

__all__ = ["ContinuousEngine", "supports_lean_decoder"]

log = logging.getLogger(__name__)
T = TypeVar("T")


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
    """Rows decoding together: row i feeds `last[i]` next, at position `caches[i].length`."""

    rows: list[RowControl]
    jobs: list[_Job]
    caches: list[RowCache]
    last: torch.Tensor


class ContinuousEngine(EngineBase):
    """Same interface as `_engine.Engine`: `generate`, `run_exclusive`, `close`, `version`."""

    def __init__(self, model: Any, tokenizer: Any, *, continuous: bool = True,
                 low_dtype: torch.dtype | None = None, **knobs: Any) -> None:
        super().__init__(model, tokenizer, **knobs)
        self.continuous = continuous
        """False: admit only when no row is decoding (static batches)."""
        self.decoder = LeanDecoder(model, low_dtype=low_dtype)
        self.cpu_seconds = {"prefill": 0.0, "decode": 0.0, "sample": 0.0}
        """The engine thread's CPU time by phase since start (bench/serving.py prints the split)."""
        self._inbox: queue.SimpleQueue[_Job | _Op | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    # -- called from event loops ------------------------------------------------

    async def generate(self, prompt_ids: list[int], sampling: SamplingParams) -> tuple[list[RowControl], int]:
        """Sample `sampling.n` completions of one prompt; returns rows and the weight version."""
        self._check_prompt(prompt_ids)
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
        self.decoder.batch_invariant = torch.get_num_threads() == 1
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
                        result = op.fn()
                    except Exception as exc:  # noqa: BLE001 - the error belongs to the caller
                        _resolve(op.loop, op.future, error=exc)
                    else:
                        _resolve(op.loop, op.future, result=result)
                    finally:  # even a failed update may have changed some weights
                        self.decoder.rebuild()
                    continue
                try:
                    if waiting and not ops and (self.continuous or batch is None):
                        # a pending weight change stops admission; static admits between batches only
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
        self._record(len(new.rows))
        merged = new if batch is None else _Batch(rows=batch.rows + new.rows, jobs=batch.jobs + new.jobs,
                                                  caches=batch.caches + new.caches,
                                                  last=torch.cat([batch.last, new.last]))
        return self._drop_finished(merged)

    def _prefill(self, jobs: list[_Job]) -> _Batch:
        """Encode each distinct prompt once (a GRPO group's n rows share it: the others get a copy
        of its cache) and sample every row's first token from the last prompt position."""
        rows: list[RowControl] = []
        owners: list[_Job] = []
        caches: list[RowCache] = []
        logits: list[torch.Tensor] = []
        encoded: dict[tuple[int, ...], tuple[torch.Tensor, RowCache]] = {}
        for job in jobs:
            job.version = self.version
            job.rows = self._rows_of(job.prompt_ids, job.sampling)
            room = max(r.max_tokens for r in job.rows)
            key = tuple(job.prompt_ids)
            for row in job.rows:
                if key in encoded and self._share_prefill:
                    last, cache = encoded[key]
                    cache = cache.clone(room)
                else:
                    started = time.thread_time()
                    last, cache = self.decoder.prefill(job.prompt_ids, room)
                    self.cpu_seconds["prefill"] += time.thread_time() - started
                    encoded[key] = (last, cache)
                rows.append(row)
                owners.append(job)
                caches.append(cache)
                logits.append(last)
        first = self._sample(rows, torch.cat(logits))
        return _Batch(rows=rows, jobs=owners, caches=caches, last=first)

    def _sample(self, rows: list[RowControl], logits: torch.Tensor) -> torch.Tensor:
        started = time.thread_time()
        sampler = RowSampler(rows, eos_ids=self.eos_ids, tokenizer=self.tokenizer, device=logits.device,
                             logprobs_mode=self._mode,
                             draw="multinomial" if self.decoder.low_dtype is None else "inverse_cdf")
        chosen = sampler.pick(logits)
        self.cpu_seconds["sample"] += time.thread_time() - started
        return chosen

    def _step(self, batch: _Batch) -> _Batch | None:
        """One decode step of every row, then the finished rows leave."""
        started = time.thread_time()
        logits = self.decoder.decode(batch.last, batch.caches)
        self.cpu_seconds["decode"] += time.thread_time() - started
        batch.last = self._sample(batch.rows, logits)
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
            batch.rows = [batch.rows[i] for i in keep]
            batch.jobs = [batch.jobs[i] for i in keep]
            batch.caches = [batch.caches[i] for i in keep]
            batch.last = batch.last[keep]
        return batch


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
