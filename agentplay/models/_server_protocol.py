"""The OpenAI chat-completions wire format, as the server reads and writes it.

Requests are validated by pydantic models mirroring OpenAI's (plus vLLM's
`return_token_ids`); responses are built as plain dicts in OpenAI's shape with
vLLM's extension fields (`prompt_token_ids` on the response, `token_ids` on each
choice) and ours (`weight_version`, `tool_call_failures`, `token_id` on each
logprob entry) so any OpenAI client reads them and a training client gets the
exact tokens.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ._types import ChatResult, Choice, Message, SamplingParams

__all__ = [
    "ChatCompletionRequest",
    "LoadLoRAAdapterRequest",
    "TokenDecoder",
    "UnloadLoRAAdapterRequest",
    "choice_stream_deltas",
    "completion_response",
    "logprobs_content",
    "tool_calls_json",
]

log = logging.getLogger(__name__)


class _Lenient(BaseModel):
    """OpenAI clients send fields we do not use (`user`, `metadata`, ...): like vLLM,
    accept and ignore them instead of failing a client that works elsewhere."""

    model_config = ConfigDict(extra="allow")


class FunctionCallIn(BaseModel):
    name: str
    arguments: str | dict[str, Any] = "{}"
    """A JSON string (OpenAI); a dict is accepted from clients that never encoded it."""


class ToolCallIn(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallIn


class MessageIn(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    """A string or OpenAI content parts; only `text` parts can be served by a text model."""
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _check_role_fields(self) -> MessageIn:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a message with role 'tool' needs 'tool_call_id'")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a message with role '{self.role}' needs 'content'")
        if isinstance(self.content, list):
            for part in self.content:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ValueError(
                        f"content part of type {part.get('type')!r} is not supported: "
                        "this server serves a text-only model (use {'type': 'text', 'text': ...})"
                    )
        return self

    def to_engine(self) -> Message:
        """The engine's message form: text content, tool-call arguments as dicts
        (what chat templates render and what `Choice.assistant_message` produces)."""
        content = self.content
        if isinstance(content, list):
            content = "".join(part["text"] for part in content)
        role = "system" if self.role == "developer" else self.role
        msg: Message = {"role": role, "content": content if content is not None else ""}
        if self.name is not None:
            msg["name"] = self.name
        if self.tool_call_id is not None:
            msg["tool_call_id"] = self.tool_call_id
        if self.tool_calls:
            msg["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {
                        "name": call.function.name,
                        "arguments": _arguments(call.function.arguments),
                    },
                }
                for call in self.tool_calls
            ]
        return msg


def _arguments(raw: str | dict[str, Any]) -> dict[str, Any] | str:
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return raw  # what the model wrote, even if broken: re-render it as written
    return value if isinstance(value, dict) else raw


class FunctionDef(_Lenient):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolDef(_Lenient):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    type: Literal["function"] = "function"
    function: NamedFunction


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatCompletionRequest(_Lenient):
    """POST /v1/chat/completions."""

    model: str
    messages: list[MessageIn] = Field(min_length=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    """OpenAI's newer name for `max_tokens`; wins when both are set."""
    n: int = Field(1, ge=1, le=64)
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    """Best effort without constrained decoding: `none` hides the tools, a named tool is
    the only one offered; nothing can force the model to call one."""
    response_format: dict[str, Any] | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    return_token_ids: bool | None = None
    """vLLM's switch for `prompt_token_ids`/`token_ids`; unlike vLLM we default to on,
    because token-exact traces are why this server exists."""

    @model_validator(mode="after")
    def _check_supported(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("'top_logprobs' needs 'logprobs': true")
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise ValueError(
                "'response_format' other than text needs constrained decoding, which this "
                "server lacks; ask for JSON in the prompt or use tool calling"
            )
        for field in ("presence_penalty", "frequency_penalty"):
            if getattr(self, field):
                raise ValueError(f"'{field}' is not supported by this server; leave it at 0")
        if isinstance(self.tool_choice, NamedToolChoice):
            names = [t.function.name for t in self.tools or []]
            if self.tool_choice.function.name not in names:
                raise ValueError(
                    f"'tool_choice' names {self.tool_choice.function.name!r}, not one of the tools {names}"
                )
        if self.stream_options is not None and not self.stream:
            raise ValueError("'stream_options' is only allowed with 'stream': true")
        return self

    def sampling(self) -> SamplingParams:
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        max_tokens = self.max_completion_tokens or self.max_tokens
        extra = {"max_tokens": max_tokens} if max_tokens is not None else {}
        return SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            n=self.n,
            stop=stop or None,
            seed=self.seed,
            logprobs=self.logprobs,
            top_logprobs=self.top_logprobs or 0,
            **extra,
        )

    def engine_messages(self) -> list[Message]:
        return [m.to_engine() for m in self.messages]

    def engine_tools(self) -> list[dict[str, Any]] | None:
        if not self.tools or self.tool_choice == "none":
            return None
        tools = self.tools
        if isinstance(self.tool_choice, NamedToolChoice):
            tools = [t for t in tools if t.function.name == self.tool_choice.function.name]
        return [t.model_dump(exclude_none=True) for t in tools]

    @property
    def wants_token_ids(self) -> bool:
        return self.return_token_ids is not False


