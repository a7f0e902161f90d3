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


def _rlimits(lim: dict):
    def apply() -> None:
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
        for res, value in pairs:
            resource.setrlimit(res, (value, value))
        try:  # make the job, not the runner, the OOM killer's first choice
            with open("/proc/self/oom_score_adj", "w") as fh:
                fh.write("1000")
        except OSError:
            pass

    return apply


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


def _kill_everything(proc: subprocess.Popen, pid1: bool) -> tuple:
    """Kill the job's group and, as PID 1, every other process.

    Returns (returncode, strays seen). The job is reaped by Popen before the
    orphan sweep so its exit status is not lost to waitpid(-1).
    """
    strays = len(_live_pids({os.getpid(), proc.pid})) if pid1 else 0
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    returncode = proc.wait()
    if pid1:
        for _ in range(200):  # a fork bomb may race the first sweeps
            try:
                os.kill(-1, signal.SIGKILL)
            except OSError:
                pass
            _reap_orphans()
            if not _live_pids({os.getpid()}):
                break
            time.sleep(0.005)
    return returncode, strays


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


def _pump(proc, stdin: bytes, lim: dict, deadline: float):
    """Feed stdin, read both pipes and wait for exit; return (outs, reason)."""
    outs = {
        proc.stdout.fileno(): _Capped(lim["output_bytes"]),
        proc.stderr.fileno(): _Capped(lim["output_bytes"]),
    }
    sel = selectors.DefaultSelector()
    for fd in outs:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    pidfd = os.pidfd_open(proc.pid)
    sel.register(pidfd, selectors.EVENT_READ)
    wfd = proc.stdin.fileno()
    os.set_blocking(wfd, False)
    if stdin:
        sel.register(wfd, selectors.EVENT_WRITE)
    else:
        proc.stdin.close()
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
                        proc.stdin.close()
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


def _argv(job: dict) -> list:
    if job.get("code") is None:
        return list(job["argv"])
    python = job.get("python") or sys.executable
    code = job["code"]
    if len(code.encode()) < _MAX_ARG:
        return [python, "-E", "-s", "-c", code]
    path = os.path.join(job["workdir"], "__agentplay_main__.py")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(code)
    return [python, "-E", "-s", path]


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


def run_job(job: dict) -> dict:
    lim, pid1 = job["limits"], os.getpid() == 1
    started = time.monotonic()
    deadline = started + lim["wall_time_s"]
    oom_before = _counter(_OOM_CONTROL, "oom_kill")
    pids_before = _counter(_PIDS_EVENTS, "max")
    _write_files(job["workdir"], job.get("files") or {})
    env = dict(job.get("env") or {})
    try:
        proc = subprocess.Popen(
            _argv(job),
            cwd=job["workdir"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_rlimits(lim),  # noqa: PLW1509 - the runner has one thread
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
        # Like a shell: a missing (127) or unrunnable (126) program is the caller's error.
        # Any other OSError (fork failed, out of memory) propagates: a sandbox_error.
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
        }
    outs, reason = _pump(proc, base64.b64decode(job.get("stdin") or ""), lim, deadline)
    wall = time.monotonic() - started
    returncode, strays = _kill_everything(proc, pid1)
    _drain(outs, 0.5)
    if reason != "timeout" and any(o.over for o in outs.values()):
        reason = "output_limit"  # cut output is always reported, even if the cut came last
    out, err = outs[proc.stdout.fileno()], outs[proc.stderr.fileno()]
    for pipe in (proc.stdin, proc.stdout, proc.stderr):  # explicit, not left to GC
        pipe.close()
    oom = _counter(_OOM_CONTROL, "oom_kill") > oom_before
    pids_hit = _counter(_PIDS_EVENTS, "max") > pids_before
    status = _classify(reason, returncode, bytes(err.data), oom)
    clean = _wipe(job["wipe"])
    return {
        "status": status,
        "exit_code": returncode,
        "stdout": base64.b64encode(bytes(out.data)).decode(),
        "stderr": base64.b64encode(bytes(err.data)).decode(),
        "stdout_truncated": out.over,
        "stderr_truncated": err.over,
        "wall_time_s": wall,
        "strays": strays,
        "dirty": not clean or pids_hit or oom,
    }


def _harden_self() -> None:
    """Stop code from signalling, ptracing or reading the runner (same uid otherwise)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as PID 1, SIG_DFL means "ignored"
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0
    except (OSError, AttributeError):
        pass


def main() -> None:
    once = "--once" in sys.argv
    if os.getpid() == 1:
        _harden_self()
    rin, rout = sys.stdin.buffer, sys.stdout.buffer
    _write_frame(
        rout, {"ready": True, "python": sys.executable, "version": list(sys.version_info[:3])}
    )
    while True:
        job = _read_frame(rin)
        if job is None:
            return
        try:
            result = run_job(job)
        except Exception as exc:  # noqa: BLE001 - reported to the host as sandbox_error
            result = {"status": "sandbox_error", "error": f"runner: {exc!r}", "dirty": True}
        _write_frame(rout, result)
        if once:
            return


if __name__ == "__main__":
    main()
