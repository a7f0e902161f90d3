"""Running a tool function inside the sandbox instead of the host process.

Design: a Python function cannot be moved across a process (or container)
boundary, but its source can. We send the function's source, a preamble that
re-creates what it may reference, and its validated arguments as JSON on stdin;
the sandbox's interpreter runs it and prints the JSON result after a per-call
marker line, so the function may print freely before it.

What a sandboxed tool function may use (checked when the tool is made, so a
mistake is a developer error at import time, not a model-visible failure):

- its parameters, locals and builtins;
- modules it imports inside its body, or module-level imports of its home
  module (re-imported by name in the sandbox: only what the sandbox image
  has, normally the standard library);
- module-level constants of simple literal types (str, int, float, bool,
  None, and tuples/lists/dicts of those), copied by value.

What it may not use: closures, other module-level functions or objects,
`self`, host files or state. Arguments and results cross as JSON (a non-string
result is JSON-encoded). Each call costs one sandbox run (~0.1 s warm Docker,
more cold) and runs under the sandbox's limits; an exception in the function
becomes a tool error carrying its last traceback line.
"""

from __future__ import annotations

import inspect
import json
import secrets
import textwrap
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ._base import ToolError

if TYPE_CHECKING:
    from agentplay.sandbox import Limits, Sandbox

_LITERALS = (str, int, float, bool, type(None))


def _is_literal(value: Any) -> bool:
    if isinstance(value, _LITERALS):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_literal(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_literal(v) for k, v in value.items())
    return False


def _function_source(fn: Callable[..., Any]) -> str:
    try:
        src = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as exc:
        raise ValueError(f"sandboxed tool {fn.__name__!r}: source unavailable ({exc})") from None
    lines = src.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith(("def ", "async def ")))
    return "\n".join(lines[start:]) + "\n"


def _referenced_globals(code: Any) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:  # nested functions, comprehensions, lambdas
        if inspect.iscode(const):
            names |= _referenced_globals(const)
    return names


def _preamble(fn: Callable[..., Any]) -> str:
    """Imports and constants the function refers to, or ValueError naming what cannot cross."""
    if fn.__code__.co_freevars:
        raise ValueError(
            f"sandboxed tool {fn.__name__!r} closes over {', '.join(fn.__code__.co_freevars)}; "
            "a sandboxed function must be self-contained"
        )
    lines = []
    for name in sorted(_referenced_globals(fn.__code__)):
        if name not in fn.__globals__:
            continue  # attribute names, builtins, or names bound inside the function
        value = fn.__globals__[name]
        if value is fn:
            continue
        if isinstance(value, ModuleType):
            lines.append(f"import {value.__name__} as {name}")
        elif _is_literal(value):
            lines.append(f"{name} = {value!r}")
        else:
            raise ValueError(
                f"sandboxed tool {fn.__name__!r} uses the global {name!r} ({type(value).__name__}), "
                "which cannot be sent to the sandbox: import or define it inside the function"
            )
    return "\n".join(lines)


class SandboxedFunction:
    """A function prepared to run in a sandbox: its script, built once."""

    def __init__(self, fn: Callable[..., Any], *, limits: Limits | None = None) -> None:
        self.name = fn.__name__
        self.limits = limits
        self._script = "\n".join([
            "import asyncio as _asyncio, inspect as _inspect, json as _json, sys as _sys",
            _preamble(fn),
            _function_source(fn),
            "_marker = _sys.stdin.readline().strip()",
            "_args = _json.loads(_sys.stdin.read())",
            f"_out = {fn.__name__}(**_args)",
            "if _inspect.isawaitable(_out):\n    _out = _asyncio.run(_out)",
            "_sys.stdout.flush()",
            "_sys.stdout.write('\\n' + _marker + '\\n' + _json.dumps(_out, ensure_ascii=False, default=str))",
        ])

    @property
    def script(self) -> str:
        return self._script

    async def call(self, sandbox: Sandbox, arguments: dict[str, Any]) -> Any:
        marker = f"@@agentplay-result-{secrets.token_hex(8)}@@"
        stdin = marker + "\n" + json.dumps(arguments)
        from agentplay.sandbox import SandboxUnavailable

        res = await sandbox.run_python(self._script, stdin=stdin, limits=self.limits)
        if res.status == "sandbox_error":  # the machinery failed: an infrastructure error, not a tool answer
            raise SandboxUnavailable(f"tool {self.name}: the sandbox failed: {res.detail or 'no detail'}")
        if res.status == "error":
            last = next((ln for ln in reversed(res.stderr.strip().splitlines()) if ln.strip()), "")
            raise ToolError(f"{self.name} raised {last or f'exit code {res.exit_code}'}")
        if res.status != "ok":
            detail = f" ({res.detail})" if res.detail else ""
            raise ToolError(f"sandbox run ended with status {res.status}{detail}", kind="sandbox")
        _, sep, payload = res.stdout.rpartition("\n" + marker + "\n")
        if not sep:
            raise ToolError("sandboxed tool produced no result (output truncated or process exited early)",
                            kind="sandbox")
        return json.loads(payload)
