"""`agentplay serve` as a real subprocess on 127.0.0.1, driven by the real `openai` client.

One server (SmolLM2 on CPU) is shared by the module; greedy decoding and few
tokens keep each request to a few seconds. Order matters only at the end: the
LoRA test changes the served weights last.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from agentplay.models import AgentplayChatModel, SamplingParams, default_model_dir, load_model

BASE = "smollm2-135m-instruct"
HELLO = [{"role": "user", "content": "Say hello."}]
ADD_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers and return the sum.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
CALL_TEXT = '<tool_call>\n{"name": "add", "arguments": {"a": 17, "b": 25}}\n</tool_call>'
# SmolLM2 does not call tools on its own; asked to copy a call at temperature 0 it writes one.
COPY_CALL = [
    {"role": "user", "content": f"Repeat exactly this text and nothing else:\n{CALL_TEXT}"}
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    env = os.environ | {"HF_HUB_OFFLINE": "1"}  # threads: the suite's setting (conftest.py)
    cmd = [sys.executable, "-m", "agentplay.cli", "serve", "--model", f"local:{BASE}"]
    proc = subprocess.Popen(
        [*cmd, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"server exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}"
                )
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("server did not answer /health within 180 s")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=300) as http:
        return await http.get(url)


async def _post(url: str, **kwargs) -> httpx.Response:
    async with httpx.AsyncClient(timeout=300) as http:
        return await http.post(url, **kwargs)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_dir())


@pytest.fixture
def client(server):
    return openai.AsyncOpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=300)


async def test_health_and_models(server):
    health = (await _get(f"{server}/health")).json()
    assert health["status"] == "ok" and isinstance(health["weight_version"], int)
    models = await openai.AsyncOpenAI(base_url=f"{server}/v1", api_key="x").models.list()
    assert [m.id for m in models.data] == [BASE]
    assert models.data[0].model_extra["weight_version"] == health["weight_version"]


async def test_plain_completion_has_token_ids_and_logprobs(client, tokenizer):
    resp = await client.chat.completions.create(
        model=BASE, messages=HELLO, max_tokens=6, temperature=0, logprobs=True, top_logprobs=2
    )
    choice = resp.choices[0]
    ids = choice.model_extra["token_ids"]
    prompt_ids = resp.model_extra["prompt_token_ids"]
    assert choice.message.content and len(ids) == resp.usage.completion_tokens
    assert tokenizer.decode(ids, skip_special_tokens=True) == choice.message.content
    assert (
        "Say hello." in tokenizer.decode(prompt_ids) and len(prompt_ids) == resp.usage.prompt_tokens
    )
    entries = choice.logprobs.content
    assert [e.model_extra["token_id"] for e in entries] == ids
    assert "".join(e.token for e in entries).removesuffix("<|im_end|>") == choice.message.content
    for e in entries:
        assert e.logprob <= 0 and len(e.top_logprobs) == 2
        # greedy: the sampled token is the most likely one
        assert e.top_logprobs[0].logprob == pytest.approx(e.logprob, abs=1e-5)
    assert isinstance(resp.model_extra["weight_version"], int)


async def test_streaming_matches_non_streaming(client):
    kwargs = {"model": BASE, "messages": HELLO, "max_tokens": 6, "temperature": 0, "logprobs": True}
    whole = await client.chat.completions.create(**kwargs)
    stream = await client.chat.completions.create(
        **kwargs, stream=True, stream_options={"include_usage": True}
    )
    chunks = [c async for c in stream]
    assert chunks[0].model_extra["prompt_token_ids"] == whole.model_extra["prompt_token_ids"]
    deltas = [c.choices[0] for c in chunks if c.choices]
    text = "".join(d.delta.content or "" for d in deltas)
    ids = [t for d in deltas for t in (d.model_extra.get("token_ids") or [])]
    lps = [e.logprob for d in deltas if d.logprobs for e in d.logprobs.content]
    assert text == whole.choices[0].message.content
    assert ids == whole.choices[0].model_extra["token_ids"]
    assert lps == pytest.approx([e.logprob for e in whole.choices[0].logprobs.content], abs=1e-5)
    assert sum(1 for d in deltas if d.delta.content) > 1  # one delta per token, not one blob
    assert deltas[-1].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == len(ids)


async def test_n_choices_are_independent_samples(client, tokenizer):
    resp = await client.chat.completions.create(
        model=BASE, messages=HELLO, max_tokens=5, temperature=1.0, n=3, seed=7, logprobs=True
    )
    assert [c.index for c in resp.choices] == [0, 1, 2]
    all_ids = [c.model_extra["token_ids"] for c in resp.choices]
    for choice, ids in zip(resp.choices, all_ids):
        assert len(choice.logprobs.content) == len(ids) > 0
    assert len({tuple(ids) for ids in all_ids}) > 1, "three samples at T=1 should not all be equal"


async def test_tool_call_round_trip(client, tokenizer):
    resp = await client.chat.completions.create(
        model=BASE, messages=COPY_CALL, tools=[ADD_TOOL], max_tokens=40, temperature=0
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message.content
    call = choice.message.tool_calls[0]
    assert call.function.name == "add" and json.loads(call.function.arguments) == {"a": 17, "b": 25}
    # the ids are the whole completion, markup included
    assert (
        tokenizer.decode(choice.model_extra["token_ids"], skip_special_tokens=True).strip()
        == CALL_TEXT
    )
    # the assistant turn and a tool result come back in OpenAI shape and reach the prompt
    follow = COPY_CALL + [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "42"},
    ]
    resp2 = await client.chat.completions.create(
        model=BASE, messages=follow, tools=[ADD_TOOL], max_tokens=1, temperature=0
    )
    prompt = tokenizer.decode(resp2.model_extra["prompt_token_ids"])
    assert (
        '{"name": "add", "arguments": {"a": 17, "b": 25}}'
        in prompt.split("<|im_start|>assistant")[1]
    )
    assert "<|im_start|>tool\n42<|im_end|>" in prompt


async def test_bad_requests_get_openai_errors_and_server_survives(client, server):
    with pytest.raises(openai.BadRequestError) as bad:
        await client.chat.completions.create(
            model=BASE, messages=HELLO, temperature="hot", max_tokens=2
        )
    err = bad.value.body
    assert bad.value.status_code == 400 and err["type"] == "invalid_request_error"
    assert err["param"] == "temperature" and "temperature" in err["message"]

    with pytest.raises(openai.NotFoundError) as missing:
        await client.chat.completions.create(model="no-such-model", messages=HELLO, max_tokens=2)
    assert missing.value.body["code"] == "model_not_found"

    with pytest.raises(openai.BadRequestError) as top:
        await client.chat.completions.create(
            model=BASE, messages=HELLO, top_logprobs=3, max_tokens=2
        )
    assert "logprobs" in top.value.body["message"]

    raw = await _post(
        f"{server}/v1/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert raw.status_code == 400 and "not valid JSON" in raw.json()["error"]["message"]
    bad_msg = await _post(
        f"{server}/v1/chat/completions",
        json={"model": BASE, "messages": [{"role": "tool", "content": "x"}]},
    )
    assert bad_msg.status_code == 400 and "tool_call_id" in bad_msg.json()["error"]["message"]

    nowhere = await _get(f"{server}/v1/no-such-route")
    assert nowhere.status_code == 404 and nowhere.json()["error"]["type"] == "invalid_request_error"

    ok = await client.chat.completions.create(
        model=BASE, messages=HELLO, max_tokens=2, temperature=0
    )
    assert ok.choices[0].message.content


async def test_openai_backend_reads_token_ids_from_server(server, tokenizer):
    model = load_model(f"openai:{BASE}", base_url=f"{server}/v1", api_key="x")
    sampling = SamplingParams(temperature=0, max_tokens=6, top_logprobs=2)
    result = await model.chat(HELLO, sampling=sampling)
    choice = result.choice
    assert tokenizer.decode(choice.completion_token_ids, skip_special_tokens=True) == choice.text
    assert len(choice.logprobs) == len(choice.completion_token_ids)
    assert choice.top_logprobs[0][0].token_id == choice.completion_token_ids[0]
    assert result.prompt_token_ids and result.weight_version == model.weight_version is not None

    events = [e async for e in model.stream_chat(HELLO, sampling=sampling)]
    streamed = events[-1]
    assert "".join(e.text for e in events[:-1]) == streamed.choice.text == choice.text
    assert streamed.choice.completion_token_ids == choice.completion_token_ids
    assert streamed.prompt_token_ids == result.prompt_token_ids
    await model.aclose()


async def test_langchain_streams_over_the_server(server):
    llm = AgentplayChatModel(
        model=load_model(f"openai:{BASE}", base_url=f"{server}/v1", api_key="x"),
        sampling=SamplingParams(temperature=0, max_tokens=6),
    )
    chunks = [c async for c in llm.astream("Say hello.")]
    assert len(chunks) > 2  # real deltas, then the closing chunk with the record
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    meta = merged.response_metadata
    assert merged.content and len(meta["completion_token_ids"]) == len(meta["logprobs"]) > 0
    assert meta["prompt_token_ids"] and isinstance(meta["weight_version"], int)


def _make_adapter(folder: Path) -> Path:
    """A LoRA adapter with random (non-zero) B matrices for the first two layers,
    built on a two-layer copy of the architecture so no full model is loaded."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(default_model_dir())
    config.num_hidden_layers = 2
    torch.manual_seed(0)
    small = AutoModelForCausalLM.from_config(config)
    lora = LoraConfig(
        r=8,
        lora_alpha=32,
        target_modules=["q_proj", "v_proj"],
        layers_to_transform=[0, 1],
        init_lora_weights=False,
    )
    get_peft_model(small, lora).save_pretrained(folder)
    return folder


