"""EndpointPool against a real `agentplay serve` (SmolLM2) and a real dead port, no Ray needed:
pinning, spreading by load, failover, coming back after a health check, adapter broadcast."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from _servers import AGENTPLAY, SERVED, agentplay_env

from agentplay.models import (
    EndpointPool,
    ModelSpecError,
    NoLiveEndpointError,
    SamplingParams,
    load_model,
    parse_model_spec,
)
from agentplay.models._endpoints import endpoint_scope
from agentplay.traces import TraceStore

EXAMPLE = f"{Path(__file__).resolve().parents[1] / 'examples' / 'my_recipe.py'}:build"
MSG = [{"role": "user", "content": "Say hi."}]
FAST = SamplingParams(max_tokens=2, temperature=0.0)


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"  # closed again: connection refused


@pytest.fixture
def server(smollm2_server):
    return smollm2_server  # the session's `agentplay serve` (conftest.py): only sampled from here


def test_spec_form_and_bad_input():
    pool = load_model(SERVED, base_url="http://127.0.0.1:1/v1, http://127.0.0.1:2/v1")
    assert isinstance(pool, EndpointPool) and pool.urls == ["http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"]
    with pytest.raises(ModelSpecError, match="base_url: duplicate"):
        load_model(SERVED, base_url="http://a/v1,http://a/v1")
    with pytest.raises(ModelSpecError, match="openai:<name>"):
        EndpointPool(parse_model_spec("local:smollm2-135m-instruct"), ["http://a/v1"])


async def test_episode_pinned_spread_and_failover(server):
    dead = _dead_url()
    pool = load_model(SERVED, base_url=f"{dead},{server}")
    try:
        with endpoint_scope("run/0") as notes:
            first = await pool.chat(MSG, sampling=FAST)  # least loaded: the dead one first, then failover
            second = await pool.chat(MSG, sampling=FAST)
        assert first.choices[0].completion_token_ids and second.choices[0].completion_token_ids
        assert notes["endpoints"] == [dead, server] and notes["endpoint_failovers"] == 1
        assert pool.live_urls == [server] and "Connect" in pool.status()[0]["last_error"]
        with endpoint_scope("run/1") as later:
            await pool.chat(MSG, sampling=FAST)
        assert later["endpoints"] == [server] and "endpoint_failovers" not in later  # out of rotation
        assert all(s["pinned"] == 0 and s["inflight"] == 0 for s in pool.status())  # scopes released
    finally:
        await pool.aclose()


async def test_load_spreads_concurrent_episodes(server):
    """Two live endpoints (the same server under two spellings): concurrent episodes split evenly."""
    alias = server.replace("127.0.0.1", "localhost")
    pool = load_model(SERVED, base_url=f"{server},{alias}")

    async def episode(i: int) -> list[str]:
        with endpoint_scope(f"r/{i}") as notes:
            for _ in range(2):
                await pool.chat(MSG, sampling=FAST)
        return notes["endpoints"]

    try:
        used = await asyncio.gather(*(episode(i) for i in range(4)))
    finally:
        await pool.aclose()
    assert all(len(u) == 1 for u in used)  # pinned: one server per episode
    assert sorted(u[0] for u in used) == sorted([server, server, alias, alias])


async def test_all_down_is_a_clear_error_and_health_check_brings_one_back():
    port_sock = socket.socket()
    port_sock.bind(("127.0.0.1", 0))
    port = port_sock.getsockname()[1]
    port_sock.close()
    url = f"http://127.0.0.1:{port}/v1"
    pool = EndpointPool(parse_model_spec(SERVED, retry_deadline_s=0.5), [url], cooldown_s=0.2, max_cooldown_s=0.5)
    try:
        with pytest.raises(NoLiveEndpointError, match=f"no endpoint answered within retry_deadline_s=0.5.*{port}"):
            await pool.chat(MSG, sampling=FAST)
        # a server comes up on that port: the background probe puts it back in rotation
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", _TINY_SERVER, str(port),
                                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(150):
                if pool.live_urls:
                    break
                await asyncio.sleep(0.1)
            assert pool.live_urls == [url]
        finally:
            proc.kill()
            await proc.wait()
    finally:
        await pool.aclose()


_TINY_SERVER = """
import sys, fastapi, uvicorn
app = fastapi.FastAPI()
@app.get("/v1/models")
def models():
    return {"object": "list", "data": [{"id": "smollm2-135m-instruct", "object": "model"}]}
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def test_cli_local_executor_with_endpoints_records_them(tmp_path, server):
    """Same episode path without Ray: `--endpoints` on the local executor, one endpoint dead from the start."""
    dead = _dead_url()
    db = tmp_path / "local.db"
    out = subprocess.run([*AGENTPLAY, "run", EXAMPLE, "--model", SERVED, "--endpoints", f"{dead},{server}",
                          "--episodes", "2", "--concurrency", "2", "--store", str(db), "--run-id", "l",
                          "--set", "max_tokens=4", "--set", "n_solvers=1", "--no-progress"],
                         check=False, env=agentplay_env(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    with TraceStore(db) as store:
        episodes = list(store.episodes("l"))
    assert sorted(e.index for e in episodes) == [0, 1] and all(e.status == "ok" for e in episodes)
    assert all(e.metadata["endpoints"][-1] == server and "worker" not in e.metadata for e in episodes)


@pytest.mark.parametrize(("args", "message"), [
    (["--executor", "spark"], "Invalid value for '--executor'"),  # a choice list since #20
    (["--base-url", "http://127.0.0.1:1/v1"], "--base-url: needs --model openai:"),
    (["--endpoints", "http://127.0.0.1:1/v1"], "--base-url: needs --model openai:"),  # the deprecated alias
    (["--address", "auto"], "--address: only used with --executor ray"),
])
def test_cli_scale_options_are_checked(tmp_path, args, message):
    out = subprocess.run([*AGENTPLAY, "run", EXAMPLE, "--store", str(tmp_path / "x.db"), *args],
                         check=False, env=agentplay_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and message in " ".join(out.stderr.split()), out.stderr[-2000:]
