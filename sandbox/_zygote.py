"""The sandbox runner's fork server ("zygote"), both ends. Standard library only; copied
into the image beside the runner, which starts it as `python3 -E -s _zygote.py FD`.

Why: CPython start-up is ~11 ms of a ~12 ms warm run. The zygote pays it once, then
clones one child per Python job; the child turns itself into what `python3 -E -s -c
code` would be and runs the code. Why hand-written: no library forks a clean
interpreter into a `python -c` look-alike that is its *parent's* child.

The zygote side (`serve`) is kept small on purpose. Its imports are what a forked job
inherits (the job drops them from `sys.modules`, but the objects stay). A forked
child's interpreter shutdown writes to every object it frees, and each write to a page
still shared with the zygote costs a copy-on-write fault: fewer objects, faster exits
(and `gc.freeze()` keeps exit-time collections off the zygote's objects). It holds no
job data: code, env and limits reach the child in a memfd only the child reads, and
the child runs nothing before the runner's "go", so a zygote that dies mid-request
cannot make a job run twice. The runner side (`ForkServer`) imports the rest lazily:
the runner has it loaded already, the zygote must not.

Differences from a real exec that remain: every job of one zygote shares its hash seed
and address-space layout (a check that needs a new seed, like "two runs agree", asks
for `run_python(..., fresh_interpreter=True)` and is exec'd), `/proc/self/cmdline` shows
the zygote's command line, and `gc.get_freeze_count()` is not 0.
"""

import sys

_FRESH_MODULES = frozenset(sys.modules)  # a fresh `python3 -E -s` has these: jobs get them back

import _signal  # not `signal`: that would pull in enum
import _socket  # not `socket`: that would pull in enum
import ctypes
import gc
import io
import marshal
import os
import resource

NAME = b"agentplay-zygot"  # its /proc comm (15 chars max): tests tell it from a stray by this
_CLONE_PARENT, _PR_SET_DUMPABLE, _PR_SET_NAME = 0x8000, 4, 15
_SYS_CLONE = {"x86_64": 56, "aarch64": 220}
_FDS = 5  # go pipe, spec memfd, stdin, stdout, stderr
_EINVAL = 22
_FORK_TIMEOUT_S = 2.0  # covers the zygote's own start-up on a loaded box
_LOCALE_VARS = ("LC_ALL", "LC_CTYPE", "LANG")  # read once, at interpreter start-up


def serve(fd: int) -> None:
    """Answer each fork request with a child of the runner (CLONE_PARENT) and its pid.

    The child is the runner's, not ours, so exit status, `getppid()` and reaping are
    exactly those of a job the runner exec'd; a job that kills its parent hits the runner,
    which as PID 1 is immune.
    """
    libc = ctypes.PyDLL(None, use_errno=True)  # PyDLL: the GIL stays held, as in os.fork
    libc.syscall.restype = ctypes.c_long
    libc.syscall.argtypes = [ctypes.c_long] * 6
    libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)  # same-uid job code may not ptrace or read us
    libc.prctl(_PR_SET_NAME, NAME, 0, 0, 0)
    nr, api = _SYS_CLONE[os.uname().machine], ctypes.pythonapi
    sock = _socket.socket(fileno=fd)
    gc.freeze()  # everything so far is permanent: exit-time collections in children skip it
    while True:
        try:
            msg, anc, _, _ = sock.recvmsg(16, _socket.CMSG_SPACE(_FDS * 4))
        except OSError:
            os._exit(1)
        if not msg:
            os._exit(0)  # the runner is gone
        fds = []
        for level, kind, data in anc:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                fds += memoryview(data)[: len(data) - len(data) % 4].cast("i").tolist()
        pid = -_EINVAL
        if len(fds) == _FDS:
            api.PyOS_BeforeFork()  # exactly what os.fork does around fork()
            pid = libc.syscall(nr, _CLONE_PARENT | _signal.SIGCHLD, 0, 0, 0, 0)
            if pid == 0:
                api.PyOS_AfterFork_Child()
                sock.close()
                _become_job(libc, *fds)
                return  # the code ended normally: interpreter shutdown, as after `python -c`
            pid = pid if pid > 0 else -ctypes.get_errno()
            api.PyOS_AfterFork_Parent()
        for f in fds:
            os.close(f)
        try:
            sock.send(pid.to_bytes(4, sys.byteorder, signed=True))
        except OSError:
            os._exit(0)


