"""The API backend: any OpenAI-compatible server (vLLM, `agentplay serve`, llama.cpp, OpenAI).

Retries of one request are the official client's own: it already backs off
exponentially with jitter on 408/409/429/5xx, connection errors and timeouts and
honours `Retry-After` / `retry-after-ms`, so a second loop here would only double
the waits. Added here: a response hook so a 2xx body that is not JSON is retried
in that same loop (the client parses bodies only after it, see `_resilience`),
bounded concurrency (a self-play run fires hundreds of requests at once) and
vLLM's token-id extensions. Remembering failing servers and waiting for them to
come back is `EndpointPool`'s job (`load_model` wraps every `openai:` model in one).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
from openai import AsyncOpenAI
from pydantic import BaseModel

from agentplay.errors import AgentplayError

from ._base import ChatModel, UpdatableModel, check_version
from ._config import ModelConfig
from ._resilience import require_json_body
from ._types import (
    ChatResult,
    Choice,
    FinishReason,
    Message,
    SamplingParams,
    SamplingRecord,
    ToolCall,
    ToolCallParseFailure,
    TopLogprob,
    Usage,
)

__all__ = ["ModelServerError", "OpenAIModel", "TextDelta"]

WEIGHT_VERSION_HEADER = "x-weight-version"


class ModelServerError(AgentplayError, RuntimeError):
    """The server refused an admin request (adapter load/unload); carries its status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class TextDelta(BaseModel):
    """A piece of streamed text for choice `index`; a stream ends with the full ChatResult."""

    index: int
    text: str


def _extra(obj: Any, key: str) -> Any:
    """Extension fields (vLLM's `token_ids`, ours `weight_version`) land in pydantic's extras."""
    extra = getattr(obj, "model_extra", None) or {}
    return extra.get(key)


def _sampling_record(raw: Any) -> SamplingRecord | None:
    """Our server's `sampled_with` extension; None when the server does not send one (vLLM,
    llama.cpp, hosted APIs) or sends something unreadable: then the trace says the settings
    are the requested ones, not reported."""
    if not isinstance(raw, dict):
        return None
    try:
        return SamplingRecord.model_validate({**raw, "reported": True})
    except ValueError:
        return None


def _wire_message(message: Message) -> dict[str, Any]:
    """OpenAI wants tool-call arguments as JSON strings; the engine form keeps dicts."""
    msg = dict(message)
    if msg.get("tool_calls"):
        msg["tool_calls"] = [
            {
                **call,
                "type": "function",
                "function": {
                    "name": call["function"]["name"],
                    "arguments": a
                    if isinstance(a := call["function"].get("arguments", {}), str)
                    else json.dumps(a),
                },
            }
            for call in msg["tool_calls"]
        ]
    return msg


def _top_token_id(entry: Any) -> int:
    token_id = _extra(entry, "token_id")
    if isinstance(token_id, int):
        return token_id
    token = getattr(entry, "token", "")
    if token.startswith("token_id:"):  # vLLM's return_tokens_as_token_ids form
        return int(token.removeprefix("token_id:"))
    return -1  # plain OpenAI: alternatives come as text only


