"""One warm sandbox container and the runner session attached to its stdio.

The container's main process is the runner, as PID 1 (so code cannot kill it and
`kill(-1)` sweeps every stray). We hold one attach socket to its stdin/stdout for
the container's whole life: a run is one frame each way over a socket that is
already open, which is what makes a warm run cost milliseconds instead of the
~100 ms of a `docker exec`. `stdin_once` plus `auto_remove` mean that if this
process dies, the socket closes, the runner reads EOF and the container goes away.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
import time
from typing import Any

import docker
from docker.types import Ulimit

from agentplay.errors import AgentplayError

from ._models import Limits, SandboxConfig
from ._wire import decode_frames, encode_frame

LABEL = "agentplay.sandbox"
"""Every sandbox container carries this label; its value is `<hostname>:<pid>:<start>` of the owner."""
WIPE = ["/work", "/tmp", "/dev/shm"]
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/work", "TMPDIR": "/tmp", "LANG": "C.UTF-8"}
_DOCKER_HEADER = struct.Struct(">BxxxI")


def owner_tag() -> str:
    """Who owns a container: host, pid and process start time (pids get reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid())}"


def _start_ticks(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def owner_alive(tag: str) -> bool:
    """False only when the owner is provably gone (same host, pid dead or reused)."""
    host, _, rest = tag.partition(":")
    pid, _, ticks = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    return _start_ticks(int(pid)) == ticks


def container_spec(config: SandboxConfig, runtime: str | None, uid: int) -> dict[str, Any]:
    """Hardening every pool container gets (see the issue's list; tested in test_sandbox_docker).

    Returned as `create_container` + `host_config` arguments of the low-level API,
    because only that one exposes `stdin_once`.
    """
    lim: Limits = config.limits
    tmpfs = f"rw,nosuid,nodev,size={config.tmpfs_mb}m,mode=1777"
    # tmpfs pages are charged to the container, so the cap leaves room for full tmpfs.
    mem = f"{lim.memory_mb + 3 * config.tmpfs_mb + 64}m"
    mb = 1024 * 1024
    host: dict[str, Any] = {
        "auto_remove": True,
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {"/work": tmpfs, "/tmp": tmpfs},
        "shm_size": f"{config.tmpfs_mb}m",
        "mem_limit": mem,
        "memswap_limit": mem,
        "pids_limit": lim.processes + 8,
        "nano_cpus": int(config.cpus * 1e9),
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "ulimits": [
            Ulimit(name="fsize", soft=lim.file_size_mb * mb, hard=lim.file_size_mb * mb),
            Ulimit(name="nofile", soft=lim.open_files, hard=lim.open_files),
            Ulimit(name="core", soft=0, hard=0),
        ],
        # The runner is the init: PID 1, reaps orphans, immune to kill from inside.
        "init": False,
    }
    if runtime:
        host["runtime"] = runtime
    return {
        "user": f"{uid}:{uid}",
        "stdin_open": True,
        "detach": False,  # with stdin_open this makes the SDK set StdinOnce (no direct knob)
        "tty": False,
        "environment": ENV,
        "labels": {LABEL: owner_tag()},
        "host_config": host,
    }


class RunnerGone(AgentplayError):
    """The runner's stream ended or broke: a sandbox failure, not the code's."""


class Container:
    """A started container with an open runner session."""

    def __init__(self, client: docker.DockerClient, config: SandboxConfig, runtime: str | None):
        self.client, self.config, self.runtime = client, config, runtime
        # A private uid per container makes RLIMIT_NPROC count this container only.
        self.uid = random.randint(200_000, 2_000_000_000)
        self.id: str | None = None
        self.uses = 0
        self.last_used = time.monotonic()
        self._raw: Any = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._buf = bytearray()
        self._log = bytearray()

    async def start(self) -> None:
        """Create, attach (before start, so nothing is missed), start, await the ready frame."""
        spec = container_spec(self.config, self.runtime, self.uid)
        api = self.client.api
        spec["host_config"] = api.create_host_config(**spec["host_config"])
        created = await asyncio.to_thread(api.create_container, self.config.image, **spec)
        self.id = created["Id"]
        params = {"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1}
        self._raw = await asyncio.to_thread(self.client.api.attach_socket, self.id, params)
        sock = self._raw._sock  # the SDK hands back a SocketIO; asyncio needs the socket
        self._reader, self._writer = await asyncio.open_connection(sock=sock, limit=1 << 20)
        await asyncio.to_thread(self.client.api.start, self.id)
        ready = await asyncio.wait_for(self._next_frame(), self.config.docker_timeout_s)
        if not ready.get("ready"):
            raise RunnerGone(f"unexpected first frame {ready!r}")

    async def _next_frame(self) -> dict:
        assert self._reader is not None
        while True:
            frames = decode_frames(self._buf)
            if frames:
                if len(frames) > 1:
                    raise RunnerGone("runner sent more than one frame for one job")
                return frames[0]
            try:
                head = await self._reader.readexactly(_DOCKER_HEADER.size)
                kind, size = _DOCKER_HEADER.unpack(head)
                payload = await self._reader.readexactly(size)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                raise RunnerGone(
                    f"runner stream closed ({exc!r}); stderr: {self.stderr_tail()}"
                ) from exc
            if kind == 1:
                self._buf += payload
            else:  # runner's own stderr: kept short for sandbox_error details
                self._log = (self._log + payload)[-4000:]

    def stderr_tail(self) -> str:
        return self._log.decode("utf-8", "replace")[-1000:]

    async def run(self, job: dict) -> dict:
        """Send one job and return the runner's result frame (no timeout here)."""
        assert self._writer is not None
        self.uses += 1
        self._writer.write(encode_frame(job))
        await self._writer.drain()
        return await self._next_frame()

    async def destroy(self) -> None:
        """Kill and remove; safe to call twice and on a container that never started."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        if self.id is not None:
            cid, self.id = self.id, None
            try:
                await asyncio.to_thread(self.client.api.remove_container, cid, force=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as exc:
                if "already in progress" not in str(exc):
                    raise
                # Closing stdin ended the runner, so the engine's auto-remove got there
                # first. Wait for it: returning now would leave the container listed
                # (state "removing") after the sandbox says it is closed.
                await asyncio.to_thread(self._wait_removed, cid)

    def _wait_removed(self, cid: str) -> None:
        try:
            self.client.api.wait(cid, timeout=30, condition="removed")
        except docker.errors.NotFound:
            pass  # already gone
