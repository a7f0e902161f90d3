"""The job runner that lives inside the sandbox (a warm container, a bwrap namespace or,
unsafely, the host). Standard library only: it is copied into the image as-is.

Why hand-written: no library runs "one fork per job, setsid + rlimits, killpg at a
deadline, stream output under a byte cap, then wipe and kill strays" behind a
stdio protocol that works without a network. It stays small on purpose.

Protocol: frames on stdin/stdout, each a 4-byte big-endian length then UTF-8 JSON.
The runner first writes {"ready": true}; then for every job frame it writes one
result frame. `--once` handles a single job and exits (bwrap/subprocess backends).

When the runner is PID 1 of its namespace (the Docker and bwrap backends) the kernel
ignores SIGKILL sent to it from inside, so code cannot kill its harness, and
`kill(-1, SIGKILL)` after each job removes every process the code left behind,
including double-forked daemons that escaped the process group.

Fork server: a long-lived runner (not `--once`) keeps `_zygote.py` (copied beside it)
running, an idle interpreter that clones one child per plain Python job, so the job
skips CPython start-up (~11 ms of a ~12 ms run). The child is the runner's own (clone
with CLONE_PARENT): exit status, getppid() and reaping are as for an exec'd job. It
starts only after the runner's "go", so a zygote that dies mid-request can never make a
job run twice; if forking fails the job is exec'd and the result says `"spawn": "exec"`.
Job code has the uid of the runner and the zygote, so after each job both are compared
with their start-up state (rlimits, nice, affinity, scheduler; the zygote also alive,
not stopped, no signal pending): a changed zygote is replaced, a changed runner marks
the result dirty (the host discards the container).
"""

from __future__ import annotations

import base64
import json
import os
import resource
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import time

_HEADER = struct.Struct(">I")
_CHUNK = 65536
_OOM_CONTROL = "/sys/fs/cgroup/memory/memory.oom_control"
_PIDS_EVENTS = "/sys/fs/cgroup/pids/pids.events"
_MAX_ARG = 100_000  # below Linux MAX_ARG_STRLEN (128 KiB) for `python -c`
_PR_SET_DUMPABLE = 4
_HARDENED = False  # set by _harden_self: this process and its forks are not dumpable
_RLIMITS = sorted({getattr(resource, n) for n in dir(resource) if n.startswith("RLIMIT_")})