async def test_lora_adapter_over_http_changes_and_restores_logprobs(client, server, tmp_path):
    async def greedy(model: str):
        r = await client.chat.completions.create(
            model=model, messages=HELLO, max_tokens=4, temperature=0, logprobs=True
        )
        c = r.choices[0]
        return (
            c.model_extra["token_ids"],
            [e.logprob for e in c.logprobs.content],
            r.model_extra["weight_version"],
        )

    base_ids, base_lps, v0 = await greedy(BASE)
    adapter = str(_make_adapter(tmp_path / "policy"))

    loaded = await _post(
        f"{server}/v1/load_lora_adapter", json={"lora_name": "policy", "lora_path": adapter}
    )
    assert loaded.status_code == 200 and int(loaded.headers["x-weight-version"]) == v0 + 1
    cards = {m["id"]: m for m in (await _get(f"{server}/v1/models")).json()["data"]}
    assert cards["policy"]["parent"] == BASE and cards["policy"]["root"] == adapter

    ids, lps, v1 = await greedy("policy")
    assert v1 == v0 + 1
    changed = ids != base_ids or max(abs(a - b) for a, b in zip(lps, base_lps)) > 1e-3
    assert changed, "a non-zero adapter must change the greedy logprobs"

    again = await _post(
        f"{server}/v1/load_lora_adapter", json={"lora_name": "policy", "lora_path": adapter}
    )
    assert again.status_code == 400 and "load_inplace" in again.json()["error"]["message"]

    unloaded = await _post(f"{server}/v1/unload_lora_adapter", json={"lora_name": "policy"})
    assert unloaded.status_code == 200 and int(unloaded.headers["x-weight-version"]) == v0 + 2
    ids2, lps2, v2 = await greedy(BASE)
    assert v2 == v0 + 2 and ids2 == base_ids
    assert lps2 == pytest.approx(base_lps, abs=1e-4)
    with pytest.raises(openai.NotFoundError):
        await greedy("policy")

    # the same path through the API backend (what a trainer calls; vLLM-compatible body)
    model = load_model(f"openai:{BASE}", base_url=f"{server}/v1", api_key="x")
    assert (
        await model.load_lora_adapter("policy", adapter) == v0 + 3
        and model.request_model == "policy"
    )
    via_backend = await model.chat(HELLO, sampling=SamplingParams(temperature=0, max_tokens=4))
    assert via_backend.weight_version == v0 + 3 and via_backend.choice.completion_token_ids == ids
    assert await model.unload_lora_adapter("policy") == v0 + 4 and model.request_model == BASE

    # a trainer gives the version its weights carry (its committed steps, restored on resume):
    # the server takes it instead of counting its own updates, and reports it everywhere
    given = v0 + 40
    assert await model.load_lora_adapter("policy", adapter, version=given) == given
    header = (await _post(f"{server}/v1/chat/completions",
                          json={"model": "policy", "messages": HELLO, "max_tokens": 2})).headers
    assert int(header["x-weight-version"]) == given
    cards = {m["id"]: m for m in (await _get(f"{server}/v1/models")).json()["data"]}
    assert cards[BASE]["weight_version"] == cards["policy"]["weight_version"] == given
    assert (await model.chat(HELLO, sampling=SamplingParams(temperature=0, max_tokens=2))).weight_version == given
    assert await model.unload_lora_adapter("policy", version=given + 1) == given + 1
    negative = await _post(f"{server}/v1/load_lora_adapter",
                           json={"lora_name": "policy", "lora_path": adapter, "weight_version": -1})
    assert negative.status_code == 400 and negative.json()["error"]["param"] == "weight_version"
    with pytest.raises(NotImplementedError, match="load_lora_adapter"):
        await model.load_state_dict({})
    await model.aclose()


