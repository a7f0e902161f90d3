"""Transient model-server faults cost nothing (issue #19, item 3).

A real `agentplay serve` (SmolLM2) behind tests/_fault_proxy.py, called by the
real openai client through `EndpointPool`: each fault class alone, then a run of
episodes at a 30% fault rate whose stored episodes must equal a fault-free run
with the same seeds, then (slow) the server killed and restarted mid-run.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from _fault_proxy import FAULT_KINDS, TIMEOUT_S, FaultProxy, fingerprint, run_episodes
from _servers import SERVED, start_server, stop_server

from agentplay.models import SamplingParams, load_model
from agentplay.traces import Episode

MSG = [{"role": "user", "content": "Say hi."}]


@pytest.fixture(scope="module")
def server():
    proc, url = start_server()
    yield url
    stop_server(proc)


@pytest.fixture(scope="module")
def reference(server, tmp_path_factory):
    """Six episodes straight from the server, no proxy: what every faulty run must reproduce."""
    db = tmp_path_factory.mktemp("ref") / "ref.db"
    return run_episodes(server, db, "ref", episodes=6)


@pytest.mark.parametrize("kind", FAULT_KINDS)
async def test_each_fault_class_is_retried_to_the_right_answer(server, kind):
    """One request meets `kind`; the call still returns what the server answers fault-free."""
    sampling = SamplingParams(max_tokens=3, temperature=0.8, seed=11)
    with FaultProxy(server, rate=0.0, script=[kind], stall_s=TIMEOUT_S + 1.5) as proxy:
        pool = load_model(SERVED, base_url=proxy.url, timeout=TIMEOUT_S, retry_deadline_s=60)
        try:
            faulty = await pool.chat(MSG, sampling=sampling)
        finally:
            await pool.aclose()
        assert proxy.injected[kind] == 1 and proxy.forwarded >= 1
    direct = load_model(SERVED, base_url=server)
    try:
        clean = await direct.chat(MSG, sampling=sampling)
    finally:
        await direct.aclose()
    assert faulty.prompt_token_ids == clean.prompt_token_ids and faulty.prompt_token_ids
    assert faulty.choice.completion_token_ids == clean.choice.completion_token_ids
    assert faulty.choice.text == clean.choice.text


@pytest.mark.parametrize("kind", ["503-html", "reset"])
async def test_a_stream_that_fails_before_its_first_byte_is_retried(server, kind):
    from agentplay.models import ChatResult

    sampling = SamplingParams(max_tokens=3, temperature=0.8, seed=5)
    with FaultProxy(server, rate=0.0, script=[kind]) as proxy:
        pool = load_model(SERVED, base_url=proxy.url, timeout=TIMEOUT_S, retry_deadline_s=60)
        try:
            events = [e async for e in pool.stream_chat(MSG, sampling=sampling)]
        finally:
            await pool.aclose()
        assert proxy.injected[kind] == 1
    direct = load_model(SERVED, base_url=server)
    try:
        clean = await direct.chat(MSG, sampling=sampling)
    finally:
        await direct.aclose()
    final = events[-1]
    assert isinstance(final, ChatResult) and final.choice.text == clean.choice.text
    assert final.choice.completion_token_ids == clean.choice.completion_token_ids


def test_thirty_percent_faults_lose_no_episode_and_change_none(server, reference, tmp_path):
    """Every fault class at least once, then 30% of chat requests faulted at random:
    all episodes stored ok and identical to the fault-free run with the same seeds."""
    script: list[str | None] = [k for kind in FAULT_KINDS for k in (kind, None)]
    with FaultProxy(server, rate=0.3, seed=3, script=script, stall_s=TIMEOUT_S + 1.5) as proxy:
        episodes = run_episodes(proxy.url, tmp_path / "faults.db", "faults", episodes=len(reference))
    assert all(proxy.injected[k] >= 1 for k in FAULT_KINDS), proxy.injected
    assert sum(proxy.injected.values()) >= len(FAULT_KINDS) + 1  # the random 30% injected too
    assert [e.status for e in episodes] == ["ok"] * len(reference), [e.error for e in episodes]
    assert [fingerprint(e) for e in episodes] == [fingerprint(e) for e in reference]


async def test_deadline_passes_with_a_clear_infrastructure_error(server):
    """Every request faulted: after retry_deadline_s the call fails, naming the endpoint and the cause."""
    from agentplay.errors import InfrastructureError
    from agentplay.models import NoLiveEndpointError

    with FaultProxy(server, rate=1.0, kinds=("500",)) as proxy:
        pool = load_model(SERVED, base_url=proxy.url, max_retries=1, retry_deadline_s=1.0)
        started = time.monotonic()
        try:
            with pytest.raises(NoLiveEndpointError) as err:
                await pool.chat(MSG, sampling=SamplingParams(max_tokens=2))
        finally:
            await pool.aclose()
    assert isinstance(err.value, InfrastructureError) and proxy.url in str(err.value)
    assert "retry_deadline_s=1" in str(err.value) and "500" in str(err.value)
    assert time.monotonic() - started < 15


@pytest.mark.slow
def test_server_killed_and_restarted_mid_run_loses_nothing(reference, tmp_path):
    """The only server dies after the first episode and is back 20 s later or more: the run waits
    for it (within retry_deadline_s), finishes, and stores the fault-free episodes."""
    proc, url = start_server()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    state: dict[str, Any] = {"proc": proc}
    restarted = threading.Event()

    def outage() -> None:
        stop_server(state["proc"])
        state["down_at"] = time.monotonic()
        time.sleep(20)  # the outage: 20 s, plus the new server's start-up, without an answer
        state["proc"], _ = start_server(port)
        state["up_at"] = time.monotonic()
        restarted.set()

    killer = threading.Thread(target=outage)

    def after_episode(episode: Episode) -> None:
        if not killer.is_alive() and not restarted.is_set() and "down_at" not in state:
            killer.start()

    try:
        episodes = run_episodes(url, tmp_path / "outage.db", "outage", episodes=len(reference),
                                concurrency=1, during=after_episode, deadline=180.0)
        killer.join(timeout=300)
    finally:
        stop_server(state["proc"])
    assert restarted.is_set() and state["up_at"] - state["down_at"] >= 20
    assert [e.status for e in episodes] == ["ok"] * len(reference), [e.error for e in episodes]
    assert [fingerprint(e) for e in episodes] == [fingerprint(e) for e in reference]


def _make_adapter(folder: Path) -> Path:
    """A LoRA adapter with random (non-zero) B matrices on a two-layer copy of the architecture."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    from agentplay.models import default_model_dir

    config = AutoConfig.from_pretrained(default_model_dir())
    config.num_hidden_layers = 2
    torch.manual_seed(0)
    lora = LoraConfig(r=8, lora_alpha=32, target_modules=["q_proj", "v_proj"], layers_to_transform=[0, 1],
                      init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_config(config), lora).save_pretrained(folder)
    return folder


