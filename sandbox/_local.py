"""Local backends: bubblewrap namespaces, and the plain subprocess one (unsafe).

Both start the runner with `--once` per run; there is no pool because a bwrap
sandbox costs a few milliseconds to make. In bwrap the runner is PID 1 of fresh
namespaces (no network, nothing of the host but read-only /usr and the
interpreter), runs as a private host uid when we are root (so RLIMIT_NPROC really
counts this run only: the kernel never applies it to root), and dies with us.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from ._models import BackendName, Limits, SandboxConfig, SandboxError, SandboxResult
from ._wire import (
    RUNNER_PATH,
    decode_frames,
    encode_frame,
    host_timeout,
    make_job,
    sandbox_error,
    to_result,
)

_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/work",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
}
_ROOT_LINKS = ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")


def bwrap_python() -> str:
    """The interpreter bwrap runs: the system one under /usr when there is one."""
    real = os.path.realpath(sys.executable)
    if real.startswith("/usr/"):
        return real
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else real


def find_bwrap(config: SandboxConfig) -> str:
    path = shutil.which(config.bwrap_path)
    if path is None:
        raise SandboxError(f"bwrap_path: {config.bwrap_path!r} not found; install bubblewrap")
    return path


async def _talk(proc: asyncio.subprocess.Process, job: dict, deadline: float) -> dict:
    """Send the job, read frames until the result (the first frame is `ready`)."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(encode_frame(job))
    await proc.stdin.drain()
    proc.stdin.close()
    buf = bytearray()
    while True:
        chunk = await asyncio.wait_for(
            proc.stdout.read(1 << 16), max(deadline - time.monotonic(), 0.01)
        )
        if not chunk:
            raise EOFError("runner exited without a result")
        buf += chunk
        for frame in decode_frames(buf):
            if not frame.get("ready"):
                return frame


class _OnceBackend:
    """Shared driver: spawn a runner per run, give it one job, bound it from the host."""

    name: BackendName

    def __init__(self, config: SandboxConfig):
        self.config = config
        self._slots = asyncio.Semaphore(max(config.pool_max, 1) * 2)
        self.used_uids: set[int] = set()
        """Host uids runs were started as: lets tests and operators audit for leftovers."""

    def _argv(self, uid: int | None, runner_fd: int) -> list[str]:
        raise NotImplementedError

    def _workdir(self) -> tuple[str, list[str], dict[str, str]]:
        # Nothing to wipe: the tmpfs dirs vanish with the namespaces when the run ends.
        return "/work", [], dict(_ENV)

    async def execute(self, *, limits: Limits, **job_fields) -> SandboxResult:
        workdir, wipe, env = self._workdir()
        try:
            job = make_job(
                limits=limits,
                workdir=workdir,
                wipe=wipe,
                env=env,
                nproc=limits.processes + 1,
                **job_fields,
            )
            async with self._slots:
                return await self._spawn_and_run(job, limits)
        finally:
            self._cleanup(workdir)

    def _cleanup(self, workdir: str) -> None:
        pass

    def _spawn_kwargs(self) -> tuple[int | None, dict]:
        return None, {}

    async def _spawn_and_run(self, job: dict, limits: Limits) -> SandboxResult:
        started = time.monotonic()
        uid, extra = self._spawn_kwargs()
        rfd = os.memfd_create("agentplay-runner", 0)
        try:
            os.write(rfd, RUNNER_PATH.read_bytes())
            os.lseek(rfd, 0, os.SEEK_SET)
            proc = await asyncio.create_subprocess_exec(
                *self._argv(uid, rfd),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                pass_fds=(rfd,),
                **extra,
            )
        except OSError as exc:
            return sandbox_error(self.name, f"could not start the {self.name} runner: {exc}")
        finally:
            os.close(rfd)
        deadline = started + limits.wall_time_s + self.config.host_grace_s
        try:
            frame = await _talk(proc, job, deadline)
            return to_result(frame, self.name)
        except TimeoutError:
            return host_timeout(self.name, time.monotonic() - started)
        except (EOFError, ConnectionError, ValueError) as exc:
            err = await _stderr_tail(proc)
            return sandbox_error(
                self.name, f"{exc}; runner stderr: {err}", time.monotonic() - started
            )
        finally:
            await _finish(proc)

    async def aclose(self) -> None:
        return None


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except (OSError, ValueError):
        return []


async def _finish(proc: asyncio.subprocess.Process) -> None:
    """Let the runner exit on its own, else kill it from the inside out.

    Killing bwrap first would orphan its PID-1 child to the host's reaper (a zombie
    where that reaper is lax); killing the child first lets bwrap reap it and exit.
    """
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), 1.0)
        return
    for child in _children(proc.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), 2.0)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


async def _stderr_tail(proc: asyncio.subprocess.Process) -> str:
    assert proc.stderr is not None
    with contextlib.suppress(Exception):
        await _finish(proc)
        data = await asyncio.wait_for(proc.stderr.read(), 1.0)
        return data.decode("utf-8", "replace")[-1000:]
    return ""


class BwrapBackend(_OnceBackend):
    name: BackendName = "bwrap"

    def __init__(self, config: SandboxConfig):
        super().__init__(config)
        self.bwrap = find_bwrap(config)
        self.python = bwrap_python()

    def _spawn_kwargs(self) -> tuple[int | None, dict]:
        if os.geteuid() != 0:
            return None, {}
        uid = random.randint(200_000, 2_000_000_000)
        self.used_uids.add(uid)
        return uid, {"user": uid, "group": uid, "extra_groups": []}

    def _argv(self, uid: int | None, runner_fd: int) -> list[str]:
        size = str(self.config.tmpfs_mb * 1024 * 1024)
        argv = [
            self.bwrap,
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--as-pid-1",
            "--uid",
            "1000",
            "--gid",
            "1000",
            "--ro-bind",
            "/usr",
            "/usr",
        ]
        for link in _ROOT_LINKS:
            if os.path.islink(link):
                argv += ["--symlink", os.readlink(link), link]
            elif os.path.isdir(link):
                argv += ["--ro-bind", link, link]
        prefix = str(Path(self.python).resolve().parent.parent)
        if not prefix.startswith("/usr"):
            argv += ["--ro-bind", prefix, prefix]
        argv += [
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--size",
            size,
            "--tmpfs",
            "/work",
            "--size",
            size,
            "--tmpfs",
            "/tmp",
            "--size",
            size,
            "--tmpfs",
            "/dev/shm",
            "--ro-bind-data",
            str(runner_fd),
            "/opt/agentplay/runner.py",
            "--remount-ro",
            "/",
            "--chdir",
            "/work",
            "--clearenv",
        ]
        for key, value in _ENV.items():
            argv += ["--setenv", key, value]
        return argv + [self.python, "-E", "-s", "/opt/agentplay/runner.py", "--once"]


class SubprocessBackend(_OnceBackend):
    """Same runner and rlimits on the host itself. NOT a security boundary: code can
    read the host's files, reach the network and leave daemons that escaped its group."""

    name: BackendName = "subprocess"

    def _workdir(self) -> tuple[str, list[str], dict[str, str]]:
        work = tempfile.mkdtemp(prefix="agentplay-sbx-")
        env = dict(_ENV, HOME=work, TMPDIR=work)
        return work, [work], env

    def _cleanup(self, workdir: str) -> None:
        shutil.rmtree(workdir, ignore_errors=True)

    def _argv(self, uid: int | None, runner_fd: int) -> list[str]:
        return [sys.executable, "-E", "-s", f"/proc/self/fd/{runner_fd}", "--once"]