def _become_job(libc, go: int, spec_fd: int, *stdio: int) -> None:
    """In the cloned child: wait for the runner's go, then act as `python3 -E -s -c code`."""
    if os.read(go, 1) != b"1":
        os._exit(125)  # the runner gave up on this fork: the code must never run
    spec = marshal.loads(os.pread(spec_fd, os.fstat(spec_fd).st_size, 0))
    for target, fd in enumerate(stdio):
        os.dup2(fd, target)
    os.closerange(3, 2**31 - 1)  # the only Python object holding an fd (the socket) is closed
    libc.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)  # as after exec: /proc/self is the job's own
    libc.prctl(_PR_SET_NAME, os.path.basename(spec["python"]).encode(), 0, 0, 0)
    os.setsid()
    for res, value in spec["rlimits"]:  # the runner's _limit_pairs: one policy for both paths
        resource.setrlimit(res, (value, value))
    try:  # as the runner's _set_limits: the job is the OOM killer's first choice
        with open("/proc/self/oom_score_adj", "w") as fh:
            fh.write("1000")
    except OSError:
        pass
    os.chdir(spec["cwd"])
    os.environ.clear()  # unsetenv/putenv too, so the job's own subprocesses see the same
    os.environ.update(spec["env"])
    _fresh_stdio()
    _run_as_main(spec)


def _fresh_stdio() -> None:
    """Stdio objects as a fresh interpreter makes them for these fds (ours were for /dev/null:
    seekable, different buffer sizes)."""
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        old = getattr(sys, f"__{name}__")
        buf = open(fd, "rb" if fd == 0 else "wb", closefd=False)  # noqa: SIM115 - it lives on
        buf.raw.name = f"<{name}>"
        line_buffered = fd == 2 or buf.isatty()  # stderr always is since Python 3.9
        stream = io.TextIOWrapper(buf, old.encoding, old.errors, "\n", line_buffered)
        stream.mode = "r" if fd == 0 else "w"
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _run_as_main(spec: dict) -> None:
    """Run the code in a fresh `__main__` as `python -c` / `python file` would, minus our frames."""
    code, path = spec["code"], spec["path"]
    main = type(sys)("__main__")
    main.__builtins__, main.__annotations__ = sys.modules["builtins"], {}
    if path is None:
        main.__loader__ = sys.modules["_frozen_importlib"].BuiltinImporter
        sys.argv = ["-c"]
        sys.orig_argv = [spec["python"], "-E", "-s", "-c", code]
    else:
        external = sys.modules["_frozen_importlib_external"]
        main.__file__, main.__cached__ = path, None
        main.__loader__ = external.SourceFileLoader("__main__", path)
        sys.argv, sys.orig_argv = [path], [spec["python"], "-E", "-s", path]
    sys.path_importer_cache.pop(sys.path[0], None)  # our own dir
    sys.path[0] = "" if path is None else os.path.dirname(os.path.realpath(path))
    for name in [n for n in sys.modules if n not in _FRESH_MODULES]:
        del sys.modules[name]  # the job re-imports what it uses: fresh module state
    sys.modules["__main__"] = main
    try:
        if code is None:
            with open(path, "rb") as fh:
                code = fh.read()
        exec(compile(code, path or "<string>", "exec", dont_inherit=True), main.__dict__)  # noqa: S102
    except SystemExit:
        raise  # the interpreter handles it at exit: the status, or a message and 1
    except BaseException as exc:  # noqa: BLE001 - reported as PyErr_Print does, then exit 1
        _report(exc, exc.__traceback__.tb_next if exc.__traceback__ else None)
        raise SystemExit(1) from None


def _report(exc: BaseException, tb) -> None:
    """sys.excepthook with our frame dropped from the traceback, as PyErr_Print calls it."""
    exc.__traceback__ = tb
    sys.last_type, sys.last_value, sys.last_traceback = type(exc), exc, tb
    try:
        sys.excepthook(type(exc), exc, tb)
    except BaseException as err:  # noqa: BLE001 - what PyErr_Print prints then
        print("Error in sys.excepthook:", file=sys.stderr)
        sys.__excepthook__(type(err), err, err.__traceback__)
        print("\nOriginal exception was:", file=sys.stderr)
        sys.__excepthook__(type(exc), exc, tb)
    if isinstance(exc, KeyboardInterrupt):  # python then dies by SIGINT after shutting down
        import atexit

        if "threading" in sys.modules:
            sys.modules["threading"]._shutdown()
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
        os.kill(os.getpid(), _signal.SIGINT)


