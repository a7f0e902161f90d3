"""A LangChain chat model over any agentplay model, so any LangGraph graph can be trained.

LangGraph users get what they expect from a chat model (`bind_tools`,
`with_structured_output`, streaming), and every call also leaves the exact
record training needs on the AIMessage: prompt and completion token ids,
logprobs and the weight version in `response_metadata` (and `generation_info`).

The raw completion (tool-call markup included) travels in
`additional_kwargs["raw_text"]` and replaces `content` when the message is sent
back to the model, so the next turn's prompt re-renders the tokens the model
actually wrote instead of a re-serialisation of its parsed calls.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, TypeVar

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    convert_to_openai_messages,
)
from langchain_core.messages.tool import invalid_tool_call, tool_call, tool_call_chunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk
from langchain_core.outputs import ChatResult as LCChatResult
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ._base import ChatModel
from ._types import ChatResult, Choice, Message, SamplingParams

__all__ = ["RAW_TEXT_KEY", "AgentplayChatModel", "to_engine_messages"]

RAW_TEXT_KEY = "raw_text"
"""Key in `AIMessage.additional_kwargs` holding the completion exactly as the model wrote it."""

T = TypeVar("T")
_SAMPLING_FIELDS = set(SamplingParams.model_fields)
_JSON_OBJECT = re.compile(r"\{.*\}", re.DOTALL)


def to_engine_messages(messages: Sequence[BaseMessage]) -> list[Message]:
    """LangChain messages -> the engine's OpenAI-shaped dicts, raw assistant text restored."""
    out: list[Message] = []
    for message in messages:
        msg: Message = convert_to_openai_messages(message, text_format="string")
        if isinstance(message, AIMessage):
            raw = message.additional_kwargs.get(RAW_TEXT_KEY)
            if isinstance(raw, str):
                msg["content"] = raw
            for call in msg.get("tool_calls") or []:
                args = call["function"].get("arguments")
                if isinstance(args, str):
                    try:
                        call["function"]["arguments"] = json.loads(args)
                    except json.JSONDecodeError:
                        pass  # keep what was written; the template renders it as is
        out.append(msg)
    return out


def _metadata(result: ChatResult, choice: Choice) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "model_name": result.model,
        "finish_reason": choice.finish_reason,
        "weight_version": result.weight_version,
        "prompt_token_ids": result.prompt_token_ids,
        "completion_token_ids": choice.completion_token_ids,
        "logprobs": choice.logprobs,
    }
    if result.sampled_with is not None:
        meta["sampled_with"] = result.sampled_with.model_dump()
    if result.retokenized:
        meta["token_ids_retokenized"] = True
    if result.tokenizer is not None:
        meta["tokenizer"] = result.tokenizer
    if choice.top_logprobs is not None:
        meta["top_logprobs"] = [[t.model_dump() for t in step] for step in choice.top_logprobs]
    if choice.tool_call_failures:
        meta["tool_call_failures"] = [f.model_dump() for f in choice.tool_call_failures]
    return meta


