"""Where episodes run: the seam between the runner and the machines.

The runner decides *which* episodes a run needs (indexes, seeds, group flags)
and stores what comes back; an executor decides *where* they run. Both
executors call `execute_spec`, so an episode is the same code on the driver's
event loop and inside a Ray actor: one code path, two executors.
"""

from __future__ import annotations

import asyncio
import math
import os
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentplay._episode import run_episode
from agentplay.errors import AgentplayError
from agentplay.models._endpoints import endpoint_scope
from agentplay.recipe import CompiledRecipe
from agentplay.traces import Episode

__all__ = ["EpisodeSpec", "Executor", "ExecutorError", "LocalExecutor", "RayConfig", "RayExecutor",
           "RecipeRef", "execute_spec", "loopback_only_ray", "register_endpoints"]


class ExecutorError(AgentplayError, RuntimeError):
    """The executor cannot run episodes (workers fail to start, all workers lost); says why."""


class EpisodeSpec(BaseModel):
    """Everything an executor needs to run one episode; small and picklable on purpose."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0)
    """Position in the run (0..N-1): the store's key, so a retried spec is stored once."""
    seed: int
    """Episode seed derived from the run seed: a retry reproduces the same draws."""
    group_seed: int
    """Shared by the episodes of one `GroupBy.seed(k)` block."""
    run_id: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    """Notes stored with the episode (group_resumed, group_incomplete)."""
    retries: int = Field(1, ge=0)
    """Whole-episode retries after an infrastructure failure (`RunConfig.episode_retries`)."""


RETRY_BACKOFF_S = 0.5
"""First pause before an episode retry, doubled per attempt: a restarting server or a
sandbox pool replacing a dead container gets a moment, a run does not stall."""


async def execute_spec(compiled: CompiledRecipe, spec: EpisodeSpec, *, worker: str | None = None) -> Episode:
    """Run one spec: the single episode path of every executor.

    Model calls inside are pinned to one serving endpoint (when the model is an
    `EndpointPool`) and the endpoints that served the episode go into its metadata.
    An episode that failed for infrastructure reasons (`Episode.error_cause`
    ``infrastructure:...``) runs again from scratch, up to `spec.retries` times, with
    the same index and seeds: a retry that succeeds is the episode a fault-free run
    stores, and only the last attempt is returned; a retried one carries
    `metadata["attempts"]` and the causes it was retried after.
    """
    failures: list[str] = []
    for attempt in range(spec.retries + 1):
        if attempt:
            await asyncio.sleep(RETRY_BACKOFF_S * 2 ** (attempt - 1))
        with endpoint_scope(f"{spec.run_id}/{spec.index}") as notes:
            episode = await run_episode(compiled, index=spec.index, seed=spec.seed, run_id=spec.run_id,
                                        group_seed=spec.group_seed, metadata=spec.metadata)
        episode.metadata.update(notes)
        if not (episode.status == "error" and (episode.error_cause or "").startswith("infrastructure:")):
            break
        failures.append(f"{episode.error_cause}: {(episode.error or '').splitlines()[0][:300]}")
    if attempt:  # only retried episodes carry the notes: a fault-free run stores none
        episode.metadata["attempts"] = attempt + 1
        episode.metadata["retried_after"] = failures[:attempt]
    if worker is not None:
        episode.metadata["worker"] = worker
    return episode


class Executor(ABC):
    """Turns episode specs into finished Episodes, yielded as each one finishes (any order)."""

    @abstractmethod
    def run(self, specs: list[EpisodeSpec]) -> AsyncGenerator[Episode, None]:
        """Yield one Episode per spec, each index once, whatever failed along the way.

        An async generator (`async def` with `yield`): run_recipe closes it (`aclose`) when
        the run stops early, so it must release what it started then."""

    async def aclose(self) -> None:
        """Release workers and clusters this executor started."""


class LocalExecutor(Executor):
    """`concurrency` episodes in flight on the current event loop (the default)."""

    def __init__(self, compiled: CompiledRecipe, *, concurrency: int = 4) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency: must be >= 1, got {concurrency}")
        self.compiled = compiled
        self.concurrency = concurrency

    async def run(self, specs: list[EpisodeSpec]) -> AsyncGenerator[Episode, None]:
        todo = deque(specs)
        out: asyncio.Queue[Episode | BaseException] = asyncio.Queue()

        async def worker() -> None:
            while todo:
                spec = todo.popleft()
                try:
                    out.put_nowait(await execute_spec(self.compiled, spec))
                except BaseException as exc:  # noqa: BLE001 - surfaced to the consumer below
                    out.put_nowait(exc)
                    return

        tasks = [asyncio.create_task(worker()) for _ in range(min(self.concurrency, len(specs)))]
        try:
            for _ in range(len(specs)):
                item = await out.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