def _read_exact(stream, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = stream.read(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _read_frame(stream) -> dict | None:
    head = _read_exact(stream, _HEADER.size)
    if head is None:
        return None
    body = _read_exact(stream, _HEADER.unpack(head)[0])
    return None if body is None else json.loads(body)


def _write_frame(stream, obj: dict) -> None:
    body = json.dumps(obj).encode()
    stream.write(_HEADER.pack(len(body)) + body)
    stream.flush()


def _counter(path: str, key: str) -> int:
    """A cgroup v1 event counter visible inside the container (0 when absent)."""
    try:
        with open(path) as fh:
            for line in fh:
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _limit_pairs(lim: dict) -> list:
    """(resource, value) for soft = hard = value: set in the job's process, however it started."""
    mb = 1024 * 1024
    pairs = [
        (resource.RLIMIT_AS, lim["memory_mb"] * mb),
        (resource.RLIMIT_CPU, int(lim["wall_time_s"]) + 1),
        (resource.RLIMIT_FSIZE, lim["file_size_mb"] * mb),
        (resource.RLIMIT_NOFILE, lim["open_files"]),
        (resource.RLIMIT_CORE, 0),
    ]
    if lim.get("nproc"):
        pairs.append((resource.RLIMIT_NPROC, lim["nproc"]))
    return pairs


def _set_limits(lim: dict) -> None:
    """In the exec'd job's process before exec (`_zygote` does the same for forked ones)."""
    for res, value in _limit_pairs(lim):
        resource.setrlimit(res, (value, value))
    # A fork of the hardened runner is not dumpable, so /proc/self is root's and the write
    # below failed silently: open it up now (exec would anyway; nothing untrusted is alive).
    if _HARDENED:
        _prctl(_PR_SET_DUMPABLE, 1)
    try:  # make the job, not the runner, the OOM killer's first choice
        with open("/proc/self/oom_score_adj", "w") as fh:
            fh.write("1000")
    except OSError:
        pass


def _snapshot(pid: int) -> tuple | None:
    """What same-uid job code could change about a process it does not own (None: gone)."""
    try:
        return (
            [resource.prlimit(pid, r) for r in _RLIMITS],
            os.getpriority(os.PRIO_PROCESS, pid),
            os.sched_getaffinity(pid),
            os.sched_getscheduler(pid),
            os.sched_getparam(pid).sched_priority,
        )
    except OSError:
        return None


def _write_files(workdir: str, files: dict) -> None:
    for rel, b64 in files.items():
        path = os.path.join(workdir, rel)
        os.makedirs(os.path.dirname(path) or workdir, exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(base64.b64decode(b64))


def _unlock(top: str) -> None:
    """Give us back rwx on every dir under `top` (code may chmod 000 its own dirs)."""
    stack = [top]
    while stack:
        path = stack.pop()
        try:
            os.chmod(path, 0o700)
            with os.scandir(path) as it:
                stack.extend(e.path for e in it if e.is_dir(follow_symlinks=False))
        except OSError:
            pass


def _wipe(dirs: list) -> bool:
    """Empty each dir; True when everything went (a False discards the container)."""
    clean = True
    for d in dirs:
        try:
            for name in os.listdir(d):
                p = os.path.join(d, name)
                if os.path.isdir(p) and not os.path.islink(p):
                    _unlock(p)
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    os.unlink(p)
            clean = clean and not os.listdir(d)
        except OSError:
            clean = False
    return clean


def _live_pids(exclude: set) -> list:
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in exclude:
            try:
                with open(f"/proc/{name}/stat") as fh:
                    state = fh.read().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state not in ("Z", "X"):
                pids.append(int(name))
    return pids


def _kill_everything(pid: int, pid1: bool, keep: set) -> tuple:
    """Kill the job's group and, as PID 1, every other process.

    Returns (returncode, strays seen, swept). The job is reaped before the orphan
    sweep so its exit status is not lost to waitpid(-1). `kill(-1)` would take the
    zygote (`keep`) too, so it runs only when something else is still alive.
    """
    me = os.getpid()
    strays = len(_live_pids({me, pid} | keep)) if pid1 else 0
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
    returncode = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    if not pid1:
        return returncode, strays, False
    _reap_orphans()
    if not _live_pids({me} | keep):
        return returncode, strays, False
    for _ in range(200):  # a fork bomb may race the first sweeps
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        _reap_orphans()
        if not _live_pids({me}):
            break
        time.sleep(0.005)
    return returncode, strays, True


def _reap_orphans() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


class _Capped:
    """One output stream kept up to a byte cap; the rest is counted, not stored."""

    def __init__(self, cap: int):
        self.cap, self.data, self.over = cap, bytearray(), False

    def feed(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        if len(chunk) > room:
            self.over = True
        self.data += chunk[: max(room, 0)]


def _pump(pid: int, wfd: int, rfds: tuple, stdin: bytes, lim: dict, deadline: float):
    """Feed stdin (closing `wfd`), read both pipes and wait for exit; return (outs, reason)."""
    outs = {fd: _Capped(lim["output_bytes"]) for fd in rfds}
    sel = selectors.DefaultSelector()
    for fd in outs:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    pidfd = os.pidfd_open(pid)
    sel.register(pidfd, selectors.EVENT_READ)
    os.set_blocking(wfd, False)
    if stdin:
        sel.register(wfd, selectors.EVENT_WRITE)
    else:
        os.close(wfd)
        wfd = -1
    view, reason = memoryview(stdin), None
    try:
        while reason is None:
            left = deadline - time.monotonic()
            if left <= 0:
                reason = "timeout"
                break
            for key, _ in sel.select(left):
                fd = key.fd
                if fd == pidfd:
                    reason = "exited"
                elif fd == wfd:
                    try:
                        view = view[os.write(wfd, view[:_CHUNK]) :]
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:  # the code stopped reading: fine
                        view = view[:0]
                    if not view:
                        sel.unregister(wfd)
                        os.close(wfd)
                        wfd = -1
                else:
                    chunk = os.read(fd, _CHUNK)
                    if not chunk:
                        sel.unregister(fd)
                    else:
                        outs[fd].feed(chunk)
                        if outs[fd].over:
                            reason = "output_limit"
    finally:
        sel.close()
        os.close(pidfd)
        if wfd >= 0:
            os.close(wfd)
    return outs, reason


def _drain(outs: dict, budget_s: float) -> None:
    """After the kill, read what the dead writers left in the pipes (bounded)."""
    sel = selectors.DefaultSelector()
    for fd in outs:
        sel.register(fd, selectors.EVENT_READ)
    end = time.monotonic() + budget_s
    while sel.get_map() and time.monotonic() < end:
        for key, _ in sel.select(max(end - time.monotonic(), 0)):
            try:
                chunk = os.read(key.fd, _CHUNK)
            except BlockingIOError:
                continue
            if chunk:
                outs[key.fd].feed(chunk)
            else:
                sel.unregister(key.fd)
    sel.close()


def _main_file(job: dict) -> str | None:
    """Code too long for an argv entry goes to a file in the work dir (both spawn paths)."""
    if len(job["code"].encode()) < _MAX_ARG:
        return None
    path = os.path.join(job["workdir"], "__agentplay_main__.py")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(job["code"])
    return path


def _exec(job: dict, env: dict, lim: dict, theirs: tuple) -> int:
    if job.get("code") is None:
        argv = list(job["argv"])
    else:
        python, path = job.get("python") or sys.executable, _main_file(job)
        argv = [python, "-E", "-s"] + (["-c", job["code"]] if path is None else [path])
    proc = subprocess.Popen(
        argv,
        cwd=job["workdir"],
        env=env,
        stdin=theirs[0],
        stdout=theirs[1],
        stderr=theirs[2],
        start_new_session=True,
        close_fds=True,
        preexec_fn=lambda: _set_limits(lim),  # noqa: PLW1509 - the runner has one thread
    )
    proc.returncode = 0  # reaped by pid in _kill_everything, like a zygote child: not by Popen
    return proc.pid


def _classify(reason, returncode: int, stderr: bytes, oom_killed: bool) -> str:
    if oom_killed:
        return "oom"  # the container's cgroup OOM killer fired during this run: say so first
    if reason in ("timeout", "output_limit"):
        return reason
    if returncode == -signal.SIGXCPU:
        return "timeout"  # RLIMIT_CPU: the code burnt its time budget on several cores
    tail = stderr.rstrip().rsplit(b"\n", 1)[-1]
    if returncode != 0 and tail.startswith(b"MemoryError"):
        return "oom"  # allocation only fails here because RLIMIT_AS said so
    return "ok" if returncode == 0 else "error"


def _start(job: dict, env: dict, lim: dict, forks, stdio: tuple) -> tuple:
    """(pid, how): forked by the zygote when it can stand in for exec, else exec'd."""
    code = job.get("code")
    fork_ok = code is not None and not job.get("python") and not job.get("fresh")  # fresh: new hash seed
    if forks is not None and fork_ok and forks.fits(code, env):
        path = _main_file(job)
        spec = {"code": None if path else code, "path": path, "cwd": job["workdir"], "env": env}
        pid = forks.fork(dict(spec, rlimits=_limit_pairs(lim), python=sys.executable), stdio)
        if pid is not None:
            return pid, "zygote"
    return _exec(job, env, lim, stdio), "exec"


def run_job(job: dict, forks=None, baseline: tuple | None = None) -> dict:
    """Run one job. `forks`: the fork server (`_zygote.ForkServer`) or None to exec;
    `baseline`: this runner's `_snapshot` at start, to tell if the code changed it."""
    lim, pid1 = dict(job["limits"]), os.getpid() == 1
    if forks is not None and forks.pid and lim.get("nproc"):
        lim["nproc"] += 1  # the zygote shares the uid too
    oom_before = _counter(_OOM_CONTROL, "oom_kill")
    pids_before = _counter(_PIDS_EVENTS, "max")
    _write_files(job["workdir"], job.get("files") or {})
    env = dict(job.get("env") or {})
    (r0, w0), (r1, w1), (r2, w2) = os.pipe(), os.pipe(), os.pipe()
    try:
        pid, how = _start(job, env, lim, forks, (r0, w1, w2))
    except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
        # Like a shell: a missing (127) or unrunnable (126) program is the caller's error.
        # Any other OSError (fork failed, out of memory) propagates: a sandbox_error.
        for fd in (w0, r1, r2):
            os.close(fd)
        clean = _wipe(job["wipe"])
        return {
            "status": "error",
            "exit_code": 127 if isinstance(exc, FileNotFoundError) else 126,
            "stdout": "",
            "wall_time_s": 0.0,
            "stderr": base64.b64encode(f"{exc}\n".encode()).decode(),
            "stdout_truncated": False,
            "stderr_truncated": False,
            "strays": 0,
            "dirty": not clean,
            "spawn": "exec",
        }
    finally:
        for fd in (r0, w1, w2):
            os.close(fd)
    started = time.monotonic()  # the code's clock starts once it exists
    stdin = base64.b64decode(job.get("stdin") or "")
    outs, reason = _pump(pid, w0, (r1, r2), stdin, lim, started + lim["wall_time_s"])
    wall = time.monotonic() - started
    keep = {forks.pid} if forks is not None and forks.alive() else set()  # spared by the sweep
    returncode, strays, swept = _kill_everything(pid, pid1, keep)
    if swept and forks is not None:
        forks.stop()  # kill(-1) took it too
    _drain(outs, 0.5)
    if reason != "timeout" and any(o.over for o in outs.values()):
        reason = "output_limit"  # cut output is always reported, even if the cut came last
    out, err = outs[r1], outs[r2]
    os.close(r1)
    os.close(r2)
    oom = _counter(_OOM_CONTROL, "oom_kill") > oom_before
    pids_hit = _counter(_PIDS_EVENTS, "max") > pids_before
    status = _classify(reason, returncode, bytes(err.data), oom)
    clean = _wipe(job["wipe"])
    tampered = baseline is not None and _snapshot(0) != baseline  # code changed the runner
    return {
        "status": status,
        "exit_code": returncode,
        "stdout": base64.b64encode(bytes(out.data)).decode(),
        "stderr": base64.b64encode(bytes(err.data)).decode(),
        "stdout_truncated": out.over,
        "stderr_truncated": err.over,
        "wall_time_s": wall,
        "strays": strays,
        "dirty": not clean or pids_hit or oom or tampered,
        "spawn": how,
    }


def _prctl(option: int, value: int) -> None:
    try:
        import ctypes  # only when needed: the --once runners of bwrap start faster without

        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _harden_self() -> None:
    """Stop code from signalling, ptracing or reading the runner (same uid otherwise)."""
    global _HARDENED
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as PID 1, SIG_DFL means "ignored"
    _prctl(_PR_SET_DUMPABLE, 0)
    _HARDENED = True


def _fork_server(once: bool):
    """One job per runner (bwrap, subprocess) gains nothing from a fork server."""
    if once:
        return None
    try:
        from _zygote import ForkServer  # beside us in the image (bwrap binds the runner alone)
    except ImportError:
        return None
    return ForkServer(_snapshot, _snapshot(0))


def main() -> None:
    once = "--once" in sys.argv
    if os.getpid() == 1:
        _harden_self()
    forks = _fork_server(once)
    if forks is not None:
        forks.start()  # it boots while the host sends the first job
    rin, rout = sys.stdin.buffer, sys.stdout.buffer
    _write_frame(
        rout, {"ready": True, "python": sys.executable, "version": list(sys.version_info[:3])}
    )
    while True:
        job = _read_frame(rin)
        if job is None:
            return
        try:
            if forks is not None:
                forks.start()  # replaces one that failed or was stopped after the last job
            result = run_job(job, forks, forks and forks.baseline)
        except Exception as exc:  # noqa: BLE001 - reported to the host as sandbox_error
            result = {"status": "sandbox_error", "error": f"runner: {exc!r}", "dirty": True}
        _write_frame(rout, result)
        if once:
            return
        if forks is not None:  # off the critical path: the result is out
            forks.check()
            if result["status"] in ("ok", "error") and not (result["strays"] or result["dirty"]):
                forks.start()  # now, as the host will keep this container


if __name__ == "__main__":
    main()