async def test_an_adapter_the_server_lost_is_replayed_not_a_recipe_error(server, tmp_path):
    """The server forgets the adapter, as one restarted with base weights does (here it is
    unloaded behind the pools' backs; last in this module: it changes the shared server's
    version). The next request's 404 "model ... does not exist" is a machinery fault (#19/#25):
    the pool replays the adapter under the policy's version and the request is answered by
    the adapter, as before the loss. A pool that only follows the one that loaded it (a Ray
    worker's, given the trainer's adapters) replays it the same way."""
    adapter = _make_adapter(tmp_path / "policy")
    pool = load_model(SERVED, base_url=server, retry_deadline_s=60)
    follower = load_model(SERVED, base_url=server, retry_deadline_s=60)
    sampling = SamplingParams(max_tokens=4, temperature=0, logprobs=True)

    async def forget() -> None:
        async with httpx.AsyncClient() as http:
            answer = await http.post(f"{server}/unload_lora_adapter", json={"lora_name": "policy"})
        assert answer.status_code == 200

    try:
        base = await pool.chat(MSG, sampling=sampling)
        version = await pool.load_lora_adapter("policy", str(adapter), version=(base.weight_version or 0) + 5)
        before = await pool.chat(MSG, sampling=sampling)
        follower.follow(pool.request_model, pool.adapters, pool.adapter_version)
        await forget()
        followed = await follower.chat(MSG, sampling=sampling)
        await forget()
        after = await pool.chat(MSG, sampling=sampling)
        assert [s["state"] for s in pool.status() + follower.status()] == ["closed", "closed"]
    finally:
        await pool.aclose()
        await follower.aclose()
    assert before.weight_version == followed.weight_version == after.weight_version == version
    for replayed in (followed, after):
        assert replayed.choice.completion_token_ids == before.choice.completion_token_ids
        assert replayed.choice.logprobs == pytest.approx(before.choice.logprobs, abs=1e-4)
    assert before.choice.logprobs != pytest.approx(base.choice.logprobs, abs=1e-3)


async def test_a_404_for_a_name_the_pool_never_loaded_is_not_retried(server):
    """Only adapters this pool loaded are replayed: an unknown model name stays the caller's error."""
    import openai

    pool = load_model("openai:no-such-model", base_url=server, retry_deadline_s=60)
    started = time.monotonic()
    try:
        with pytest.raises(openai.NotFoundError):
            await pool.chat(MSG, sampling=SamplingParams(max_tokens=2))
    finally:
        await pool.aclose()
    assert time.monotonic() - started < 10