class RecipeRef(BaseModel):
    """How a worker process builds the recipe itself: graphs and closures do not pickle, names do."""

    model_config = ConfigDict(extra="forbid")

    recipe: str
    """Built-in recipe name or `path/to/file.py:attr` (the path must exist on every node)."""
    model: str | None = None
    """Model spec for every role (`--model`); None keeps the recipe's own."""
    options: dict[str, Any] = Field(default_factory=dict)
    """Build options (`--set name=value`)."""
    endpoints: list[str] = Field(default_factory=list)
    """Serving endpoints (`--base-url`): each worker spreads its episodes over them."""
    tokenizer: str | None = None
    """`--tokenizer`: rebuild token ids for a server that returns none."""
    retry_deadline_s: float | None = None
    """`--retry-deadline`: how long a model call waits out an outage of every endpoint."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment variables set in each worker before building (offline flags, torch threads)."""

    @model_validator(mode="after")
    def _check(self) -> RecipeRef:
        if self.endpoints and not (self.model or "").startswith("openai:"):
            raise ValueError(f"endpoints: serving endpoints need an openai:<served name> model, got model={self.model!r}")
        return self

    def resolved(self) -> RecipeRef:
        """The same reference with a file path made absolute (workers start elsewhere)."""
        head, sep, attr = self.recipe.rpartition(":")
        if sep and head.endswith(".py"):
            return self.model_copy(update={"recipe": f"{os.path.abspath(head)}:{attr}"})
        return self


class RayConfig(BaseModel):
    """Where and how wide the Ray executor runs."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = None
    """Cluster to join (`auto`, `ray://host:10001`, `host:6379`); None starts a private
    local cluster bound to 127.0.0.1 and stops it when the run ends."""
    workers: int = Field(2, ge=1, le=1024)
    """Rollout worker actors, each with its own models, tools and sandbox pool."""
    concurrency: int = Field(4, ge=1, le=4096)
    """Episodes in flight across all workers; each worker runs ceil(concurrency / workers) at once."""
    worker_cpus: float = Field(1.0, ge=0.0)
    """CPUs Ray reserves per worker actor (placement only)."""
    max_worker_restarts: int = Field(4, ge=0)
    """Workers started to replace dead ones before the run gives up."""
    num_cpus: int | None = Field(None, ge=1)
    """Logical CPUs of a private local cluster (default: workers x worker_cpus, at least 1)."""
    log_to_driver: bool = False
    """Forward worker stdout/stderr to the driver's terminal."""

    @property
    def per_worker(self) -> int:
        return max(1, math.ceil(self.concurrency / self.workers))


def register_endpoints(model: str, endpoints: list[str], **overrides: Any) -> Any:
    """Make `model` (an `openai:` spec) resolve, in this process, to a pool over `endpoints`
    (none: $OPENAI_BASE_URL); `overrides` are ModelConfig fields (tokenizer, timeout...)."""
    from agentplay._registry import register_model
    from agentplay.models import EndpointPool, parse_model_spec

    config = parse_model_spec(model, **{k: v for k, v in overrides.items() if v is not None})
    return register_model(EndpointPool(config, endpoints or None), model)


def loopback_only_ray() -> None:
    """Make a private Ray cluster listen on 127.0.0.1 only (call before `import ray`).

    Ray resolves 127.0.0.1 to the machine's outward address (it plans for more
    nodes) and then listens on every interface; with Ray's cluster mode off,
    the node address stays loopback and so do its servers. Has no effect once
    ray is imported: `ray.init` then listens as Ray decides.
    """
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


_WORKER_LOST = ("RayActorError", "WorkerCrashedError", "NodeDiedError")
"""Ray exceptions meaning the worker (not the episode) is gone: retry the spec elsewhere."""


@dataclass(eq=False)
class _Worker:
    name: str
    actor: Any
    ready: asyncio.Future[Any]
    busy: int = 0
    alive: bool = True


