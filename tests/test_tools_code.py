"""The code tool and sandboxed function tools, run in the real Docker sandbox."""

from __future__ import annotations

import re as regex

import pytest
from agentplay.sandbox import Limits, SandboxConfig, open_sandbox
from agentplay.tools import CodeTool, Toolbox, tool
from conftest import require_docker

from agentplay.models import ToolCall

STOPWORDS = ("a", "the", "of")


@tool(sandboxed=True)
def word_counts(text: str, top: int = 2) -> dict:
    """Most frequent words of a text (ignoring a few stopwords)."""
    import collections
    import os

    words = [w for w in regex.findall(r"[a-z]+", text.lower()) if w not in STOPWORDS]
    return {"top": collections.Counter(words).most_common(top), "host_repo_visible": os.path.exists("/work/main")}


@tool(sandboxed=True)
async def checked_ratio(a: float, b: float) -> float:
    """a / b, refusing b == 0."""
    if b == 0:
        raise ValueError("b must not be zero")
    print("noise before the result is fine")
    return a / b


@pytest.fixture
async def sandbox():
    require_docker()
    sb = open_sandbox(config=SandboxConfig(backend="docker", pool_min=1, pool_max=2))
    yield sb
    await sb.aclose()


def call(i: int, name: str, **arguments) -> ToolCall:
    return ToolCall(id=f"c{i}", name=name, arguments=arguments)


async def test_code_tool_reports_status_and_tails(sandbox):
    code = CodeTool(sandbox, limits=Limits(wall_time_s=3), tail_chars=200)
    assert code.sandboxed and code.openai_schema()["function"]["name"] == "run_python"
    tb = Toolbox([code], max_result_chars=4000)
    ok, fails, slow, chatty, reads, empty = await tb.execute([
        call(1, "run_python", code="print(sum(range(10)))"),
        call(2, "run_python", code="x = 1\nprint('before')\nprint(x / 0)"),
        call(3, "run_python", code="import time\ntime.sleep(30)"),
        call(4, "run_python", code="for i in range(2000):\n    print('line', i)"),
        call(5, "run_python", code="import sys\nprint(sys.stdin.read().upper())", stdin="from stdin"),
        call(6, "run_python", code="   "),
    ])
    assert ok.sandboxed and ok.error is None
    assert ok.result.startswith("status: ok (finished, exit code 0,") and ok.result.endswith("--- stdout ---\n45")
    assert fails.error is None, "failing code is a result the model must read, not a tool error"
    assert fails.result.startswith("status: error (failed, exit code 1")
    assert "--- stdout ---\nbefore" in fails.result
    assert fails.result.rstrip().endswith("ZeroDivisionError: division by zero")
    assert slow.result.startswith("status: timeout (stopped: time limit reached")
    assert "--- stdout (last 200 of" in chatty.result and chatty.result.endswith("line 1999")
    assert "line 0\n" not in chatty.result
    assert reads.result.endswith("FROM STDIN")
    assert empty.error == "bad_arguments: code is empty: send a complete Python program"


async def test_sandboxed_function_tools_run_in_the_sandbox(sandbox):
    tb = Toolbox([word_counts, checked_ratio], sandbox=sandbox)
    counts, ratio, refused, bad = await tb.execute([
        call(1, "word_counts", text="The cat and the dog and the bird", top=1),
        call(2, "checked_ratio", a=3, b=4),
        call(3, "checked_ratio", a=1, b=0),
        call(4, "word_counts", text=5),
    ])
    assert counts.sandboxed and counts.error is None
    assert counts.result == '{"top": [["and", 2]], "host_repo_visible": false}'
    assert ratio.result == "0.75"
    assert refused.error == "tool_error: checked_ratio raised ValueError: b must not be zero"
    assert bad.error.startswith("bad_arguments: text: Input should be a valid string")


async def test_toolbox_opens_and_closes_its_own_sandbox():
    require_docker()
    tb = Toolbox([CodeTool()])
    (rec,) = await tb.execute([call(1, "run_python", code="print('hi')")])
    assert rec.error is None and rec.result.endswith("hi")
    assert tb.sandbox is not None
    await tb.aclose()
    assert tb.sandbox is None


def test_sandboxed_functions_must_be_self_contained():
    secret = "host value"

    with pytest.raises(ValueError, match="closes over secret"):
        @tool(sandboxed=True)
        def leaky(x: int) -> str:
            """Uses a closure."""
            return secret * x

    with pytest.raises(ValueError, match="uses the global 'Toolbox'"):
        @tool(sandboxed=True)
        def uses_host_object(x: int) -> str:
            """Uses a host class."""
            return repr(Toolbox)


async def test_sandbox_failure_ends_the_episode_not_a_tool_answer(sandbox):
    """A sandbox that cannot run is the machinery's failure (issue 19): it is raised to the
    episode (infrastructure errors are retried, never scored), never shown to the model as
    a tool result it would then be judged on."""
    from agentplay.sandbox import SandboxError

    await sandbox.aclose()
    with pytest.raises(SandboxError, match="the sandbox is closed"):
        await CodeTool(sandbox).ainvoke({"code": "print(1)"})
    with pytest.raises(SandboxError, match="the sandbox is closed"):
        await Toolbox([word_counts], sandbox=sandbox).execute([call(1, "word_counts", text="a b")])
