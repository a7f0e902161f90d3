"""OpenAIModel against a real HTTP server on 127.0.0.1 that misbehaves on purpose.

The server speaks the OpenAI chat-completions protocol (with vLLM's token-id
fields) but answers 429 and 503 before succeeding, and holds requests open to
measure concurrency: the parts of the backend that the SmolLM2 server never
exercises. Its behaviour against the real model is in test_server.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from agentplay.errors import InfrastructureError
from agentplay.models import NoLiveEndpointError, SamplingParams, load_model

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "m",
    "prompt_token_ids": [1, 2, 3],
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "add", "arguments": '{"a": 1}'},
                    },
                    {
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "add", "arguments": "{broken"},
                    },
                ],
            },
            "logprobs": {
                "content": [
                    {
                        "token": "<",
                        "logprob": -0.5,
                        "bytes": [60],
                        "top_logprobs": [{"token": "token_id:7", "logprob": -0.5, "bytes": []}],
                    },
                    {
                        "token": "x",
                        "logprob": -1.5,
                        "bytes": [120],
                        "top_logprobs": [{"token": "x", "logprob": -1.5, "bytes": []}],
                    },
                ]
            },
            "finish_reason": "tool_calls",
            "token_ids": [7, 8],
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
}


class _Script:
    def __init__(self, failures: list[int], delay: float = 0.0) -> None:
        self.failures = list(failures)
        self.delay = delay
        self.attempts = 0
        self.bodies: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.on_request: Callable[[], None] | None = None
        """Called (under the lock) as each request arrives, e.g. to note the pool's breaker state."""


def _handler(script: _Script) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            with script.lock:
                script.attempts += 1
                script.bodies.append(body)
                status = script.failures.pop(0) if script.failures else 200
                if script.on_request is not None:
                    script.on_request()
                script.in_flight += 1
                script.max_in_flight = max(script.max_in_flight, script.in_flight)
            try:
                time.sleep(script.delay)
                payload = (
                    COMPLETION
                    if status == 200
                    else {"error": {"message": f"status {status}", "type": "x"}}
                )
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                if status == 429:
                    self.send_header("retry-after-ms", "50")
                self.end_headers()
                self.wfile.write(data)
            finally:
                with script.lock:
                    script.in_flight -= 1

    return Handler


@pytest.fixture
def flaky():
    servers = []

    def start(failures: list[int], delay: float = 0.0) -> tuple[str, _Script]:
        script = _Script(failures, delay)
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/v1", script

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


async def test_retries_429_and_503_then_parses_the_answer(flaky):
    url, script = flaky([429, 503])
    model = load_model("openai:m", base_url=url, api_key="k", max_retries=3)
    started = time.monotonic()
    result = await model.chat(
        [{"role": "user", "content": "hi"}],
        sampling=SamplingParams(top_logprobs=1, seed=3, stop=["x"]),
    )
    assert script.attempts == 3
    assert time.monotonic() - started < 10  # Retry-After (50 ms) honoured, then a short backoff
    sent = script.bodies[-1]
    assert (
        sent["return_token_ids"] is True and sent["logprobs"] is True and sent["top_logprobs"] == 1
    )
    assert sent["seed"] == 3 and sent["stop"] == ["x"]
    choice = result.choice
    assert result.prompt_token_ids == [1, 2, 3] and choice.completion_token_ids == [7, 8]
    assert choice.logprobs == [-0.5, -1.5] and choice.finish_reason == "tool_calls"
    assert choice.top_logprobs[0][0].token_id == 7 and choice.top_logprobs[1][0].token_id == -1
    assert [(c.name, c.arguments) for c in choice.tool_calls] == [("add", {"a": 1})]
    assert choice.tool_call_failures[0].raw == "{broken"


async def test_gives_up_after_the_retry_deadline_with_a_clear_infrastructure_error(flaky):
    url, script = flaky([503] * 50)
    model = load_model("openai:m", base_url=url, api_key="k", max_retries=1, retry_deadline_s=0.5)
    with pytest.raises(NoLiveEndpointError, match=r"retry_deadline_s=0.5.*HTTP 503|retry_deadline_s=0.5.*503") as err:
        await model.chat([{"role": "user", "content": "hi"}])
    assert isinstance(err.value, InfrastructureError)  # never a reward; health retries the episode
    assert isinstance(err.value.__cause__, openai.InternalServerError)
    assert script.attempts == 2  # the client's own retry, then the breaker opened and the deadline passed


