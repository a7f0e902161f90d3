"""The Docker backend's pool and hardening, on the real engine."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time

import pytest
from agentplay.sandbox import Limits, SandboxConfig, SandboxError, build_image, open_sandbox
from agentplay.sandbox._container import LABEL, owner_tag
from conftest import require_docker

pytestmark = pytest.mark.docker


@pytest.fixture
def client():
    return require_docker()


def _ours(client):
    return client.containers.list(
        all=True, filters={"label": f"{LABEL}={owner_tag()}"}, ignore_removed=True
    )


def test_build_is_idempotent(client):
    summary = build_image("agentplay-sandbox:latest", "auto", say=lambda m: None)
    assert "up to date" in summary, summary
    labels = client.images.get("agentplay-sandbox:latest").labels
    assert labels["agentplay.sandbox.runner"]


async def test_container_hardening(client):
    cfg = SandboxConfig(
        backend="docker", pool_min=1, pool_max=1, limits=Limits(memory_mb=128, processes=16)
    )
    async with open_sandbox(config=cfg) as sb:
        res = await sb.run_python("import os; print(os.getuid(), os.getgid(), os.getpid())")
        uid, gid, _ = res.stdout.split()
        assert res.status == "ok" and int(uid) >= 200_000 and int(gid) >= 200_000
        (c,) = _ours(client)
        hc, cfg_ = c.attrs["HostConfig"], c.attrs["Config"]
        assert hc["NetworkMode"] == "none"
        assert hc["ReadonlyRootfs"] is True
        assert hc["CapDrop"] == ["ALL"]
        assert "no-new-privileges" in hc["SecurityOpt"]
        assert hc["Memory"] == hc["MemorySwap"] > 0
        assert hc["PidsLimit"] == 16 + 8
        assert hc["NanoCpus"] == 1_000_000_000
        assert set(hc["Tmpfs"]) == {"/work", "/tmp"}
        assert {u["Name"] for u in hc["Ulimits"]} == {"fsize", "nofile", "core"}
        assert cfg_["User"] == f"{uid}:{gid}"
        assert cfg_["StdinOnce"] is True and hc["AutoRemove"] is True
        top = c.top(ps_args="-o pid,args")["Processes"]
        assert any("runner.py" in p[-1] for p in top)
        # capabilities really are gone inside
        caps = await sb.run_command(["grep", "Cap", "/proc/self/status"])
        assert "CapEff:\t0000000000000000" in caps.stdout, caps.stdout
        nnp = await sb.run_command(["grep", "NoNewPrivs", "/proc/self/status"])
        assert nnp.stdout.split() == ["NoNewPrivs:", "1"]
    assert not _ours(client)


async def test_pool_reuses_and_replaces(client):
    cfg = SandboxConfig(backend="docker", pool_min=1, pool_max=1, max_uses=3)
    async with open_sandbox(config=cfg) as sb:
        pid_of = "import os; print(open('/proc/1/stat').read().split()[21])"  # runner start time
        starts = [(await sb.run_python(pid_of)).stdout for _ in range(3)]
        assert len(set(starts)) == 1, "clean runs should reuse one warm container"
        after_uses = (await sb.run_python(pid_of)).stdout
        assert after_uses not in starts, "max_uses should retire the container"
        before = {c.id for c in _ours(client)}
        t = await sb.run_python("while True: pass", limits=Limits(wall_time_s=0.5))
        assert t.status == "timeout"
        ok = await sb.run_python("print('fresh')")
        assert ok.status == "ok" and ok.stdout == "fresh\n"
        assert not before & {c.id for c in _ours(client)}, "a timed-out container must be replaced"
    assert not _ours(client)


async def test_pool_grows_and_shrinks(client):
    cfg = SandboxConfig(backend="docker", pool_min=1, pool_max=3, idle_timeout_s=1.0)
    async with open_sandbox(config=cfg) as sb:
        runs = [sb.run_python("import time; time.sleep(0.5); print('x')") for _ in range(6)]
        results = await asyncio.gather(*runs)
        assert all(r.status == "ok" for r in results), results
        assert sb._backend.size == 3, "pool should grow to pool_max under load"
        await asyncio.sleep(3.0)
        assert sb._backend.size == 1, "idle containers above pool_min should go"
        assert len(_ours(client)) == 1


async def test_64_concurrent_runs_all_correct(client):
    cfg = SandboxConfig(backend="docker", pool_min=2, pool_max=4)
    async with open_sandbox(config=cfg) as sb:
        code = "import sys; n = int(sys.stdin.read()); print(n * n)"
        results = await asyncio.gather(*(sb.run_python(code, stdin=str(i)) for i in range(64)))
    assert [r.status for r in results] == ["ok"] * 64, [r for r in results if r.status != "ok"][:2]
    assert [int(r.stdout) for r in results] == [i * i for i in range(64)]
    assert not _ours(client)


async def test_host_enforces_the_wall_clock_too(client, monkeypatch):
    """If the in-container deadline never fires, the host kills the container itself."""
    from agentplay.sandbox import _docker

    real_make_job = _docker.make_job

    def stuck_runner_job(**kw):  # push the runner's own deadline past the host's
        job = real_make_job(**kw)
        job["limits"]["wall_time_s"] = 60
        return job

    cfg = SandboxConfig(backend="docker", pool_min=0, pool_max=1, host_grace_s=0.5)
    async with open_sandbox(config=cfg) as sb:
        monkeypatch.setattr(_docker, "make_job", stuck_runner_job)
        res = await sb.run_python("import time; time.sleep(60)", limits=Limits(wall_time_s=1))
        monkeypatch.undo()
        assert res.status == "timeout" and "host" in (res.detail or ""), res
        assert 1.4 < res.wall_time_s < 5
        assert (await sb.run_python("print(7)")).stdout == "7\n"
    assert not _ours(client)


async def test_destroy_returns_once_the_engine_has_removed_the_container(client):
    """Closing a container's stdin ends its runner, and the engine's auto-remove races our
    own remove ("removal already in progress"): destroy must still return only when the
    container is gone, or a closed sandbox leaves containers listed behind it."""
    import docker

    cfg = SandboxConfig(backend="docker", pool_min=0, pool_max=1)
    async with open_sandbox(config=cfg) as sb:
        # the engine's removal takes tens of ms after EOF: sweep into that window
        for delay in (0.0, 0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.06, 0.08):
            res = await sb.run_python("print(1)")
            assert res.stdout == "1\n", res
            (c,) = sb._backend._all
            sb._backend._idle.remove(c)  # taken out of the pool, as a retiring container is
            cid = c.id
            c._writer.close()  # EOF on the runner's stdin: it exits, the engine starts removing
            c._raw.close()
            await asyncio.sleep(delay)
            await sb._backend._discard(c)
            with pytest.raises(docker.errors.NotFound):
                client.api.inspect_container(cid)
    assert not _ours(client)


async def test_runner_death_is_sandbox_error_not_code_error(client):
    cfg = SandboxConfig(backend="docker", pool_min=1, pool_max=1)
    async with open_sandbox(config=cfg) as sb:
        await sb.run_python("print(1)")
        (c,) = _ours(client)
        run = asyncio.create_task(sb.run_python("import time; time.sleep(5)"))
        await asyncio.sleep(0.5)
        c.kill()  # the engine loses the container mid-run
        res = await run
        assert res.status == "sandbox_error" and res.detail, res
        assert (await sb.run_python("print(8)")).stdout == "8\n"


def test_containers_die_with_their_process(client):
    """A process killed without aclose(): its attach socket closes, the runner exits, the
    container auto-removes (stdin_once + auto_remove)."""
    script = (
        "import asyncio, os\n"
        "from agentplay.sandbox import open_sandbox\n"
        "from agentplay.sandbox._container import owner_tag\n"
        "async def main():\n"
        "    sb = open_sandbox('docker')\n"
        "    res = await sb.run_python('print(1)')\n"
        "    print(owner_tag(), res.stdout.strip(), flush=True)\n"
        "    os._exit(0)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=60
    )
    tag, answer = out.stdout.split()
    assert answer == "1", out.stderr
    for _ in range(50):
        if not client.containers.list(
            all=True, filters={"label": f"{LABEL}={tag}"}, ignore_removed=True
        ):
            break
        time.sleep(0.2)
    assert not client.containers.list(
        all=True, filters={"label": f"{LABEL}={tag}"}, ignore_removed=True
    )


def test_reap_stale_removes_dead_owners_only(client):
    from agentplay.sandbox._docker import reap_stale

    dead = f"{socket.gethostname()}:999999999:1"
    stale = client.containers.create("agentplay-sandbox:latest", labels={LABEL: dead})
    live = client.containers.create("agentplay-sandbox:latest", labels={LABEL: owner_tag()})
    try:
        assert reap_stale(client) >= 1
        ids = {
            c.id
            for c in client.containers.list(all=True, filters={"label": LABEL}, ignore_removed=True)
        }
        assert stale.id not in ids and live.id in ids
    finally:
        live.remove(force=True)


def test_docker_errors_are_usage_errors(client):
    with pytest.raises(SandboxError, match="image"):
        open_sandbox("docker", config=SandboxConfig(image="agentplay-sandbox:does-not-exist"))
    sb = open_sandbox("docker", config=SandboxConfig(limits=Limits(memory_mb=128)))
    with pytest.raises(SandboxError, match="limits.memory_mb"):
        asyncio.run(sb.run_python("print(1)", limits=Limits(memory_mb=512)))

