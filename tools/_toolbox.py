"""A role's tools: schemas for the model, concurrent execution, exact records for the trace.

`execute` never raises: every call, good or bad, becomes a `ToolCallRecord`
whose `result` or `error` is what the model will read. Calls of one model turn
run concurrently (the model asked for them together; a slow web search must
not serialise a quick document read behind it).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Self

from agentplay.sandbox import SandboxError

from agentplay.errors import InfrastructureError
from agentplay.models import ToolCall, ToolCallParseFailure
from agentplay.traces import ToolCallRecord, new_id

from ._base import Tool, ToolError, as_tool
from ._http import ToolServerMisconfigured

if TYPE_CHECKING:
    from agentplay.sandbox import Sandbox
    from langchain_core.tools import BaseTool

HARD_RESULT_LIMIT = 1_000_000
"""Characters past which a result is rejected outright (an error) instead of truncated."""


def truncate(text: str, limit: int) -> tuple[str, bool]:
    """Keep the head (where search hits and tracebacks' first lines live) and say what was cut."""
    if len(text) <= limit:
        return text, False
    note = f"\n[... truncated: showing {limit} of {len(text)} characters]"
    return text[:limit] + note, True


class Toolbox:
    """The tools one role may call, executed with validation, limits and records."""

    def __init__(
        self,
        tools: Iterable[Tool | BaseTool | Any] = (),
        max_result_chars: int = 4000,
        *,
        timeout_s: float = 120.0,
        sandbox: Sandbox | None = None,
    ) -> None:
        if max_result_chars < 1:
            raise ValueError(f"max_result_chars must be >= 1, got {max_result_chars}")
        self.tools: dict[str, Tool] = {}
        for obj in tools:
            t = as_tool(obj)
            if t.name in self.tools:
                raise ValueError(f"two tools are named {t.name!r}; tool names must be unique")
            self.tools[t.name] = t
        self.max_result_chars = max_result_chars
        """Results longer than this are cut (record flagged `truncated`)."""
        self.timeout_s = timeout_s
        """Wall-clock budget per call; past it the call is an error record."""
        self.sandbox = sandbox
        """Lent to sandboxed tools without their own; opened on first need when None."""
        self._own_sandbox = False
        self._sandbox_lock = asyncio.Lock()

    def __contains__(self, name: str) -> bool:
        return name in self.tools

    def __len__(self) -> int:
        return len(self.tools)

    @property
    def names(self) -> list[str]:
        return list(self.tools)

    def schemas(self) -> list[dict[str, Any]]:
        """OpenAI tool schemas, in the order the tools were given."""
        return [t.openai_schema() for t in self.tools.values()]

    def as_langchain(self) -> list[BaseTool]:
        return [t.as_langchain() for t in self.tools.values()]

    async def _sandbox_for(self, t: Tool) -> Sandbox | None:
        if not t.sandboxed or t.sandbox is not None:
            return t.sandbox
        async with self._sandbox_lock:
            if self.sandbox is None:
                from agentplay.sandbox import open_sandbox

                self.sandbox = open_sandbox()
                self._own_sandbox = True
        return self.sandbox

    async def _run(self, call: ToolCall) -> ToolCallRecord:
        record = ToolCallRecord(
            call_id=call.id or new_id(),
            name=call.name,
            arguments=call.arguments,
            raw_arguments=call.raw or json.dumps(call.arguments, ensure_ascii=False),
        )
        t = self.tools.get(call.name)
        if t is None:
            known = ", ".join(self.tools) or "none"
            record.error = str(ToolError(f"no tool named {call.name!r}; available: {known}", kind="unknown_tool"))
            return record
        record.sandboxed = t.sandboxed
        start = time.perf_counter()
        try:
            sandbox = await self._sandbox_for(t)
            result = await asyncio.wait_for(t.ainvoke(call.arguments, sandbox=sandbox), self.timeout_s)
            if len(result) > HARD_RESULT_LIMIT:
                raise ToolError(f"result of {len(result)} characters exceeds the hard limit of "
                                f"{HARD_RESULT_LIMIT}; ask for less", kind="result_too_large")
            record.result, record.truncated = truncate(result, self.max_result_chars)
        except ToolError as exc:
            record.error = str(exc)
        except (InfrastructureError, SandboxError, ToolServerMisconfigured):
            raise  # a dead or misconfigured sandbox or tool server is not the model's doing: never a tool answer
        except TimeoutError:  # the model moves on; a sync tool's worker thread cannot be killed and finishes alone
            record.error = str(ToolError(f"no answer within {self.timeout_s:g} s", kind="timeout"))
        except Exception as exc:  # noqa: BLE001 - a broken tool must not end the episode
            record.error = str(ToolError(f"{type(exc).__name__}: {exc}", kind="internal_error"))
        record.latency_s = time.perf_counter() - start
        return record

    @staticmethod
    def _parse_failure(failure: ToolCallParseFailure) -> ToolCallRecord:
        err = ToolError(f"could not parse the tool call ({failure.error}); write valid JSON arguments",
                        kind="parse_error")
        return ToolCallRecord(call_id=new_id(), name="", raw_arguments=failure.raw, error=str(err))

    async def execute(self, calls: Sequence[ToolCall | ToolCallParseFailure]) -> list[ToolCallRecord]:
        """Run all calls concurrently; records come back in the order of `calls`."""
        async def one(call: ToolCall | ToolCallParseFailure) -> ToolCallRecord:
            if isinstance(call, ToolCallParseFailure):
                return self._parse_failure(call)
            return await self._run(call)

        return list(await asyncio.gather(*(one(c) for c in calls)))

    @staticmethod
    def tool_message(record: ToolCallRecord) -> dict[str, Any]:
        """The chat message that carries the record back to the model."""
        content = f"Error: {record.error}" if record.error is not None else record.result
        return {"role": "tool", "tool_call_id": record.call_id, "name": record.name, "content": content}

    async def aclose(self) -> None:
        """Close the sandbox this toolbox opened (never one it was given)."""
        if self._own_sandbox and self.sandbox is not None:
            await self.sandbox.aclose()
            self.sandbox = None
            self._own_sandbox = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"Toolbox({self.names}, max_result_chars={self.max_result_chars})"
