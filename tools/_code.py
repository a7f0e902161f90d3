"""`run_python`: model-written code, always in the sandbox, answered in a form a small model reads.

The model sees a status line first (did it work, why not), then the tails of
stdout and stderr: the end of a traceback names the error, and the end of the
output holds the final prints. Anything cut is marked with how much.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from ._base import Tool, ToolError

if TYPE_CHECKING:
    from agentplay.sandbox import Limits, Sandbox, SandboxResult


class RunPythonArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(description="A complete Python program. Print what you want to see.")
    stdin: str = Field("", description="Text given to the program on standard input.")


_WHY = {
    "ok": "finished",
    "error": "failed",
    "timeout": "stopped: time limit reached",
    "oom": "stopped: memory limit reached",
    "output_limit": "stopped: too much output",
}


def _tail(label: str, text: str, cut_by_sandbox: bool, chars: int) -> str:
    if not text and not cut_by_sandbox:
        return ""
    marks = []
    if len(text) > chars:
        marks.append(f"last {chars} of {len(text)} chars")
        text = "..." + text[-chars:]
    if cut_by_sandbox:
        marks.append("output cap reached, rest discarded")
    head = f"--- {label}" + (f" ({'; '.join(marks)})" if marks else "") + " ---"
    return f"{head}\n{text.rstrip()}"


def format_result(res: SandboxResult, tail_chars: int = 1500) -> str:
    """Status line, then stdout and stderr tails with truncation marks."""
    status = f"status: {res.status} ({_WHY.get(res.status, res.status)}"
    if res.exit_code is not None:
        status += f", exit code {res.exit_code}"
    status += f", {res.wall_time_s:.2f} s)"
    parts = [status]
    parts += [p for p in (_tail("stdout", res.stdout, res.stdout_truncated, tail_chars),
                          _tail("stderr", res.stderr, res.stderr_truncated, tail_chars)) if p]
    if len(parts) == 1:
        parts.append("(no output: use print() to show results)")
    return "\n".join(parts)


class CodeTool(Tool):
    """Execute Python in the sandbox. Failing code is a normal result (the model must see its
    traceback); only a failure of the sandbox itself is a tool error."""

    args_model = RunPythonArgs
    sandboxed = True

    def __init__(self, sandbox: Sandbox | None = None, *, limits: Limits | None = None, tail_chars: int = 1500,
                 name: str = "run_python") -> None:
        self.sandbox = sandbox
        self.limits = limits
        """Per-run limits; the sandbox's defaults when None."""
        self.tail_chars = tail_chars
        """Characters kept from the end of each of stdout and stderr."""
        self.name = name
        self.description = (
            "Run a Python 3 program in an isolated sandbox (no network) and get its status, "
            "standard output and errors."
        )

    async def run(self, args: RunPythonArgs, sandbox: Sandbox | None) -> str:
        assert sandbox is not None  # Tool.ainvoke guarantees it for sandboxed tools
        if not args.code.strip():
            raise ToolError("code is empty: send a complete Python program", kind="bad_arguments")
        from agentplay.sandbox import SandboxUnavailable

        # A sandbox that cannot run (or broke mid-run) is the machinery's failure, not the
        # model's: it ends the episode as an infrastructure error (retried, never scored)
        # instead of becoming a tool answer the policy is then judged on.
        res = await sandbox.run_python(args.code, stdin=args.stdin or None, limits=self.limits)
        if res.status == "sandbox_error":
            raise SandboxUnavailable(f"tool {self.name}: the sandbox failed, not the code: "
                                     f"{res.detail or 'no detail'}")
        return format_result(res, self.tail_chars)