def _usage(result: ChatResult) -> dict[str, int]:
    u = result.usage
    return {
        "input_tokens": u.prompt_tokens,
        "output_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    }


def _ai_message(result: ChatResult, choice: Choice) -> AIMessage:
    return AIMessage(
        content=choice.content or "",
        tool_calls=[tool_call(name=c.name, args=c.arguments, id=c.id) for c in choice.tool_calls],
        invalid_tool_calls=[
            invalid_tool_call(name=None, args=f.raw, id=None, error=f.error)
            for f in choice.tool_call_failures
        ],
        additional_kwargs={RAW_TEXT_KEY: choice.text},
        response_metadata=_metadata(result, choice),
        usage_metadata=_usage(result),
    )


def _final_chunk(result: ChatResult, choice: Choice, *, streamed_content: bool) -> AIMessageChunk:
    """The chunk that closes a stream: tool calls, raw text and the token record."""
    return AIMessageChunk(
        content="" if streamed_content else (choice.content or ""),
        tool_call_chunks=[
            tool_call_chunk(name=c.name, args=json.dumps(c.arguments), id=c.id, index=k)
            for k, c in enumerate(choice.tool_calls)
        ],
        additional_kwargs={RAW_TEXT_KEY: choice.text},
        response_metadata=_metadata(result, choice),
        usage_metadata=_usage(result),
        chunk_position="last",
    )


def _run_sync(coro: Any) -> Any:
    """The thin sync wrapper: LangChain's `invoke` path on top of the async one."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1) as pool:  # called from sync code inside a running loop
        return pool.submit(asyncio.run, coro).result()


def _select_tools(
    tools: list[dict[str, Any]] | None, tool_choice: Any
) -> list[dict[str, Any]] | None:
    """Apply `tool_choice` as far as a sampler without constrained decoding can:
    "none" hides the tools, a named tool is the only one offered; "any"/"required"
    cannot force a call, so they offer all tools (the parse path records what came)."""
    if not tools or tool_choice in (None, "auto", "any", "required", True):
        return tools
    if tool_choice in ("none", False):
        return None
    name = (
        tool_choice
        if isinstance(tool_choice, str)
        else (tool_choice.get("function") or {}).get("name")
    )
    chosen = [t for t in tools if t["function"]["name"] == name]
    if not chosen:
        known = ", ".join(t["function"]["name"] for t in tools)
        raise ValueError(f"tool_choice: {name!r} is not one of the bound tools ({known})")
    return chosen


class AgentplayChatModel(BaseChatModel):
    """A LangChain chat model backed by an agentplay ChatModel (local engine or API).

    `AgentplayChatModel(model=load_model("local:smollm2-135m-instruct"))` or
    `AgentplayChatModel(model="local:smollm2-135m-instruct")`. Sampling knobs
    (`temperature`, `max_tokens`, `n`, `seed`, ...) go in `sampling` or through
    `.bind(temperature=0)`."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model: Any
    """An agentplay ChatModel, or a spec / ModelConfig resolved with `load_model`."""
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    """Defaults for every call; per-call keyword arguments override single fields."""

    @field_validator("model", mode="before")
    @classmethod
    def _resolve_model(cls, value: Any) -> ChatModel:
        if isinstance(value, ChatModel):
            return value
        from . import ModelConfig, load_model

        if isinstance(value, (str, ModelConfig)):
            return load_model(value)
        raise TypeError(
            f"model: expected an agentplay ChatModel, spec string or ModelConfig, got {type(value).__name__}"
        )

    @property
    def _llm_type(self) -> str:
        return "agentplay"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model.spec, **self.sampling.model_dump(exclude_defaults=True)}

    def _prepare(
        self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[list[Message], list[dict[str, Any]] | None, SamplingParams]:
        """Engine messages, tools and sampling for one call; bad keyword arguments name themselves."""
        kwargs = dict(kwargs)
        kwargs.pop("ls_structured_output_format", None)
        engine_messages = _with_instruction(
            to_engine_messages(messages), kwargs.pop("system_instruction", None)
        )
        tools = _select_tools(kwargs.pop("tools", None), kwargs.pop("tool_choice", None))
        unknown = set(kwargs) - _SAMPLING_FIELDS
        if unknown:
            raise ValueError(
                f"{', '.join(sorted(unknown))}: not a sampling parameter; accepted: {', '.join(sorted(_SAMPLING_FIELDS))}"
            )
        if stop is not None:
            kwargs["stop"] = stop
        sampling = SamplingParams.model_validate(self.sampling.model_dump() | kwargs)
        return engine_messages, tools, sampling

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LCChatResult:
        engine_messages, tools, sampling = self._prepare(messages, stop, kwargs)
        result = await self.model.chat(engine_messages, tools=tools, sampling=sampling)
        generations = [
            ChatGeneration(message=_ai_message(result, c), generation_info=_metadata(result, c))
            for c in result.choices
        ]
        return LCChatResult(
            generations=generations,
            llm_output={"model_name": result.model, "weight_version": result.weight_version},
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LCChatResult:
        return _run_sync(self._agenerate(messages, stop, None, **kwargs))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        """Real text deltas when the backend streams (`OpenAIModel.stream_chat`); the
        local engine decodes whole batches, so there the stream is one final chunk.
        Only the first choice is streamed (LangChain streams one generation)."""
        engine_messages, tools, sampling = self._prepare(messages, stop, kwargs)
        stream_chat = getattr(self.model, "stream_chat", None)
        if stream_chat is None:
            result = await self.model.chat(engine_messages, tools=tools, sampling=sampling)
            chunk = _final_chunk(result, result.choice, streamed_content=False)
            yield ChatGenerationChunk(
                message=chunk, generation_info=_metadata(result, result.choice)
            )
            return
        streamed = False
        async for event in stream_chat(engine_messages, tools=tools, sampling=sampling):
            if isinstance(event, ChatResult):
                choice = event.choice
                # content arrived as deltas unless the server sent markup-free content in one piece
                chunk = _final_chunk(event, choice, streamed_content=streamed)
                yield ChatGenerationChunk(message=chunk, generation_info=_metadata(event, choice))
            elif event.index == 0 and event.text:
                streamed = True
                piece = ChatGenerationChunk(message=AIMessageChunk(content=event.text))
                if run_manager is not None:
                    await run_manager.on_llm_new_token(event.text, chunk=piece)
                yield piece

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        async def collect() -> list[ChatGenerationChunk]:
            return [c async for c in self._astream(messages, stop, None, **kwargs)]

        yield from _run_sync(collect())

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | dict[str, Any] | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        formatted = [convert_to_openai_tool(t) for t in tools]
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        method: Literal["function_calling", "json_mode", "json_schema"] = "function_calling",
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Structured output by tool calling (default) or by asking for JSON.

        Small models often answer with bare JSON instead of calling the tool, so
        either way the parser accepts a call of the schema's tool or a JSON object
        in the text; anything else is a parse error that names what came back
        (returned as `parsing_error` with `include_raw=True`, raised otherwise)."""
        kwargs.pop("strict", None)
        if kwargs:
            raise ValueError(f"with_structured_output: unsupported arguments {sorted(kwargs)}")
        tool = convert_to_openai_tool(schema)
        name = tool["function"]["name"]
        if method == "function_calling":
            llm: Runnable[Any, Any] = self.bind_tools([tool], tool_choice=name)
        elif method in ("json_mode", "json_schema"):
            instruction = (
                "Answer with one JSON object and nothing else. It must match this JSON schema:\n"
                + json.dumps(tool["function"].get("parameters", {}))
            )
            llm = self.bind(system_instruction=instruction)
        else:
            raise ValueError(
                f"method: {method!r} is not one of function_calling, json_mode, json_schema"
            )

        def parse(raw: AIMessage) -> dict[str, Any]:
            try:
                return {
                    "raw": raw,
                    "parsed": _parse_structured(raw, schema, name),
                    "parsing_error": None,
                }
            except OutputParserException as exc:
                return {"raw": raw, "parsed": None, "parsing_error": exc}

        def unwrap(out: dict[str, Any]) -> Any:
            if out["parsing_error"] is not None:
                raise out["parsing_error"]
            return out["parsed"]

        chain = llm | RunnableLambda(parse)
        return chain if include_raw else chain | RunnableLambda(unwrap)


def _with_instruction(messages: list[Message], instruction: str | None) -> list[Message]:
    """Append `instruction` to the system message (or add one): how JSON mode asks for JSON."""
    if not instruction:
        return messages
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0])
        first["content"] = f"{first.get('content') or ''}\n\n{instruction}".lstrip()
        return [first, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


def _parse_structured(raw: AIMessage, schema: dict[str, Any] | type, name: str) -> Any:
    # Only one tool was offered, so a call under another name (small models misname
    # it) still carries the arguments meant for the schema; the schema validates them.
    candidates: list[Any] = [c["args"] for c in raw.tool_calls if c["name"] == name]
    candidates += [c["args"] for c in raw.tool_calls if c["name"] != name]
    if not candidates:
        text = raw.additional_kwargs.get(RAW_TEXT_KEY) or raw.text
        match = _JSON_OBJECT.search(text)
        if match:
            try:
                obj = json.loads(match.group(0))
            except json.JSONDecodeError:
                obj = None
            if isinstance(obj, dict):
                # a bare call object {"name": ..., "arguments": {...}} or the object itself
                candidates.append(
                    obj["arguments"] if isinstance(obj.get("arguments"), dict) else obj
                )
    if not candidates:
        calls = [c["name"] for c in raw.tool_calls]
        raise OutputParserException(
            f"expected a call of {name!r} or a JSON object; the model called {calls} and wrote {raw.text[:200]!r}",
            llm_output=raw.text,
        )
    args = candidates[0]
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        try:
            return schema.model_validate(args)
        except ValueError as exc:
            raise OutputParserException(f"{name}: {exc}", llm_output=json.dumps(args)) from exc
    return args