class LoadLoRAAdapterRequest(BaseModel):
    """POST /v1/load_lora_adapter, as vLLM defines it."""

    lora_name: str = Field(min_length=1)
    lora_path: str = Field(min_length=1)
    load_inplace: bool = False
    """vLLM refuses to reload a loaded name unless this is true (the trainer's path)."""
    weight_version: int | None = Field(None, ge=0)
    """Our extension: the weight version the adapter's weights carry (a trainer's count of
    committed steps, restored on resume); None counts one more. vLLM ignores the field."""


class UnloadLoRAAdapterRequest(BaseModel):
    """POST /v1/unload_lora_adapter, as vLLM defines it."""

    lora_name: str = Field(min_length=1)
    lora_int_id: int | None = None
    weight_version: int | None = Field(None, ge=0)
    """Our extension: the version of the weights served after the unload (None: one more)."""


class TokenDecoder(Protocol):
    def decode(self, token_ids: list[int], **kwargs: Any) -> str: ...


def _token_text(tokenizer: TokenDecoder | None, token_id: int) -> str:
    if tokenizer is None:
        return f"token_id:{token_id}"  # vLLM's `return_tokens_as_token_ids` form
    return tokenizer.decode([token_id], skip_special_tokens=False)


def logprobs_content(
    choice: Choice, tokenizer: TokenDecoder | None, start: int = 0, stop: int | None = None
) -> list[dict[str, Any]]:
    """OpenAI's `logprobs.content` entries for tokens [start, stop)."""
    ids = choice.completion_token_ids or []
    lps = choice.logprobs or []
    tops = choice.top_logprobs or []
    entries = []
    for j in range(start, min(stop if stop is not None else len(ids), len(ids), len(lps))):
        token = _token_text(tokenizer, ids[j])
        entry: dict[str, Any] = {
            "token": token,
            "logprob": lps[j],
            "bytes": list(token.encode("utf-8")),
            "token_id": ids[j],
            "top_logprobs": [
                _top_entry(tokenizer, t.token_id, t.token, t.logprob)
                for t in (tops[j] if j < len(tops) else [])
            ],
        }
        entries.append(entry)
    return entries


def _top_entry(
    tokenizer: TokenDecoder | None, token_id: int, token: str, logprob: float
) -> dict[str, Any]:
    # engines report alternatives in the tokenizer's internal spelling ("Ġthe"); OpenAI shows text
    text = _token_text(tokenizer, token_id) if tokenizer is not None and token_id >= 0 else token
    return {
        "token": text,
        "logprob": logprob,
        "bytes": list(text.encode("utf-8")),
        "token_id": token_id,
    }


def tool_calls_json(choice: Choice) -> list[dict[str, Any]]:
    return [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
        }
        for call in choice.tool_calls
    ]


def _finish_reason(choice: Choice) -> str:
    if choice.tool_calls:
        return "tool_calls"
    return "stop" if choice.finish_reason == "error" else choice.finish_reason


