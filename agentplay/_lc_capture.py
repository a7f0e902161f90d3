"""Trace capture for graphs written with LangChain chat models instead of `Role`.

`run_episode` passes this handler in the graph's callbacks; LangGraph tags each
LLM call with the node that made it (``langgraph_node``) and the task it ran in
(``langgraph_checkpoint_ns``). Calls of one node task become one RoleTurn, with
the same token-exact accumulation a Role uses, and the role name comes from the
recipe's node -> role map.

Only chat-model calls make turns. A tool call joins the turn of the chat model
that ran in the same node task; tools run elsewhere (by a `Role`, which records
its own tool calls, or by a LangGraph `ToolNode` in a node of its own, whose
results reach the next chat call as tool messages) record nothing here: a
turn without a model call would be an empty sample that reward functions count.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any
from uuid import UUID

from langchain_core.callbacks import AsyncCallbackHandler

from agentplay._recorder import EpisodeRecorder
from agentplay._role_loop import TokenTrace
from agentplay.models import SamplingRecord
from agentplay.traces import Generation, RoleTurn, ToolCallRecord

__all__ = ["TraceCallback", "role_tools"]

_ROLE_TOOLS: ContextVar[bool] = ContextVar("agentplay_role_tools", default=False)


@contextlib.contextmanager
def role_tools() -> Iterator[None]:
    """Tools run inside this block belong to a `Role`, which records them itself."""
    token = _ROLE_TOOLS.set(True)
    try:
        yield
    finally:
        _ROLE_TOOLS.reset(token)


class TraceCallback(AsyncCallbackHandler):
    """Records every chat-model call and tool call made inside graph nodes."""

    def __init__(self, compiled: Any, recorder: EpisodeRecorder) -> None:
        self._compiled = compiled
        self._recorder = recorder
        self._calls: dict[UUID, tuple[str, str]] = {}
        self._turns: dict[str, tuple[RoleTurn, TokenTrace]] = {}
        self._tools: dict[UUID, tuple[str, ToolCallRecord, float]] = {}

    def _task(self, metadata: dict[str, Any] | None) -> tuple[str, str] | None:
        meta = metadata or {}
        node = meta.get("langgraph_node")
        if not node:
            return None
        return str(node), str(meta.get("langgraph_checkpoint_ns") or node)

    def _turn_for(self, node: str, task: str) -> tuple[RoleTurn, TokenTrace]:
        if task not in self._turns:
            role = self._compiled.role_for_node(node) or node
            turn = RoleTurn(role=role, node=node)
            self._turns[task] = (turn, TokenTrace())
            self._recorder.add(turn)
        return self._turns[task]

    async def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[Any]], *,
                                  run_id: UUID, parent_run_id: UUID | None = None,
                                  tags: list[str] | None = None, metadata: dict[str, Any] | None = None,
                                  **kwargs: Any) -> None:
        task = self._task(metadata)
        if task is None:
            return
        self._calls[run_id] = task
        turn, _ = self._turn_for(*task)
        if not turn.messages and messages:
            turn.messages = [_as_dict(m) for m in messages[0]]

    async def on_llm_end(self, response: Any, *, run_id: UUID, parent_run_id: UUID | None = None,
                         **kwargs: Any) -> None:
        task = self._calls.pop(run_id, None)
        if task is None or not response.generations or not response.generations[0]:
            return
        turn, trace = self._turn_for(*task)
        gen = response.generations[0][0]
        message = getattr(gen, "message", None)
        meta = dict(getattr(message, "response_metadata", None) or {})
        extra = getattr(message, "additional_kwargs", None) or {}
        text = str(extra.get("raw_text") or getattr(gen, "text", "") or "")  # raw: tool-call markup included
        prompt_ids = meta.get("prompt_token_ids")
        completion_ids = meta.get("completion_token_ids", meta.get("token_ids"))
        logprobs = _logprobs(meta.get("logprobs"))
        trace.add(prompt_ids, completion_ids, logprobs, exact=not meta.get("token_ids_retokenized"))
        trace.fill(turn)
        version = meta.get("weight_version")
        turn.weight_version = version if version is not None else turn.weight_version
        turn.generations.append(Generation(
            prompt_token_ids=prompt_ids, completion_token_ids=completion_ids, logprobs=logprobs,
            text=text, finish_reason=str(meta.get("finish_reason") or "stop"),
            weight_version=version, model=str(meta.get("model_name") or meta.get("model") or ""),
            sampling=_sampling(meta.get("sampled_with")), tokenizer=meta.get("tokenizer"),
        ))
        if message is not None:
            turn.messages.append(_as_dict(message))
            content = message.content if isinstance(message.content, str) else str(message.content)
            turn.output = content.strip() or turn.output
        turn.latency_s = time.time() - turn.started_at

    async def on_tool_start(self, serialized: dict[str, Any], input_str: str, *, run_id: UUID,
                            parent_run_id: UUID | None = None, tags: list[str] | None = None,
                            metadata: dict[str, Any] | None = None, inputs: dict[str, Any] | None = None,
                            **kwargs: Any) -> None:
        task = self._task(metadata)
        if task is None or _ROLE_TOOLS.get() or task[1] not in self._turns:
            return  # a Role's tool, or no chat-model turn in this task to attach it to
        name = str((serialized or {}).get("name") or kwargs.get("name") or "")
        record = ToolCallRecord(call_id=str(run_id), name=name, arguments=inputs, raw_arguments=input_str)
        self._tools[run_id] = (task[1], record, time.perf_counter())
        self._turns[task[1]][0].tool_calls.append(record)

    async def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        entry = self._tools.pop(run_id, None)
        if entry is not None:
            _, record, start = entry
            record.result = str(getattr(output, "content", output))
            record.latency_s = time.perf_counter() - start

    async def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        entry = self._tools.pop(run_id, None)
        if entry is not None:
            entry[1].error = f"{type(error).__name__}: {error}"


def _sampling(value: Any) -> SamplingRecord | None:
    """The agentplay model's own record of how it sampled; None from other chat models (the
    trainer then scores at the recipe's declared temperature)."""
    try:
        return SamplingRecord.model_validate(value) if isinstance(value, dict) else None
    except ValueError:
        return None


def _logprobs(value: Any) -> list[float] | None:
    """Plain floats, or the OpenAI shape ``{"content": [{"logprob": ...}, ...]}``."""
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("content") or []
    out: list[float] = []
    for item in value:
        out.append(float(item["logprob"] if isinstance(item, dict) else item))
    return out


def _as_dict(message: Any) -> dict[str, Any]:
    role = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}.get(
        getattr(message, "type", ""), getattr(message, "type", "user"))
    out: dict[str, Any] = {"role": role, "content": getattr(message, "content", str(message))}
    if getattr(message, "tool_calls", None):
        out["tool_calls"] = [
            {"id": c.get("id"), "type": "function", "function": {"name": c["name"], "arguments": c["args"]}}
            for c in message.tool_calls
        ]
    if getattr(message, "tool_call_id", None):
        out["tool_call_id"] = message.tool_call_id
    return out
