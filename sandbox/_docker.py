"""The Docker backend: a bounded, self-healing pool of warm runner containers.

A container goes back to the pool only after a clean run (exit or error, nothing
left running, work dirs wiped). After a timeout, OOM, output flood, pids exhaustion,
stray processes, a sandbox error or `max_uses` runs it is discarded and replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

import docker

from ._container import ENV, LABEL, WIPE, Container, RunnerGone, owner_alive
from ._models import (
    BackendName,
    Limits,
    SandboxConfig,
    SandboxError,
    SandboxResult,
    SandboxUnavailable,
)
from ._wire import host_timeout, make_job, sandbox_error, to_result

log = logging.getLogger(__name__)
_KEEP = {"ok", "error"}


def docker_client(config: SandboxConfig) -> docker.DockerClient:
    """A client whose engine answered a ping; raises SandboxError saying why not."""
    try:
        client = docker.from_env(
            timeout=int(config.docker_timeout_s), max_pool_size=config.pool_max + 4
        )
        client.ping()
    except Exception as exc:
        raise SandboxUnavailable(
            f"backend='docker': no Docker engine answers ({exc}); start one or use backend='bwrap'"
        ) from exc
    return client


def check_image(client: docker.DockerClient, image: str) -> None:
    """The image exists and carries this version's runner (else the protocol may differ)."""
    from ._image import RUNNER_LABEL, runner_hash

    try:
        found = client.images.get(image)
    except docker.errors.ImageNotFound as exc:
        raise SandboxUnavailable(
            f"image: {image!r} is not built here; run `agentplay sandbox build`"
        ) from exc
    if found.labels.get(RUNNER_LABEL) != runner_hash():
        raise SandboxUnavailable(
            f"image: {image!r} has an older sandbox runner; run `agentplay sandbox build`"
        )


def pick_runtime(client: docker.DockerClient, wanted: str) -> str | None:
    runtimes = client.info().get("Runtimes", {})
    if wanted == "runsc" and "runsc" not in runtimes:
        raise SandboxError(
            "runtime='runsc' but the engine has no gVisor runtime; install runsc or use 'auto'"
        )
    return "runsc" if wanted in ("runsc", "auto") and "runsc" in runtimes else None


def reap_stale(client: docker.DockerClient) -> int:
    """Remove sandbox containers whose owning process is gone; return how many."""
    gone = 0
    for c in client.containers.list(all=True, filters={"label": LABEL}, ignore_removed=True):
        if not owner_alive(c.labels.get(LABEL, "")):
            with contextlib.suppress(docker.errors.APIError):
                c.remove(force=True)
                gone += 1
    return gone


