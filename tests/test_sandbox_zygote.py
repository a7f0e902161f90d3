"""The runner's fork server: warm Python runs skip interpreter start-up, and nothing else
changes. Parity is checked against the exec path in the same container: `run_command`
with `python3 -E -s -c code` is exactly what the runner exec'd before the fork server.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from agentplay.sandbox import Limits, SandboxConfig, open_sandbox
from agentplay.sandbox._wire import RUNNER_PATH, decode_frames, encode_frame, make_job
from conftest import require_docker

PARITY = {
    "traceback": "x = 1\n1 / 0",
    "chained": "try:\n    {}['k']\nexcept KeyError:\n    raise ValueError('v')",
    "syntax_error": "x = (",
    "exit_3": "import sys\nsys.exit(3)",
    "exit_msg": "import sys\nsys.exit('msg')",
    "keyboard_interrupt": "raise KeyboardInterrupt",
    "excepthook": "import sys\nsys.excepthook = lambda t, v, tb: print('hooked', t.__name__)\n1 / 0",
    "atexit": "import atexit\natexit.register(print, 'at exit')\nprint('body')",
    "thread": "import threading, time\n"
    "def late():\n    time.sleep(0.2)\n    print('thread done')\n"
    "threading.Thread(target=late).start()\nprint('main done')",
    "shutdown_flushes": "import os\nout = os.fdopen(os.dup(1), 'w')\nout.write('unflushed')\n"
    "class Bye:\n    def __del__(self):\n        print('del at exit')\nbye = Bye()",
    "main_module": "import sys\nprint(__name__, sys.argv, sorted(globals()), __loader__, __spec__)\n"
    "print(sys.orig_argv, sys.path, sys.flags)",
    "modules": "import sys\nprint(sorted(sys.modules))",
    "stdin": "import sys\nprint(sys.stdin.read().upper(), sys.stdin.seekable(), sys.stdin.name)",
    "stdio": "import sys\nfor s in (sys.stdin, sys.stdout, sys.stderr):\n"
    "    print(s.name, s.mode, s.encoding, s.errors, s.line_buffering, s.seekable(),"
    " type(s.buffer).__name__, s.buffer.raw.closefd, s is getattr(sys, '__' + s.name[1:-1] + '__'))",
    "env": "import os\nprint(sorted(os.environ.items()), os.getcwd(), oct(os.umask(0o22)))",
    "process": "import os, resource, signal\n"
    "print(os.getppid(), os.getpgid(0) == os.getpid() == os.getsid(0), open('/proc/self/comm').read())\n"
    "print([resource.getrlimit(getattr(resource, r)) for r in dir(resource) if r.startswith('RLIMIT_')])\n"
    "print(open('/proc/self/oom_score_adj').read(), os.getpriority(os.PRIO_PROCESS, 0))\n"
    "print([signal.getsignal(s) for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)])\n"
    "status = open('/proc/self/status').read().splitlines()\n"
    "keep = ('Sig', 'Shd', 'Cap', 'NoNewPrivs', 'Seccomp', 'Threads', 'Uid', 'Gid')\n"
    "print([line for line in status if line.startswith(keep)])",
}


def _docker_sandbox():
    require_docker()
    return open_sandbox(config=SandboxConfig(backend="docker", pool_min=1, pool_max=1))


async def test_warm_runs_behave_like_a_fresh_python():
    async with _docker_sandbox() as sb:
        python = (await sb.run_python("import sys; print(sys.executable)")).stdout.strip()
        for name, code in PARITY.items():
            forked = await sb.run_python(code, stdin="abc")
            execd = await sb.run_command([python, "-E", "-s", "-c", code], stdin="abc")
            assert (forked.spawn, execd.spawn) == ("zygote", "exec"), name
            assert (forked.status, forked.exit_code, forked.stdout, forked.stderr) == (
                execd.status,
                execd.exit_code,
                execd.stdout,
                execd.stderr,
            ), f"{name}: {forked!r} != {execd!r}"


async def test_fork_server_results_spelled_out():
    """The parity above, pinned to what `python -c` is known to print."""
    async with _docker_sandbox() as sb:
        tb = await sb.run_python(PARITY["traceback"])
        assert tb.spawn == "zygote" and tb.status == "error" and tb.exit_code == 1
        assert tb.stderr.startswith(
            'Traceback (most recent call last):\n  File "<string>", line 2, in <module>\n'
        ), tb.stderr
        assert tb.stderr.endswith("ZeroDivisionError: division by zero\n")
        assert "zygote" not in tb.stderr and tb.stderr.count('File "') == 1
        exit3 = await sb.run_python(PARITY["exit_3"])
        assert (exit3.status, exit3.exit_code) == ("error", 3)
        msg = await sb.run_python(PARITY["exit_msg"])
        assert (msg.exit_code, msg.stderr) == (1, "msg\n")
        assert (await sb.run_python(PARITY["atexit"])).stdout == "body\nat exit\n"
        assert (await sb.run_python(PARITY["thread"])).stdout == "main done\nthread done\n"
        main = await sb.run_python("import sys; print(__name__, sys.argv)")
        assert main.stdout == "__main__ ['-c']\n"
        echo = await sb.run_python("print(input()[::-1])", stdin="olleh\n")
        assert echo.stdout == "hello\n"
        env = await sb.run_python("import os; print(sorted(os.environ))")
        assert env.stdout == "['HOME', 'LANG', 'PATH', 'TMPDIR']\n"
        rnd = [(await sb.run_python("import random; print(random.random())")).stdout for _ in "ab"]
        assert rnd[0] != rnd[1], "each job must seed its own random module"
        big = "import sys\n" + "x = 1\n" * 30_000 + "print(sys.argv, __file__, sys.path[0])\n1 / 0"
        res = await sb.run_python(big)
        path = "/work/__agentplay_main__.py"
        assert res.spawn == "zygote" and res.exit_code == 1, res
        assert res.stdout == f"['{path}'] {path} /work\n"
        assert f'File "{path}", line 30003, in <module>' in res.stderr


async def test_fresh_interpreter_runs_get_their_own_hash_seed():
    """Forks of one zygote share its string-hash seed; `fresh_interpreter` runs do not,
    which is what a "two runs agree" determinism check needs."""
    probe = "print(hash('agentplay'))"
    async with _docker_sandbox() as sb:  # one container: every warm run is the same zygote's fork
        warm = [await sb.run_python(probe) for _ in range(3)]
        fresh = [await sb.run_python(probe, fresh_interpreter=True) for _ in range(3)]
    assert [r.spawn for r in warm] == ["zygote"] * 3 and [r.spawn for r in fresh] == ["exec"] * 3
    assert len({r.stdout for r in warm}) == 1
    assert len({r.stdout for r in fresh}) == 3, [r.stdout for r in fresh]


async def test_a_killed_fork_server_is_replaced():
    find = (
        "import os\nprint([p for p in os.listdir('/proc') if p.isdigit()"
        " and open(f'/proc/{p}/comm').read().strip() == 'agentplay-zygot'])"
    )
    async with _docker_sandbox() as sb:
        (first,) = eval((await sb.run_python(find)).stdout)
        killed = await sb.run_python(f"import os\nos.kill({first}, 9)\nprint('killed')")
        assert killed.status == "ok" and killed.spawn == "zygote", killed
        after = await sb.run_python(find)
        assert after.spawn == "zygote", after
        (second,) = eval(after.stdout)
        assert second != first
        start = "import os; print(open('/proc/1/stat').read().split()[21])"  # runner start time
        runs = await asyncio.gather(*(sb.run_python(start) for _ in range(3)))
        assert len({r.stdout for r in runs}) == 1, "the same container served every run"


PEEK = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
(zygote,) = [p for p in os.listdir("/proc") if p.isdigit()
             and open(f"/proc/{p}/comm").read().strip() == "agentplay-zygot"]
for what in ("environ", "mem", "fd"):
    try:
        os.listdir(f"/proc/{zygote}/fd") if what == "fd" else open(f"/proc/{zygote}/{what}", "rb").read(1)
        print(what, "OPEN")
    except PermissionError:
        print(what, "blocked")
print("ptrace", libc.ptrace(16, int(zygote), 0, 0), ctypes.get_errno())  # PTRACE_ATTACH
print("self", open("/proc/self/environ", "rb").read() != b"")  # a job's own /proc is its own
"""