class ForkServer:
    """The runner's end: one zygote at a time, replaced when it dies or was tampered with.

    Job code has the uid of the runner and the zygote, so it can lower the zygote's
    rlimits, renice, pin or stop it (jobs would inherit all that): `check` compares it
    with the runner's start-up state (`snapshot(pid) == baseline`) after every job.
    After three failed forks it gives up and the runner execs every job.
    """

    def __init__(self, snapshot, baseline) -> None:
        self.snapshot, self.baseline = snapshot, baseline
        self.proc, self.pidfd, self.sock, self.strikes = None, -1, None, 0
        self.locale = {k: os.environ.get(k) for k in _LOCALE_VARS}  # what it starts with

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self) -> None:
        """Have a zygote running (it boots while the runner waits for the next job)."""
        if self.proc is not None or self.strikes >= 3:
            return
        import subprocess

        mine, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-E", "-s", os.path.abspath(__file__), str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                cwd="/",
                start_new_session=True,
            )
        except OSError:
            mine.close()
            self.strikes += 1
            return
        finally:
            theirs.close()
        self.pidfd, self.sock = os.pidfd_open(self.proc.pid), mine
        mine.settimeout(_FORK_TIMEOUT_S)

    def fits(self, code: str, env: dict) -> bool:
        """A zygote (running) that can stand in for `python -c code` with this env."""
        return (
            self.proc is not None
            and "\0" not in code  # exec refuses it; keep that answer
            and all(env.get(k) == v for k, v in self.locale.items())
        )

    def fork(self, spec: dict, stdio: tuple) -> int | None:
        """A child of the runner that runs `spec` on `stdio`; None (and no zygote) on failure."""
        go_r, go_w = os.pipe()
        memfd = os.memfd_create("agentplay-job")
        fds = [go_r, memfd, *stdio]
        try:
            data = memoryview(marshal.dumps(spec))
            while data:
                data = data[os.write(memfd, data) :]
            rights = b"".join(f.to_bytes(4, sys.byteorder) for f in fds)
            self.sock.sendmsg([b"fork"], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, rights)])
            reply = self.sock.recv(4)
        except OSError:  # dead, stopped or too slow: a child it made sees EOF and never runs
            reply = b""
        finally:
            os.close(go_r)
            os.close(memfd)
        pid = int.from_bytes(reply, sys.byteorder, signed=True) if len(reply) == 4 else -1
        if pid > 0:
            os.write(go_w, b"1")
        os.close(go_w)
        if pid > 0:
            return pid
        self.strikes += 1
        self.stop()  # it may hold copies of the job's pipes: it must not linger
        return None

    def alive(self) -> bool:
        """Not exited, so its pid is still its own (a job may have cycled pids after killing it)."""
        import select

        return self.proc is not None and not select.select([self.pidfd], [], [], 0)[0]

    def check(self) -> None:
        """After a job: stop a zygote that is dead, stopped, signalled or changed."""
        if self.proc is None:
            return
        try:
            if not self.alive():
                raise OSError("exited")
            with open(f"/proc/{self.pid}/status") as fh:
                status = dict(line.split(":", 1) for line in fh if ":" in line)
            pending = int(status["SigPnd"], 16) | int(status["ShdPnd"], 16)
            stopped = status["State"].split()[0] in ("T", "t", "Z", "X")
        except (OSError, KeyError, ValueError, IndexError):
            pending, stopped = 0, True
        if stopped or pending or self.snapshot(self.pid) != self.baseline:
            self.stop()

    def stop(self) -> None:
        if self.proc is None:
            return
        self.sock.close()
        try:
            _signal.pidfd_send_signal(self.pidfd, _signal.SIGKILL)  # no pid-reuse race
        except OSError:
            pass
        self.proc.wait()  # copes with ECHILD when the sweep's waitpid(-1) reaped it first
        os.close(self.pidfd)
        self.proc, self.pidfd, self.sock = None, -1, None


if __name__ == "__main__":
    serve(int(sys.argv[1]))