def test_stream_deltas_keep_markup_out_of_content():
    """A choice with a tool call streams its markup-free content, then the call (no model needed)."""
    from agentplay.models import Choice, ToolCall
    from agentplay.models._server_protocol import ChatCompletionRequest, choice_stream_deltas

    choice = Choice(
        text=CALL_TEXT,
        content=None,
        tool_calls=[ToolCall(id="c1", name="add", arguments={"a": 17, "b": 25}, raw=CALL_TEXT)],
        finish_reason="tool_calls",
        completion_token_ids=[1, 2, 3],
        logprobs=[-0.1, -0.2, -0.3],
    )
    req = ChatCompletionRequest(model=BASE, messages=HELLO, stream=True, logprobs=True)
    deltas = choice_stream_deltas(choice, req, tokenizer=None)
    assert "".join(d["delta"].get("content") or "" for d in deltas) == ""
    calls = [c for d in deltas for c in d["delta"].get("tool_calls", [])]
    assert calls == [
        {
            "index": 0,
            "id": "c1",
            "type": "function",
            "function": {"name": "add", "arguments": '{"a": 17, "b": 25}'},
        }
    ]
    assert [t for d in deltas for t in d.get("token_ids", [])] == [1, 2, 3]
    assert [e["token"] for d in deltas if "logprobs" in d for e in d["logprobs"]["content"]] == [
        "token_id:1",
        "token_id:2",
        "token_id:3",
    ]
    assert deltas[-1]["finish_reason"] == "tool_calls"
    named = {"type": "function", "function": {"name": "add"}}
    assert (
        ChatCompletionRequest(
            model=BASE, messages=HELLO, tools=[ADD_TOOL], tool_choice=named
        ).engine_tools()[0]["function"]["name"]
        == "add"
    )
    with pytest.raises(ValueError, match="tool_choice"):
        ChatCompletionRequest(
            model=BASE,
            messages=HELLO,
            tools=[ADD_TOOL],
            tool_choice={"type": "function", "function": {"name": "mul"}},
        )