async def test_job_code_cannot_read_or_trace_the_fork_server():
    async with _docker_sandbox() as sb:
        res = await sb.run_python(PEEK)
        assert res.spawn == "zygote", res
        assert res.stdout.splitlines() == [
            "environ blocked",
            "mem blocked",
            "fd blocked",
            "ptrace -1 1",  # EPERM: it is not dumpable
            "self True",
        ], res


# -- the runner on the host: fallback to exec when the fork server fails ---------------


def _run_host_runner(tmp_path: Path, zygote_source: str | None, codes: list[str]) -> list[dict]:
    """Start the real runner (multi-job mode) beside a given `_zygote.py`; return results."""
    runner = tmp_path / "_runner.py"
    shutil.copy(RUNNER_PATH, runner)
    if zygote_source is not None:
        (tmp_path / "_zygote.py").write_text(zygote_source)
    work = tmp_path / "work"
    work.mkdir()
    env = {"PATH": "/usr/bin:/bin", "LANG": os.environ.get("LANG", "C.UTF-8")}
    frames = b"".join(
        encode_frame(
            make_job(
                code=code,
                argv=None,
                stdin=None,
                files=None,
                limits=Limits(wall_time_s=10),
                workdir=str(work),
                wipe=[str(work)],
                nproc=None,
                env=env,
            )
        )
        for code in codes
    )
    done = subprocess.run(
        [sys.executable, "-E", "-s", str(runner)],
        input=frames,
        capture_output=True,
        timeout=60,
        env=env,  # the runner's locale matches the jobs': the fork server may serve them
        check=False,
    )
    out = decode_frames(bytearray(done.stdout))
    assert out and out[0]["ready"], done.stderr
    return out[1:]


def test_host_runner_uses_the_real_fork_server(tmp_path):
    source = (RUNNER_PATH.parent / "_zygote.py").read_text()
    results = _run_host_runner(tmp_path, source, ["print(6 * 7)", "import os; print(os.getppid())"])
    assert [r["spawn"] for r in results] == ["zygote", "zygote"]
    assert [r["status"] for r in results] == ["ok", "ok"]


@pytest.mark.parametrize(
    ("name", "serve"),
    [("missing", None), ("crashes", "raise SystemExit(3)"), ("hangs", "time.sleep(30)")],
)
def test_jobs_fall_back_to_exec_when_the_fork_server_fails(tmp_path, name, serve):
    """No `_zygote.py`, or a zygote process that dies or never answers (2 s timeout): every
    job still runs, exec'd, and after three failed forks the runner stops trying."""
    import base64

    source = None
    if serve is not None:
        real = (RUNNER_PATH.parent / "_zygote.py").read_text()
        main = "    serve(int(sys.argv[1]))\n"
        assert main in real
        source = real.replace(main, f"    import time\n    {serve}\n")
    results = _run_host_runner(tmp_path, source, ["print(6 * 7)"] * 4)
    assert [r["status"] for r in results] == ["ok"] * 4, results
    assert [base64.b64decode(r["stdout"]) for r in results] == [b"42\n"] * 4
    assert {r["spawn"] for r in results} == {"exec"}
