"""The tool model: an OpenAI function schema, pydantic-validated arguments, an async body.

A failure the model should see (bad arguments, nothing found) is a `ToolError`;
the `Toolbox` turns it, and anything else a tool raises, into an error record, so
no mistake of the model's can end an episode. The machinery failing (a dead
sandbox, a tool server down through its retries) is an `InfrastructureError`
instead: it ends the episode, which is rerun and never scored. LangChain interop goes both
ways: `as_langchain()` gives a `StructuredTool` that LangGraph's `ToolNode` runs,
and `LangChainTool` wraps any `BaseTool` a user hands us.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from agentplay.errors import AgentplayError

if TYPE_CHECKING:
    from agentplay.sandbox import Sandbox
    from langchain_core.tools import BaseTool


class ToolError(AgentplayError):
    """A tool failure the model sees as the tool's answer (and the trace records)."""

    def __init__(self, message: str, *, kind: str = "tool_error") -> None:
        super().__init__(message)
        self.kind = kind
        """Short machine-readable class: bad_arguments, unknown_tool, timeout, unavailable, ..."""

    def __str__(self) -> str:
        return f"{self.kind}: {self.args[0]}"


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming the argument, e.g. ``query: Field required``."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def to_text(result: Any) -> str:
    """What the model reads: strings as they are, anything else as JSON."""
    if isinstance(result, str):
        return result
    if isinstance(result, BaseModel):
        return result.model_dump_json()
    return json.dumps(result, ensure_ascii=False, default=str)


class Tool(ABC):
    """One callable capability. Subclasses set `name`, `description`, `args_model` and write `run`.

    A subclass with ``sandboxed = True`` is handed a `Sandbox` in `run` and must do
    its untrusted work through it (as `CodeTool` does); `@tool(sandboxed=True)`
    functions are shipped into the sandbox whole (see `_sandboxed`).
    """

    name: str
    description: str
    args_model: type[BaseModel]
    sandboxed: bool = False
    """Run inside the sandbox (tools that execute or parse untrusted content)."""
    sandbox: Sandbox | None = None
    """The sandbox to use; when None the `Toolbox` lends its own."""

    def openai_schema(self) -> dict[str, Any]:
        from langchain_core.utils.function_calling import convert_to_openai_tool

        schema = convert_to_openai_tool(self.args_model)
        schema["function"]["name"] = self.name
        schema["function"]["description"] = self.description
        return schema

    def validate_arguments(self, arguments: dict[str, Any]) -> BaseModel:
        if not isinstance(arguments, dict):
            raise ToolError(f"arguments must be a JSON object, got {type(arguments).__name__}", kind="bad_arguments")
        try:
            return self.args_model.model_validate(arguments)
        except ValidationError as exc:
            raise ToolError(format_validation_error(exc), kind="bad_arguments") from None

    async def ainvoke(self, arguments: dict[str, Any], *, sandbox: Sandbox | None = None) -> str:
        """Validate, run, render as text. Raises `ToolError` for model-visible failures."""
        args = self.validate_arguments(arguments)
        box = sandbox or self.sandbox
        if self.sandboxed and box is None:
            raise ToolError(f"tool {self.name!r} must run in a sandbox and none is configured", kind="unavailable")
        return to_text(await self.run(args, box))

    @abstractmethod
    async def run(self, args: Any, sandbox: Sandbox | None) -> Any:
        """The tool body; `sandbox` is set when `sandboxed` is True."""

    def as_langchain(self) -> BaseTool:
        """A LangChain tool whose errors come back as tool messages (LangGraph `ToolNode`-ready)."""
        from langchain_core.tools import StructuredTool, ToolException

        async def _call(**kwargs: Any) -> str:
            try:
                return await self.ainvoke(kwargs)
            except ToolError as exc:
                raise ToolException(f"Error: {exc}") from None

        def _sync(**kwargs: Any) -> str:  # LangChain's sync path (e.g. `.invoke`)
            return asyncio.run(_call(**kwargs))

        return StructuredTool.from_function(
            func=_sync,
            coroutine=_call,
            name=self.name,
            description=self.description,
            args_schema=self.args_model,
            handle_tool_error=True,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, sandboxed={self.sandboxed})"