class DockerBackend:
    name: BackendName = "docker"

    def __init__(self, config: SandboxConfig, client: docker.DockerClient):
        self.config, self.client = config, client
        self.runtime = pick_runtime(client, config.runtime)
        self._idle: list[Container] = []
        self._all: set[Container] = set()
        self._starting = 0
        self._slots: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task] = set()
        self._janitor: asyncio.Task | None = None
        self._closed = False
        self._changed = asyncio.Event()
        self.used_uids: set[int] = set()
        """Host uids our containers ran as: lets tests and operators audit for leftovers."""

    # -- pool ------------------------------------------------------------------------
    async def _ensure_started(self) -> None:
        if self._slots is not None:
            return
        self._slots = asyncio.Semaphore(self.config.pool_max)
        try:
            reaped = await asyncio.to_thread(reap_stale, self.client)
        except docker.errors.DockerException as exc:  # housekeeping only: never fail a run for it
            log.warning("could not reap stale sandbox containers: %r", exc)
        else:
            if reaped:
                log.info("reaped %d stale sandbox containers", reaped)
        self._janitor = asyncio.create_task(self._shrink_loop())
        self._refill()

    def _notify(self) -> None:
        """Wake runs waiting for a container (one became idle, or one went away)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _acquire(self) -> Container:
        while True:
            if self._idle:
                return self._idle.pop()
            if len(self._all) < self.config.pool_max:
                return await self._new_container()
            await self._changed.wait()  # a warm-up is in flight or a container is leaving

    def _spawn_bg(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _reserve(self) -> Container:
        """Count a container against pool_max before it exists, so nothing overshoots."""
        c = Container(self.client, self.config, self.runtime)
        self.used_uids.add(c.uid)
        self._all.add(c)
        return c

    async def _new_container(self, c: Container | None = None) -> Container:
        c = c or self._reserve()
        self._starting += 1
        try:
            await c.start()
        except BaseException:
            self._all.discard(c)
            self._notify()
            await asyncio.shield(self._quiet_destroy(c))
            raise
        finally:
            self._starting -= 1
        return c

    async def _warm_one(self, c: Container) -> None:
        try:
            await self._new_container(c)
        except Exception as exc:  # noqa: BLE001 - the next run will retry and report
            log.warning("could not warm a sandbox container: %r", exc)
            return
        if self._closed:
            await self._discard(c)
        else:
            self._idle.append(c)
            self._notify()

    def _refill(self) -> None:
        """Keep `pool_min` containers warm without passing `pool_max` in total."""
        want = self.config.pool_min - len(self._idle) - self._starting
        room = self.config.pool_max - len(self._all)
        for _ in range(max(0, min(want, room))):
            if not self._closed:
                c = self._reserve()
                self._starting += 1  # counted now so a second refill does not double up
                self._spawn_bg(self._warm_reserved(c))

    async def _warm_reserved(self, c: Container) -> None:
        self._starting -= 1
        await self._warm_one(c)

    async def _quiet_destroy(self, c: Container) -> None:
        try:
            await c.destroy()
        except Exception as exc:  # noqa: BLE001 - reaped at next start-up
            log.warning("could not remove sandbox container: %r", exc)

    async def _discard(self, c: Container) -> None:
        self._all.discard(c)
        self._notify()
        await self._quiet_destroy(c)

    async def _shrink_loop(self) -> None:
        while True:
            await asyncio.sleep(max(self.config.idle_timeout_s / 2, 0.5))
            cutoff = time.monotonic() - self.config.idle_timeout_s
            while len(self._idle) > self.config.pool_min and self._idle[0].last_used < cutoff:
                c = self._idle.pop(0)
                self._all.discard(c)
                self._spawn_bg(self._quiet_destroy(c))

    @property
    def size(self) -> int:
        """Containers alive right now (idle, busy and starting)."""
        return len(self._all)

    # -- runs --------------------------------------------------------------------------
    def _check_limits(self, limits: Limits) -> None:
        ceiling = self.config.limits
        for field in ("memory_mb", "processes"):
            if getattr(limits, field) > getattr(ceiling, field):
                raise SandboxError(
                    f"limits.{field}={getattr(limits, field)} is above the Docker pool's ceiling "
                    f"{getattr(ceiling, field)}; raise SandboxConfig.limits.{field}"
                )

    async def execute(self, *, limits: Limits, **job_fields: Any) -> SandboxResult:
        self._check_limits(limits)
        job = make_job(
            limits=limits,
            workdir="/work",
            wipe=WIPE,
            env=ENV,
            nproc=limits.processes + 1,
            **job_fields,
        )  # +1: the runner shares the uid
        if self._closed:
            raise SandboxError("the sandbox is closed")
        await self._ensure_started()
        assert self._slots is not None
        async with self._slots:
            return await self._run_in_pool(job, limits)

    async def _run_in_pool(self, job: dict, limits: Limits) -> SandboxResult:
        started = time.monotonic()
        try:
            c = await self._acquire()
        except Exception as exc:  # noqa: BLE001 - the engine failed us, not the code
            return sandbox_error(
                "docker", f"could not start a container: {exc!r}", time.monotonic() - started
            )
        keep = False
        started = time.monotonic()  # the run's own clock starts once it has a container
        try:
            frame = await asyncio.wait_for(
                c.run(job), limits.wall_time_s + self.config.host_grace_s
            )
            result = to_result(frame, "docker")
            keep = (
                result.status in _KEEP
                and not frame.get("strays")
                and not frame.get("dirty")
                and c.uses < self.config.max_uses
            )
            return result
        except TimeoutError:
            return host_timeout("docker", time.monotonic() - started)
        except RunnerGone as exc:
            return sandbox_error("docker", str(exc), time.monotonic() - started)
        except Exception as exc:  # noqa: BLE001 - protocol or engine failure
            return sandbox_error(
                "docker", f"{type(exc).__name__}: {exc}", time.monotonic() - started
            )
        finally:
            if keep and not self._closed:
                c.last_used = time.monotonic()
                self._idle.append(c)
            else:
                self._all.discard(c)
                self._spawn_bg(self._quiet_destroy(c))
                self._refill()
            self._notify()

    async def aclose(self) -> None:
        self._closed = True
        if self._janitor is not None:
            self._janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._janitor
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        self._idle.clear()
        await asyncio.gather(*(self._discard(c) for c in list(self._all)), return_exceptions=True)