def completion_response(
    result: ChatResult,
    *,
    request: ChatCompletionRequest,
    completion_id: str,
    created: int,
    tokenizer: TokenDecoder | None,
) -> dict[str, Any]:
    """A `chat.completion` object with the token-level extensions."""
    choices = []
    for choice in result.choices:
        message: dict[str, Any] = {"role": "assistant", "content": choice.content}
        if choice.tool_calls:
            message["tool_calls"] = tool_calls_json(choice)
        item: dict[str, Any] = {
            "index": choice.index,
            "message": message,
            "logprobs": {"content": logprobs_content(choice, tokenizer)}
            if request.logprobs
            else None,
            "finish_reason": _finish_reason(choice),
        }
        if request.wants_token_ids:
            item["token_ids"] = choice.completion_token_ids
        if choice.tool_call_failures:
            item["tool_call_failures"] = [f.model_dump() for f in choice.tool_call_failures]
        choices.append(item)
    body: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": request.model,
        "choices": choices,
        "usage": _usage(result),
        "weight_version": result.weight_version,
    }
    if result.sampled_with is not None:  # ours: how the engine sampled, so a trainer scores alike
        body["sampled_with"] = result.sampled_with.model_dump(exclude={"reported"})
    if request.wants_token_ids:
        body["prompt_token_ids"] = result.prompt_token_ids
    return body


def _usage(result: ChatResult) -> dict[str, int]:
    prompt = result.usage.prompt_tokens
    completion = result.usage.completion_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _incremental_pieces(choice: Choice, tokenizer: TokenDecoder | None) -> list[str] | None:
    """Per-token text deltas whose concatenation is exactly `choice.content`, or None
    when decoding token by token cannot reproduce it (a stop string cut off, ...).

    Byte-level BPE splits characters across tokens; a piece is held back while the
    running decode ends in a partial character, so no delta carries U+FFFD."""
    ids = choice.completion_token_ids
    if tokenizer is None or not ids:
        return None
    pieces, emitted = [], ""
    for j in range(len(ids)):
        text = tokenizer.decode(ids[: j + 1], skip_special_tokens=True)  # EOS is not content
        if text.endswith("\ufffd") and j + 1 < len(ids):
            pieces.append("")
            continue
        if not text.startswith(emitted):
            return None
        pieces.append(text[len(emitted) :])
        emitted = text
    return pieces if emitted == (choice.content or "") else None


def choice_stream_deltas(
    choice: Choice, request: ChatCompletionRequest, tokenizer: TokenDecoder | None
) -> list[dict[str, Any]]:
    """The `choices[0]` objects of the chunks that stream one finished choice.

    A token per chunk (content, its id, its logprobs) when the text has no
    tool-call markup; otherwise the markup-free content in one chunk followed by
    the tool calls, because a client must never see half-parsed markup as content.
    The last delta carries `finish_reason`."""
    ids = choice.completion_token_ids or []
    pieces = (
        None
        if choice.tool_calls or choice.tool_call_failures
        else _incremental_pieces(choice, tokenizer)
    )
    deltas: list[dict[str, Any]] = [
        {"index": choice.index, "delta": {"role": "assistant", "content": ""}}
    ]
    if pieces is not None:
        for j, piece in enumerate(pieces):
            item: dict[str, Any] = {"index": choice.index, "delta": {"content": piece}}
            if request.logprobs:
                item["logprobs"] = {"content": logprobs_content(choice, tokenizer, j, j + 1)}
            if request.wants_token_ids:
                item["token_ids"] = [ids[j]]
            deltas.append(item)
    else:
        item = {"index": choice.index, "delta": {"content": choice.content or ""}}
        if request.logprobs:
            item["logprobs"] = {"content": logprobs_content(choice, tokenizer)}
        if request.wants_token_ids:
            item["token_ids"] = list(ids)
        if choice.tool_calls:
            item["delta"]["tool_calls"] = [
                {"index": k, **call} for k, call in enumerate(tool_calls_json(choice))
            ]
        deltas.append(item)
    deltas.append({"index": choice.index, "delta": {}, "finish_reason": _finish_reason(choice)})
    return deltas