async def test_last_endpoint_is_not_given_up_after_one_error(flaky):
    """Issue #19 item 3: one endpoint, more 503s than the client retries: the pool's breaker
    opens, a probe finds the server answering, and the call succeeds instead of failing
    every later request with "every endpoint is down"."""
    url, script = flaky([503, 503, 503, 500, 429])
    model = load_model("openai:m", base_url=url, api_key="k", max_retries=1, retry_deadline_s=60)
    try:
        first = await model.chat([{"role": "user", "content": "hi"}])
        second = await model.chat([{"role": "user", "content": "again"}])
    finally:
        await model.aclose()
    assert first.prompt_token_ids == [1, 2, 3] and second.prompt_token_ids == [1, 2, 3]
    assert script.attempts == 7 and model.status()[0]["state"] == "closed"


async def _one_fails_then_more_call(pool, more: int) -> list:
    """One call meets the server's failure and opens the breaker; `more` calls arrive while it is open."""
    started = time.monotonic()
    first = asyncio.create_task(pool.chat([{"role": "user", "content": "q0"}]))
    while pool.status()[0]["state"] != "open":
        assert not first.done() and time.monotonic() - started < 30
        await asyncio.sleep(0.02)
    waiting = [asyncio.create_task(pool.chat([{"role": "user", "content": f"q{i}"}])) for i in range(1, more + 1)]
    return await asyncio.wait_for(asyncio.gather(first, *waiting), 60)


async def test_half_open_sends_one_trial_request_and_the_others_wait_for_its_outcome(flaky):
    """When a broken server's cooldown ends and a probe finds it answering, one real request
    (the trial) goes; the callers waiting on it are not all released at once. The first trial
    fails (503): open again, a longer cooldown; the second succeeds: then the rest go."""
    url, script = flaky([503, 503], delay=0.3)
    pool = load_model("openai:m", base_url=url, api_key="k", max_retries=0, retry_deadline_s=60)
    states: list[str] = []
    script.on_request = lambda: states.append(pool.status()[0]["state"])  # the breaker as each request lands
    try:
        results = await _one_fails_then_more_call(pool, 5)
    finally:
        await pool.aclose()
    assert all(r.prompt_token_ids == [1, 2, 3] for r in results)
    # closed: the first call (503); half-open twice, one request each (503, then 200); then the 5 others
    assert states == ["closed", "half-open", "half-open"] + ["closed"] * 5, states
    assert script.attempts == 8 and pool.status()[0]["state"] == "closed"


async def test_callers_waiting_on_a_slow_trial_do_not_run_out_their_deadline(flaky):
    """A trial that takes longer than what is left of the waiting callers' retry deadline: they
    wait for its outcome instead of failing (a server that answers is not an outage)."""
    url, script = flaky([503], delay=1.5)
    pool = load_model("openai:m", base_url=url, api_key="k", max_retries=0, retry_deadline_s=2.0)
    try:
        # the breaker opens at ~1.5 s and half-opens ~1 s later; the trial takes 1.5 s more, so
        # counting it would put every waiter past 2 s (NoLiveEndpointError)
        results = await _one_fails_then_more_call(pool, 2)
    finally:
        await pool.aclose()
    assert all(r.prompt_token_ids == [1, 2, 3] for r in results)
    assert script.attempts == 4  # the 503, the trial, the two that waited for it


async def test_bad_request_is_not_retried(flaky):
    url, script = flaky([400])
    model = load_model("openai:m", base_url=url, api_key="k", max_retries=3)
    with pytest.raises(openai.BadRequestError):
        await model.chat([{"role": "user", "content": "hi"}])
    assert script.attempts == 1


async def test_concurrency_limit(flaky):
    url, script = flaky([], delay=0.3)
    model = load_model("openai:m", base_url=url, api_key="k", max_concurrency=2)
    await asyncio.gather(*[model.chat([{"role": "user", "content": str(i)}]) for i in range(6)])
    assert script.attempts == 6 and script.max_in_flight == 2


async def test_assistant_tool_calls_go_out_as_json_strings(flaky):
    url, script = flaky([])
    model = load_model("openai:m", base_url=url, api_key="k", return_token_ids=False)
    history = [
        {"role": "user", "content": "add"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "add", "arguments": {"a": 1}}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "1"},
    ]
    await model.chat(history)
    sent = script.bodies[-1]
    assert sent["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"a": 1}'
    assert "return_token_ids" not in sent


async def test_unreachable_server_raises_connection_error():
    model = load_model(
        "openai:m", base_url="http://127.0.0.1:9/v1", api_key="k", max_retries=0, timeout=5,
        retry_deadline_s=0.3,
    )
    with pytest.raises(NoLiveEndpointError, match="127.0.0.1:9.*Connect") as err:
        await model.chat([{"role": "user", "content": "hi"}])
    assert isinstance(err.value.__cause__, openai.APIConnectionError)
