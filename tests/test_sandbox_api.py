"""The public sandbox interface: contract, validation, backend choice, local backends."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile

import pytest
from agentplay.sandbox import Limits, SandboxConfig, SandboxError, SandboxResult, open_sandbox
from conftest import require_docker
from pydantic import ValidationError

from agentplay import sandbox


def test_public_surface_is_pinned():
    assert sandbox.__all__ == sorted(sandbox.__all__)
    assert set(sandbox.__all__) == {
        "BackendCheck",
        "Limits",
        "Sandbox",
        "SandboxConfig",
        "SandboxError",
        "SandboxResult",
        "SandboxUnavailable",
        "Status",
        "build_image",
        "diagnose",
        "open_sandbox",
    }


def test_limits_defaults_and_validation():
    lim = Limits()
    assert (lim.wall_time_s, lim.memory_mb, lim.output_bytes, lim.processes) == (
        10.0,
        256,
        1 << 20,
        64,
    )
    with pytest.raises(ValidationError, match="wall_time_s"):
        Limits(wall_time_s=0)
    with pytest.raises(ValidationError, match="memory_mb"):
        Limits(memory_mb=1)
    with pytest.raises(ValidationError, match="extra"):
        Limits(wall_time=3)


def test_unsafe_backend_needs_explicit_permission():
    with pytest.raises(SandboxError, match="allow_unsafe"):
        open_sandbox("subprocess")
    with pytest.raises(SandboxError, match="backend"):
        open_sandbox("kubernetes")


def test_auto_refuses_without_a_safe_backend():
    cfg = SandboxConfig(image="agentplay-sandbox:not-built", bwrap_path="no-such-bwrap")
    with pytest.raises(SandboxError, match="no safe backend"):
        open_sandbox(config=cfg)
    sb = open_sandbox(config=cfg.model_copy(update={"allow_unsafe": True}))
    assert sb.backend == "subprocess" and "unsafe" in sb.backend_reason


def test_auto_prefers_docker_then_bwrap():
    sb = open_sandbox()
    if sb.backend != "docker":  # no engine or no image here: then bwrap, and it says why
        assert sb.backend == "bwrap" and "docker:" in sb.backend_reason
    no_docker = SandboxConfig(image="agentplay-sandbox:not-built")
    assert open_sandbox(config=no_docker).backend == "bwrap"


@pytest.mark.parametrize("backend", ["docker", "bwrap", "subprocess"])
async def test_contract_on_every_backend(backend):
    if backend == "docker":
        require_docker()
    async with open_sandbox(backend, allow_unsafe=True) as sb:
        res = await sb.run_python(
            "import sys, pathlib\nprint(sys.stdin.read().upper(), pathlib.Path('data/in.txt').read_text())\n"
            "print('warn', file=sys.stderr)",
            stdin="hello",
            files={"data/in.txt": "file!"},
        )
        assert isinstance(res, SandboxResult)
        assert (res.status, res.exit_code, res.stdout, res.stderr) == (
            "ok",
            0,
            "HELLO file!\n",
            "warn\n",
        )
        assert res.backend == backend and res.wall_time_s > 0
        err = await sb.run_python("raise ValueError('boom')")
        assert err.status == "error" and err.exit_code == 1 and "ValueError: boom" in err.stderr
        cmd = await sb.run_command(["sh", "-c", "cat; echo done"], stdin=b"\x00bin\n")
        assert cmd.status == "ok" and cmd.stdout == "\x00bin\ndone\n"
        missing = await sb.run_command(["no-such-program-xyz"])
        assert missing.status == "error" and missing.exit_code == 127
        slow = await sb.run_python("import time; time.sleep(30)", limits=Limits(wall_time_s=0.5))
        assert slow.status == "timeout" and 0.4 < slow.wall_time_s < 3
        flood = await sb.run_python("print('z' * 10**6)", limits=Limits(output_bytes=1000))
        assert (
            flood.status == "output_limit" and flood.stdout_truncated and len(flood.stdout) == 1000
        )
        tail = await sb.run_python("print('q' * 1500)", limits=Limits(output_bytes=1000))
        assert tail.status == "output_limit" and tail.stdout == "q" * 1000, tail
        mem = await sb.run_python("b = bytearray(400 * 2**20)", limits=Limits(memory_mb=128))
        assert mem.status == "oom", mem


async def test_big_code_and_binary_files():
    code = (
        "x = 1\n" * 40_000
        + "import hashlib\nprint(hashlib.sha256(open('blob', 'rb').read()).hexdigest())"
    )
    blob = bytes(range(256)) * 100
    import hashlib

    async with open_sandbox("bwrap") as sb:
        res = await sb.run_python(code, files={"blob": blob})
    assert res.status == "ok", res.stderr
    assert res.stdout.strip() == hashlib.sha256(blob).hexdigest()


@pytest.mark.parametrize("files", [{"../x": "a"}, {"/etc/x": "a"}, {"a/../../x": "a"}, {"ok": 3}])
async def test_bad_files_are_usage_errors(files):
    sb = open_sandbox("bwrap")
    with pytest.raises(SandboxError, match="files"):
        await sb.run_python("print(1)", files=files)


async def test_bad_argv_and_stdin_are_usage_errors():
    sb = open_sandbox("bwrap")
    with pytest.raises(SandboxError, match="argv"):
        await sb.run_command("ls -la")
    with pytest.raises(SandboxError, match="stdin"):
        await sb.run_python("print(1)", stdin=123)


async def test_subprocess_backend_leaves_no_temp_files():
    before = set(os.listdir(tempfile.gettempdir()))
    async with open_sandbox("subprocess", allow_unsafe=True) as sb:
        res = await sb.run_python("open('junk', 'w').write('x'); print(__import__('os').getcwd())")
    assert res.status == "ok"
    assert not os.path.exists(res.stdout.strip())
    assert not {
        e for e in set(os.listdir(tempfile.gettempdir())) - before if e.startswith("agentplay")
    }


async def test_bwrap_runner_failure_is_sandbox_error(monkeypatch):
    """If bwrap itself cannot start the runner, the verdict is sandbox_error, not error."""
    sb = open_sandbox("bwrap")
    monkeypatch.setattr(sb._backend, "python", "/nonexistent/python3")
    res = await sb.run_python("print(1)")
    assert res.status == "sandbox_error" and res.detail, res


async def test_bwrap_concurrent_runs_all_correct():
    async with open_sandbox("bwrap") as sb:
        results = await asyncio.gather(*(sb.run_python(f"print({i} * 3)") for i in range(64)))
    assert [r.stdout for r in results] == [f"{i * 3}\n" for i in range(64)]


def test_cli_doctor_and_run():
    code = "from agentplay.cli._sandbox import sandbox_app; sandbox_app()"
    doc = subprocess.run(
        [sys.executable, "-c", code, "doctor"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert "bwrap" in doc.stdout and "subprocess" in doc.stdout, doc.stdout + doc.stderr
    run = subprocess.run(
        [sys.executable, "-c", code, "run", "print(40 + 2)", "--backend", "bwrap"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert '"status": "ok"' in run.stdout and '"stdout": "42\\n"' in run.stdout, (
        run.stdout + run.stderr
    )


def test_bwrap_sandbox_dies_with_its_process():
    """--die-with-parent: killing the Python process mid-run leaves nothing running."""
    script = (
        "import asyncio, os, sys\n"
        "from agentplay.sandbox import open_sandbox\n"
        "async def main():\n"
        "    sb = open_sandbox('bwrap')\n"
        "    task = asyncio.create_task(sb.run_python('import time; time.sleep(60)'))\n"
        "    await asyncio.sleep(1.0)\n"
        "    print(*sb._backend.used_uids, flush=True)\n"
        "    os._exit(0)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    uids = {int(u) for u in out.stdout.split()}
    assert uids, out.stderr
    import time

    import psutil

    for _ in range(25):
        alive = [
            p
            for p in psutil.process_iter(["uids"])
            if p.info["uids"] and p.info["uids"].real in uids
        ]
        if not alive:
            break
        time.sleep(0.2)
    assert not alive, alive
