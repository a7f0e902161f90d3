"""Local backends: bubblewrap namespaces, and the plain subprocess one (unsafe).

Both start the runner with `--once` per run; there is no pool because a bwrap
sandbox costs a few milliseconds to make. In bwrap the runner is PID 1 of fresh
namespaces (no network, nothing of the host but read-only /usr and the
interpreter), runs as a private host uid when we are root (so RLIMIT_NPROC really
counts this run only: the kernel never applies it to root), and dies with us.
Code inside cannot make user namespaces of its own (`--disable-userns`: inside
one it would be uid 0 with every capability over its mounts), and sees of the
interpreter only what it needs to start: the binary, the standard library and
the shared libraries they load, never the folder it was installed in (a
/opt or home prefix holds other software) nor any site-packages.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

from ._models import BackendName, Limits, SandboxConfig, SandboxResult, SandboxUnavailable
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


def bwrap_python(config: SandboxConfig | None = None) -> str:
    """The interpreter bwrap runs: `config.bwrap_python`, else the system one under /usr
    when there is one, else this process's."""
    if config is not None and config.bwrap_python:
        found = shutil.which(config.bwrap_python)
        if found is None:
            raise SandboxUnavailable(f"bwrap_python: {config.bwrap_python!r} not found")
        return os.path.realpath(found)
    real = os.path.realpath(sys.executable)
    if real.startswith("/usr/"):
        return real
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else real


_SYSTEM = ("/usr/", "/lib", "/bin/", "/sbin/")
"""Bound as a whole already (read-only /usr and the root links)."""

_PATHS_PROBE = (
    "import json, sys, sysconfig\n"
    "paths = sysconfig.get_paths()\n"
    "print(json.dumps({'stdlib': paths['stdlib'], 'platstdlib': paths['platstdlib'],"
    " 'dynload': [p for p in sys.path if p.endswith('lib-dynload')],"
    " 'site': [p for p in sys.path if p.endswith(('site-packages', 'dist-packages'))]"
    " + [paths['purelib'], paths['platlib']]}))"
)


def _system(path: str) -> bool:
    return path.startswith(_SYSTEM)


@functools.cache
def interpreter_mounts(python: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(paths to bind read-only, site-package dirs to hide) for running `python` in bwrap.

    Asks the interpreter where its standard library is, and `ldd` which shared
    libraries it and its extension modules load; binds those files one by one
    when they live outside the system dirs (a pyenv, conda or /opt install),
    so the sandbox never sees the rest of the install prefix. Installed packages
    (site-packages, dist-packages) are hidden: the runner needs only the stdlib,
    as in the Docker image.
    """
    try:
        out = subprocess.run([python, "-E", "-s", "-c", _PATHS_PROBE], capture_output=True, text=True,
                             timeout=30, check=True).stdout
        paths = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise SandboxUnavailable(f"bwrap_python: {python} does not start: {exc}") from exc
    binds: list[str] = []
    for path in (python, paths["stdlib"], paths["platstdlib"], *paths["dynload"]):
        if os.path.exists(path) and not _system(path) and path not in binds:
            binds.append(path)
    if not _system(python):  # its shared libraries (libpython, conda's libssl...) where they are
        objects = [python] + [os.path.join(d, f) for d in paths["dynload"] if os.path.isdir(d)
                              for f in sorted(os.listdir(d)) if f.endswith(".so")]
        for lib in _shared_libraries(objects):
            if not _system(lib) and lib not in binds:
                binds.append(lib)
    hide = tuple(dict.fromkeys(p for p in paths["site"] if os.path.isdir(p)))
    return tuple(binds), hide


def _shared_libraries(objects: list[str]) -> list[str]:
    """Resolved paths of the shared libraries `objects` load (via `ldd`; none without it)."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return []
    found: list[str] = []
    for start in range(0, len(objects), 64):
        try:
            out = subprocess.run([ldd, *objects[start:start + 64]], capture_output=True, text=True,
                                 timeout=60, check=False).stdout
        except (OSError, subprocess.SubprocessError):
            return found
        for line in out.splitlines():
            _, arrow, rest = line.partition("=>")
            target = rest.split("(")[0].strip() if arrow else ""
            if target.startswith("/") and target not in found:
                found.append(target)
    return found


def find_bwrap(config: SandboxConfig) -> str:
    path = shutil.which(config.bwrap_path)
    if path is None:
        raise SandboxUnavailable(f"bwrap_path: {config.bwrap_path!r} not found; install bubblewrap "
                                 "(`apt-get install bubblewrap`)")
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

    async def execute(self, *, limits: Limits, **job_fields: Any) -> SandboxResult:
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
        self.python = bwrap_python(config)
        self.binds, self.hidden = interpreter_mounts(self.python)

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
            "--unshare-user",  # explicit: --disable-userns needs it (--unshare-all only tries)
            "--disable-userns",
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
        ]
        # after the tmpfs dirs, which would otherwise cover an interpreter installed under /tmp
        for path in self.binds:  # the interpreter's own files, never its whole install prefix
            argv += ["--ro-bind", os.path.realpath(path), path]
        for path in self.hidden:  # installed packages: an empty read-only dir in their place
            argv += ["--perms", "0555", "--tmpfs", path, "--remount-ro", path]
        argv += [
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