class FunctionTool(Tool):
    """A tool made from a typed function by `@tool` (sync functions run in a worker thread)."""

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None, description: str | None = None,
                 sandboxed: bool = False) -> None:
        from langchain_core.tools.base import create_schema_from_function

        self.fn = fn
        self.name = name or fn.__name__
        doc = inspect.getdoc(fn) or ""
        self.description = description or doc.split("\n\n")[0].strip() or self.name
        loose = create_schema_from_function(self.name, fn, parse_docstring=bool(doc) and "Args:" in doc)
        # Unknown arguments are an error the model should see, not something to drop silently.
        self.args_model = type(self.name, (loose,), {"model_config": ConfigDict(extra="forbid")})
        self.sandboxed = sandboxed
        self._script = None
        if sandboxed:
            from ._sandboxed import SandboxedFunction

            self._script = SandboxedFunction(fn)

    async def run(self, args: BaseModel, sandbox: Sandbox | None) -> Any:
        kwargs = {k: getattr(args, k) for k in type(args).model_fields}
        if self._script is not None:
            assert sandbox is not None  # checked in ainvoke
            return await self._script.call(sandbox, args.model_dump(mode="json"))
        if inspect.iscoroutinefunction(self.fn):
            return await self.fn(**kwargs)
        return await asyncio.to_thread(self.fn, **kwargs)


@overload
def tool(fn: Callable[..., Any], /) -> FunctionTool: ...
@overload
def tool(*, name: str | None = None, description: str | None = None,
         sandboxed: bool = False) -> Callable[[Callable[..., Any]], FunctionTool]: ...


def tool(fn: Callable[..., Any] | None = None, /, *, name: str | None = None, description: str | None = None,
         sandboxed: bool = False) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Turn a typed function (sync or async) into a `Tool`; `Args:` in its docstring describe parameters.

    With ``sandboxed=True`` the function's source runs in the sandbox's Python
    (see `_sandboxed` for what such a function may use).
    """
    def wrap(f: Callable[..., Any]) -> FunctionTool:
        return FunctionTool(f, name=name, description=description, sandboxed=sandboxed)

    return wrap(fn) if fn is not None else wrap


class LangChainTool(Tool):
    """Any LangChain `BaseTool`, usable in a `Toolbox` with our error handling and records."""

    def __init__(self, base: BaseTool) -> None:
        self.base = base
        self.name = base.name
        self.description = base.description
        schema = base.tool_call_schema
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            self.args_model = schema
        else:  # a JSON-schema dict: LangChain validates when it runs the tool
            self.args_model = create_model(base.name, __config__=ConfigDict(extra="allow"))

    def openai_schema(self) -> dict[str, Any]:
        from langchain_core.utils.function_calling import convert_to_openai_tool

        return convert_to_openai_tool(self.base)

    def validate_arguments(self, arguments: dict[str, Any]) -> Any:
        if not isinstance(arguments, dict):
            raise ToolError(f"arguments must be a JSON object, got {type(arguments).__name__}", kind="bad_arguments")
        try:
            self.args_model.model_validate(arguments)
        except ValidationError as exc:
            raise ToolError(format_validation_error(exc), kind="bad_arguments") from None
        return arguments

    async def run(self, args: dict[str, Any], sandbox: Sandbox | None) -> Any:
        from langchain_core.messages import ToolMessage
        from langchain_core.tools import ToolException

        try:
            out = await self.base.ainvoke(args)
        except ToolException as exc:
            raise ToolError(str(exc)) from None
        except ValidationError as exc:
            raise ToolError(format_validation_error(exc), kind="bad_arguments") from None
        if isinstance(out, ToolMessage):
            out = out.content
        return out

    def as_langchain(self) -> BaseTool:
        return self.base


def as_tool(obj: Tool | BaseTool | Callable[..., Any]) -> Tool:
    """Accept our tools, LangChain tools and plain typed functions alike."""
    if isinstance(obj, Tool):
        return obj
    from langchain_core.tools import BaseTool

    if isinstance(obj, BaseTool):
        return LangChainTool(obj)
    if callable(obj):
        return FunctionTool(obj)
    raise TypeError(f"not a tool: {obj!r} (expected agentplay Tool, LangChain BaseTool or a typed function)")