class RayExecutor(Executor):
    """Episodes spread over Ray actors that pull one spec at a time when they have room.

    Only the driver sees results (and stores them): a worker that dies mid-episode
    has its specs handed to another worker, and an index is yielded once however
    often it ran. No scheduler of our own: placement, processes and failure
    detection are Ray's.
    """

    def __init__(self, ref: RecipeRef, config: RayConfig | None = None, *, follow: Any = None) -> None:
        """`follow`: the driver's handle on the served model (a trainer's); workers send
        requests under its current `request_model` (the adapter it loaded last)."""
        self.ref = ref.resolved()
        self.config = config or RayConfig()
        self.follow = follow
        self._workers: list[_Worker] = []
        self._started_ray = False
        self._spawned = 0
        self.retried: list[int] = []
        """Indexes handed to another worker after theirs died (for logs and tests)."""

    @property
    def actors(self) -> list[Any]:
        """Handles of the live worker actors (e.g. to `ray.kill` one in a fault drill)."""
        return [w.actor for w in self._workers if w.alive]

    async def start(self) -> None:
        """Join or start the cluster and start the workers (also done by the first `run`)."""
        if self.config.address is None:
            loopback_only_ray()
        import ray

        if not ray.is_initialized():
            cfg = self.config
            if cfg.address is None:
                cpus = cfg.num_cpus or max(1, math.ceil(cfg.workers * max(cfg.worker_cpus, 0.01)))
                ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=cfg.log_to_driver,
                         _node_ip_address="127.0.0.1", namespace="agentplay")
            else:
                ray.init(address=cfg.address, log_to_driver=cfg.log_to_driver, namespace="agentplay")
            self._started_ray = True
        while len([w for w in self._workers if w.alive]) < self.config.workers:
            self._spawn()
        await asyncio.gather(*(self._await_ready(w) for w in self._workers if w.alive))

    def _spawn(self) -> _Worker:
        import ray

        from agentplay._ray_worker import RolloutWorker

        self._spawned += 1
        name = f"rollout-{self._spawned}"
        actor = ray.remote(RolloutWorker).options(
            num_cpus=self.config.worker_cpus, max_concurrency=self.config.per_worker + 4, max_restarts=0,
        ).remote(self.ref, name)
        # ignore: ray types an actor's methods as the class's own; at run time they are ActorMethods
        setup = actor.setup.remote()  # type: ignore[attr-defined]
        worker = _Worker(name=name, actor=actor, ready=asyncio.wrap_future(setup.future()))
        self._workers.append(worker)
        return worker

    async def _await_ready(self, worker: _Worker) -> None:
        try:
            await worker.ready
        except Exception as exc:
            if _lost(exc):
                self._lose(worker)
                return
            raise ExecutorError(f"worker {worker.name} could not build recipe {self.ref.recipe!r}: {exc}") from exc

    def _lose(self, worker: _Worker) -> None:
        """A dead worker is replaced while the restart budget lasts; its specs were requeued."""
        if not worker.alive:
            return
        worker.alive = False
        if self._spawned - self.config.workers < self.config.max_worker_restarts:
            self._spawn()

    async def run(self, specs: list[EpisodeSpec]) -> AsyncGenerator[Episode, None]:
        await self.start()
        served_name = getattr(self.follow, "request_model", None) if self.follow is not None else None
        # the adapters and their version too: a worker's own pool replays them to a restarted server
        adapters = getattr(self.follow, "adapters", None) if self.follow is not None else None
        adapter_version = getattr(self.follow, "adapter_version", None) if adapters else None
        pending = deque(specs)
        inflight: dict[asyncio.Future[Any], tuple[_Worker, EpisodeSpec]] = {}
        done: set[int] = set()
        try:
            while pending or inflight:
                for w in self._workers:
                    while (w.alive and w.ready.done() and w.busy < self.config.per_worker and pending
                           and len(inflight) < self.config.concurrency):
                        spec = pending.popleft()
                        fut = asyncio.wrap_future(
                            w.actor.run.remote(spec, served_name, adapters, adapter_version).future())
                        inflight[fut] = (w, spec)
                        w.busy += 1
                starting = [w.ready for w in self._workers if w.alive and not w.ready.done()]
                if not inflight and not starting:
                    raise ExecutorError(f"every Ray worker died ({self._spawned} started, restart budget "
                                        f"{self.config.max_worker_restarts}); {len(pending)} episodes not run")
                finished, _ = await asyncio.wait([*inflight, *starting], return_when=asyncio.FIRST_COMPLETED)
                for w in self._workers:
                    if w.alive and w.ready in finished:
                        await self._await_ready(w)
                for fut in finished:
                    if fut not in inflight:
                        continue
                    w, spec = inflight.pop(fut)
                    w.busy -= 1
                    try:
                        episode = fut.result()
                    except Exception as exc:
                        if not _lost(exc):
                            raise ExecutorError(f"worker {w.name} failed on episode {spec.index}: {exc}") from exc
                        pending.appendleft(spec)  # retried on whichever worker has room next
                        self.retried.append(spec.index)
                        self._lose(w)
                        continue
                    if spec.index in done:
                        continue
                    done.add(spec.index)
                    yield episode
        finally:
            for fut in inflight:
                fut.cancel()

    async def aclose(self) -> None:
        import ray

        for w in self._workers:
            if w.alive:
                try:
                    await asyncio.wait_for(asyncio.wrap_future(w.actor.close.remote().future()), 10)
                except Exception:  # noqa: BLE001, S110 - the actor is killed next anyway
                    pass
                ray.kill(w.actor)
                w.alive = False
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False


def _lost(exc: BaseException) -> bool:
    return any(cls.__name__ in _WORKER_LOST for cls in type(exc).__mro__)
