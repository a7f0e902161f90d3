"""The tool model and the Toolbox: schemas, validation, concurrency, records, LangChain interop."""

from __future__ import annotations

import asyncio
import time

import pytest
from agentplay.tools import Tool, Toolbox, ToolError, tool
from langchain_core.messages import AIMessage
from langchain_core.tools import tool as lc_tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

from agentplay.models import ToolCall, ToolCallParseFailure
from agentplay.traces import ToolCallRecord


@tool
async def add(a: int, b: int = 1) -> int:
    """Add two integers.

    Args:
        a: first addend
        b: second addend
    """
    return a + b


@tool
def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()


@tool
async def nap(seconds: float) -> str:
    """Sleep, then say so."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


@tool
def explode(message: str) -> str:
    """Always fails."""
    raise RuntimeError(message)


@tool
def refuse(reason: str) -> str:
    """Fails the way a tool should: with a ToolError."""
    raise ToolError(reason, kind="not_found")


@tool
def flood(n: int) -> str:
    """Return n characters."""
    return "x" * n


def call(name: str, **arguments) -> ToolCall:
    return ToolCall(id=f"call-{name}-{len(arguments)}", name=name, arguments=arguments)


def test_openai_schema_from_typed_function():
    schema = add.openai_schema()
    assert schema["type"] == "function"
    fn = schema["function"]
    assert fn["name"] == "add" and fn["description"] == "Add two integers."
    props = fn["parameters"]["properties"]
    assert props["a"]["type"] == "integer" and props["a"]["description"] == "first addend"
    assert props["b"]["default"] == 1
    assert fn["parameters"]["required"] == ["a"]
    assert isinstance(add, Tool) and add.sandboxed is False


async def test_ainvoke_validates_and_renders():
    assert await add.ainvoke({"a": 2, "b": 3}) == "5"
    assert await shout.ainvoke({"text": "hi"}) == "HI"
    with pytest.raises(ToolError, match=r"bad_arguments: a: Input should be a valid integer"):
        await add.ainvoke({"a": "two"})
    with pytest.raises(ToolError, match=r"bad_arguments: c: Extra inputs are not permitted"):
        await add.ainvoke({"a": 1, "c": 2})
    with pytest.raises(ToolError, match=r"bad_arguments: a: Field required"):
        await add.ainvoke({})


async def test_toolbox_records_every_kind_of_failure_and_never_raises():
    tb = Toolbox([add, explode, refuse, flood], max_result_chars=50)
    calls = [
        call("add", a=1, b=2),
        call("add", a="x"),
        call("nope", q=1),
        call("explode", message="boom"),
        call("refuse", reason="no such page"),
        call("flood", n=120),
        ToolCallParseFailure(raw='<tool_call>{"name": "add", "arguments": {a: 1', error="Expecting property name"),
    ]
    records = await tb.execute(calls)
    assert [type(r) for r in records] == [ToolCallRecord] * len(calls)
    ok, bad_args, unknown, boom, refused, big, unparsed = records
    assert ok.result == "3" and ok.error is None and ok.arguments == {"a": 1, "b": 2} and ok.latency_s >= 0
    assert bad_args.error.startswith("bad_arguments: a:") and bad_args.result == ""
    assert unknown.error == "unknown_tool: no tool named 'nope'; available: add, explode, refuse, flood"
    assert boom.error == "internal_error: RuntimeError: boom"
    assert refused.error == "not_found: no such page"
    assert big.truncated and big.result.startswith("x" * 50) and "showing 50 of 120 characters" in big.result
    assert unparsed.error.startswith("parse_error: could not parse the tool call (Expecting property name)")
    assert unparsed.raw_arguments.startswith("<tool_call>")
    msg = tb.tool_message(unknown)
    assert msg == {"role": "tool", "tool_call_id": unknown.call_id, "name": "nope",
                   "content": "Error: " + unknown.error}
    assert tb.tool_message(ok)["content"] == "3"


async def test_toolbox_runs_calls_concurrently_and_times_out():
    tb = Toolbox([nap], timeout_s=0.6)
    start = time.perf_counter()
    records = await tb.execute([call("nap", seconds=0.4), ToolCall(id="b", name="nap", arguments={"seconds": 0.4}),
                                ToolCall(id="c", name="nap", arguments={"seconds": 5})])
    elapsed = time.perf_counter() - start
    assert [r.result for r in records[:2]] == ["slept 0.4", "slept 0.4"]
    assert records[2].error == "timeout: no answer within 0.6 s"
    assert elapsed < 1.2, f"three calls took {elapsed:.2f} s: they did not run concurrently"


async def test_hard_result_limit_is_an_error():
    records = await Toolbox([flood]).execute([call("flood", n=1_000_001)])
    assert records[0].error.startswith("result_too_large: result of 1000001 characters")
    assert records[0].result == ""


def test_toolbox_rejects_duplicate_names_and_non_tools():
    with pytest.raises(ValueError, match="two tools are named 'add'"):
        Toolbox([add, add])
    with pytest.raises(TypeError, match="not a tool"):
        Toolbox([42])


async def test_langchain_tool_is_accepted_and_recorded():
    @lc_tool
    def multiply(x: int, y: int) -> int:
        """Multiply two integers."""
        return x * y

    tb = Toolbox([multiply, add])
    names = [s["function"]["name"] for s in tb.schemas()]
    assert names == ["multiply", "add"]
    assert tb.schemas()[0]["function"]["parameters"]["required"] == ["x", "y"]
    good, bad = await tb.execute([call("multiply", x=6, y=7), call("multiply", x="six", y=7)])
    assert good.result == "42" and good.error is None
    assert bad.error.startswith("bad_arguments: x:")


async def test_our_tools_run_in_langgraph_tool_node():
    node = ToolNode([add.as_langchain(), refuse.as_langchain()])
    msg = AIMessage(content="", tool_calls=[
        {"id": "1", "name": "add", "args": {"a": 40, "b": 2}},
        {"id": "2", "name": "refuse", "args": {"reason": "gone"}},
        {"id": "3", "name": "add", "args": {"a": "forty"}},
    ])
    graph = StateGraph(MessagesState)
    graph.add_node("tools", node)
    graph.add_edge(START, "tools")
    graph.add_edge("tools", END)
    out = await graph.compile().ainvoke({"messages": [msg]})
    by_id = {m.tool_call_id: m for m in out["messages"][1:]}
    assert by_id["1"].content == "42" and by_id["1"].status == "success"
    assert by_id["2"].content == "Error: not_found: gone" and by_id["2"].status == "error"
    assert by_id["3"].status == "error" and "a" in by_id["3"].content


async def test_sandboxed_tool_without_sandbox_is_a_clean_error():
    class NeedsBox(Tool):
        name, description, sandboxed = "boxed", "needs a sandbox", True
        args_model = add.args_model

        async def run(self, args, sandbox):
            return "never"

    with pytest.raises(ToolError, match="unavailable: tool 'boxed' must run in a sandbox"):
        await NeedsBox().ainvoke({"a": 1})