class _ChoiceParts:
    """One choice as it arrives, whole or in stream chunks."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.content: list[str] = []
        self.calls: dict[int, dict[str, str]] = {}
        self.finish_reason: str | None = None
        self.token_ids: list[int] | None = None
        self.logprob_entries: list[Any] = []

    def add_tokens(self, ids: list[int] | None) -> None:
        if ids is not None:
            self.token_ids = (self.token_ids or []) + list(ids)

    def add_call(self, k: int, id: str | None, name: str | None, arguments: str | None) -> None:
        call = self.calls.setdefault(k, {"id": "", "name": "", "arguments": ""})
        call["id"] = id or call["id"]
        call["name"] = name or call["name"]
        call["arguments"] += arguments or ""

    def build(self) -> Choice:
        calls, failures = [], []
        for k in sorted(self.calls):
            c = self.calls[k]
            try:
                args = json.loads(c["arguments"] or "{}")
                if not isinstance(args, dict):
                    raise ValueError("arguments must be a JSON object")  # noqa: TRY004 - one except for both
                calls.append(
                    ToolCall(
                        id=c["id"] or f"call_{self.index}_{k}",
                        name=c["name"],
                        arguments=args,
                        raw=c["arguments"],
                    )
                )
            except ValueError as exc:
                failures.append(
                    ToolCallParseFailure(raw=c["arguments"], error=f"{c['name']}: {exc}")
                )
        content = "".join(self.content) or None
        entries = self.logprob_entries
        reason: FinishReason = "tool_calls" if calls else _finish(self.finish_reason)
        return Choice(
            index=self.index,
            text=content or "",
            content=content,
            tool_calls=calls,
            tool_call_failures=failures,
            finish_reason=reason,
            completion_token_ids=self.token_ids,
            logprobs=[e.logprob for e in entries] if entries else None,
            top_logprobs=[
                [
                    TopLogprob(token_id=_top_token_id(t), token=t.token, logprob=t.logprob)
                    for t in e.top_logprobs or []
                ]
                for e in entries
            ]
            if entries and any(e.top_logprobs for e in entries)
            else None,
        )


def _finish(reason: str | None) -> FinishReason:
    if reason in ("stop", "length", "tool_calls"):
        return reason  # type: ignore[return-value]
    return "tool_calls" if reason == "function_call" else "stop"


class OpenAIModel(ChatModel, UpdatableModel):
    """A model behind an OpenAI-compatible endpoint; also updatable through vLLM's LoRA API.

    After `load_lora_adapter(name, ...)` requests go to `model=name`, which is how
    vLLM serves an adapter (and what `agentplay serve` accepts too)."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.spec = config.spec
        self.request_model = config.name
        """The `model` sent with each request: the base name or the loaded adapter."""
        self._client = AsyncOpenAI(
            base_url=config.base_url,
            api_key=config.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
            timeout=config.timeout,
            max_retries=config.max_retries,
            default_headers=config.extra_headers or None,
            http_client=openai.DefaultAsyncHttpxClient(event_hooks={"response": [require_json_body]}),
        )
        self._limit = asyncio.Semaphore(config.max_concurrency)
        self._version: int | None = None
        self._updates = 0

    @property
    def weight_version(self) -> int | None:
        return self._version

    def auth_headers(self) -> dict[str, str]:
        """Headers for requests made outside the openai client (admin calls, health probes)."""
        return {"Authorization": f"Bearer {self._client.api_key}", **(self.config.extra_headers or {})}

    def _params(
        self,
        messages: list[Message],
        tools: list[dict[str, Any]] | None,
        s: SamplingParams,
        stream: bool,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": self.request_model,
            "messages": [_wire_message(m) for m in messages],
            "n": s.n,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
        }
        if s.logprobs:
            params["logprobs"] = True
            if s.top_logprobs:
                params["top_logprobs"] = s.top_logprobs
        if s.seed is not None:
            params["seed"] = s.seed
        if s.stop:
            params["stop"] = s.stop
        if tools:
            params["tools"] = tools
        if self.config.return_token_ids:
            params["extra_body"] = {"return_token_ids": True}
        if stream:
            params["stream"] = True
            params["stream_options"] = {"include_usage": True}
        return params

    async def chat(
        self,
        messages: list[Message],
        *,
        tools: list[dict[str, Any]] | None = None,
        sampling: SamplingParams | None = None,
    ) -> ChatResult:
        s = sampling or SamplingParams()
        async with self._limit:
            resp = await self._client.chat.completions.create(
                **self._params(messages, tools, s, stream=False)
            )
        parts = []
        for c in resp.choices:
            p = _ChoiceParts(c.index)
            p.content = [c.message.content] if c.message.content else []
            for k, call in enumerate(c.message.tool_calls or []):
                fn = getattr(call, "function", None)
                p.add_call(k, call.id, getattr(fn, "name", None), getattr(fn, "arguments", None))
            p.finish_reason = c.finish_reason
            p.add_tokens(_extra(c, "token_ids"))
            p.logprob_entries = list(c.logprobs.content or []) if c.logprobs else []
            parts.append(p)
        usage = Usage(
            prompt_tokens=resp.usage.prompt_tokens if resp.usage else 0,
            completion_tokens=resp.usage.completion_tokens if resp.usage else 0,
        )
        return self._result(
            resp.model,
            parts,
            _extra(resp, "prompt_token_ids"),
            _extra(resp, "weight_version"),
            usage,
            _extra(resp, "sampled_with"),
        )

    async def stream_chat(
        self,
        messages: list[Message],
        *,
        tools: list[dict[str, Any]] | None = None,
        sampling: SamplingParams | None = None,
    ) -> AsyncIterator[TextDelta | ChatResult]:
        """Text deltas as the server sends them, then the complete ChatResult
        (token ids and logprobs gathered from the chunks)."""
        s = sampling or SamplingParams()
        parts: dict[int, _ChoiceParts] = {}
        prompt_ids, version, usage, model = None, None, Usage(), self.request_model
        sampled_with = None
        async with self._limit:
            stream = await self._client.chat.completions.create(
                **self._params(messages, tools, s, stream=True)
            )
            async for chunk in stream:
                model = chunk.model or model
                prompt_ids = prompt_ids or _extra(chunk, "prompt_token_ids")
                version = version if version is not None else _extra(chunk, "weight_version")
                sampled_with = sampled_with or _extra(chunk, "sampled_with")
                if chunk.usage:
                    usage = Usage(
                        prompt_tokens=chunk.usage.prompt_tokens,
                        completion_tokens=chunk.usage.completion_tokens,
                    )
                for c in chunk.choices:
                    p = parts.setdefault(c.index, _ChoiceParts(c.index))
                    p.add_tokens(_extra(c, "token_ids"))
                    if c.logprobs and c.logprobs.content:
                        p.logprob_entries.extend(c.logprobs.content)
                    for call in c.delta.tool_calls or []:
                        fn = call.function
                        p.add_call(
                            call.index,
                            call.id,
                            fn.name if fn else None,
                            fn.arguments if fn else None,
                        )
                    if c.finish_reason:
                        p.finish_reason = c.finish_reason
                    if c.delta.content:
                        p.content.append(c.delta.content)
                        yield TextDelta(index=c.index, text=c.delta.content)
        yield self._result(model, [parts[i] for i in sorted(parts)], prompt_ids, version, usage, sampled_with)

    def _result(
        self, model: str, parts: list[_ChoiceParts], prompt_ids: Any, version: Any, usage: Usage,
        sampled_with: Any = None,
    ) -> ChatResult:
        if isinstance(version, int):
            self._version = version
        return ChatResult(
            sampled_with=_sampling_record(sampled_with),
            model=model,
            choices=[p.build() for p in parts],
            prompt_token_ids=list(prompt_ids) if prompt_ids is not None else None,
            weight_version=version if isinstance(version, int) else self._version,
            usage=usage,
            tokenizer=self.config.tokenizer,  # the one named for this model, if any
        )

    async def _admin(self, endpoint: str, body: dict[str, Any], version: int | None) -> int:
        """POST one of vLLM's LoRA endpoints; the new version comes from our server's
        header, or, for servers that have no notion of versions (vLLM ignores the
        `weight_version` field with a warning and sends no header), is the version given
        here, else counted by this client. With vLLM the version is therefore the number
        the trainer last loaded, tracked client-side: correct for requests sent after the
        load returns, but a request in flight during the swap cannot be told apart."""
        if check_version(version) is not None:
            body = {**body, "weight_version": version}
        url = f"{str(self._client.base_url).rstrip('/')}/{endpoint}"
        async with httpx.AsyncClient(timeout=self.config.timeout) as http:
            resp = await http.post(url, json=body, headers=self.auth_headers())
        if resp.status_code >= 400:
            try:
                message = resp.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = resp.text
            raise ModelServerError(resp.status_code, f"{endpoint}: {message}")
        header = resp.headers.get(WEIGHT_VERSION_HEADER)
        reported = int(header) if header and header.lstrip("-").isdigit() else None
        if reported is not None and version is not None and reported != version:
            raise ModelServerError(
                resp.status_code,
                f"{endpoint}: the server reports weight version {reported} after being told {version}",
            )
        if reported is None:
            reported = version if version is not None else self._updates + 1
        self._updates = reported
        self._version = reported
        return reported

    async def load_lora_adapter(self, name: str, path: str, *, version: int | None = None) -> int:
        """`path` is read by the server, so it must exist on the server's file system.

        Sends `load_inplace: true` so a trainer can push new weights under the same
        name every step; vLLM needs `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True` and a
        release that knows `load_inplace` (older ones refuse a name already loaded)."""
        version = await self._admin(
            "load_lora_adapter", {"lora_name": name, "lora_path": str(path), "load_inplace": True}, version
        )
        self.request_model = name
        return version

    async def unload_lora_adapter(self, name: str, *, version: int | None = None) -> int:
        new = await self._admin("unload_lora_adapter", {"lora_name": name}, version)
        if self.request_model == name:
            self.request_model = self.config.name
        return new

    async def load_state_dict(self, state_dict: dict[str, Any], *, version: int | None = None) -> int:
        raise NotImplementedError(
            f"{self.spec}: a remote server cannot receive full weights over its HTTP API; "
            "train a LoRA adapter, save it where the server can read it and call "
            "load_lora_adapter(name, path), or use a local: / hf: model for full-weight updates"
        )

    async def aclose(self) -> None:
        await self._client.close()
