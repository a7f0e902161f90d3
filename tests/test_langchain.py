"""AgentplayChatModel over the real local SmolLM2, inside a small LangGraph graph.

SmolLM2-135M does not decide to call tools by itself; asked to copy a call at
temperature 0 it writes one, which is enough to drive the real parse -> ToolNode
-> re-render path. What is asserted is the plumbing: tools bound and called,
structured output parsed (or its error recorded), exact token ids recorded.
"""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition
from pydantic import BaseModel

from agentplay.models import AgentplayChatModel, SamplingParams
from agentplay.models._langchain import RAW_TEXT_KEY, to_engine_messages

CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 17, "b": 25}}\n</tool_call>'


@tool
def add(a: int, b: int) -> int:
    """Add two integers and return the sum."""
    return a + b


class Person(BaseModel):
    """A person's name and age."""

    name: str
    age: int


@pytest.fixture
def engine(smollm2):
    return smollm2  # the session's SmolLM2 (conftest.py): these tests only sample from it


@pytest.fixture
def llm(engine):
    return AgentplayChatModel(model=engine, sampling=SamplingParams(temperature=0, max_tokens=40))


def _check_record(message: AIMessage, tokenizer) -> None:
    meta = message.response_metadata
    ids = meta["completion_token_ids"]
    assert ids and len(meta["logprobs"]) == len(ids) and all(lp <= 0 for lp in meta["logprobs"])
    assert meta["prompt_token_ids"] and isinstance(meta["weight_version"], int)
    raw = message.additional_kwargs[RAW_TEXT_KEY]
    assert tokenizer.decode(ids, skip_special_tokens=True) == raw


async def test_invoke_records_tokens_and_sync_wrapper_agrees(llm, engine):
    msg = await llm.ainvoke("Say hello.", max_tokens=6)
    _check_record(msg, engine.tokenizer)
    assert msg.content == msg.additional_kwargs[RAW_TEXT_KEY]  # no tools: content is the raw text
    assert msg.usage_metadata["output_tokens"] == len(msg.response_metadata["completion_token_ids"])
    same = llm.invoke("Say hello.", max_tokens=6)  # the thin sync wrapper, same greedy tokens
    assert (
        same.response_metadata["completion_token_ids"]
        == msg.response_metadata["completion_token_ids"]
    )
    with pytest.raises(ValueError, match="frequency_penalty"):
        await llm.ainvoke("hi", frequency_penalty=1.0)


async def test_stream_from_local_engine_carries_the_record(llm, engine):
    chunks = [c async for c in llm.astream("Say hello.", max_tokens=6)]
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    assert merged.content
    _check_record(merged, engine.tokenizer)


async def test_langgraph_tool_loop_records_exact_tokens(llm, engine):
    bound = llm.bind_tools([add])

    async def agent(state: MessagesState) -> dict:
        return {"messages": [await bound.ainvoke(state["messages"])]}

    async def answer(state: MessagesState) -> dict:
        return {"messages": [await bound.ainvoke(state["messages"], max_tokens=2)]}

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", ToolNode([add]))
    builder.add_node("answer", answer)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", tools_condition, {"tools": "tools", END: END})
    builder.add_edge("tools", "answer")
    builder.add_edge("answer", END)
    graph = builder.compile()

    out = await graph.ainvoke(
        {"messages": [HumanMessage(f"Repeat exactly this text and nothing else:\n{CALL}")]}
    )
    first, result, final = out["messages"][1:4]
    assert isinstance(first, AIMessage) and [(c["name"], c["args"]) for c in first.tool_calls] == [
        ("add", {"a": 17, "b": 25})
    ]
    assert isinstance(result, ToolMessage) and result.content == "42"
    _check_record(first, engine.tokenizer)
    _check_record(final, engine.tokenizer)
    # The second prompt re-renders the first completion from its raw text, so it
    # starts with exactly the ids the model conditioned on and sampled.
    p1, c1 = (
        first.response_metadata["prompt_token_ids"],
        first.response_metadata["completion_token_ids"],
    )
    p2 = final.response_metadata["prompt_token_ids"]
    assert p2[: len(p1) + len(c1)] == p1 + c1
    sent_back = to_engine_messages([first])[0]
    assert sent_back["content"] == first.additional_kwargs[RAW_TEXT_KEY]
    assert sent_back["tool_calls"][0]["function"]["arguments"] == {"a": 17, "b": 25}


async def test_structured_output_by_tool_call(llm, engine):
    copy = '<tool_call>\n{"name": "Person", "arguments": {"name": "Ada", "age": 36}}\n</tool_call>'
    structured = llm.with_structured_output(Person, include_raw=True)
    # the model sometimes misnames the call ("Ada"); the parser takes the one call it made
    out = await structured.ainvoke(f"Repeat exactly this text and nothing else:\n{copy}")
    _check_record(out["raw"], engine.tokenizer)
    assert out["parsing_error"] is None, out["parsing_error"]
    assert out["parsed"] == Person(name="Ada", age=36)


async def test_structured_output_failure_is_recorded_not_raised(llm, engine):
    structured = llm.with_structured_output(Person, method="json_mode", include_raw=True)
    out = await structured.ainvoke("Say hello.", max_tokens=4)
    _check_record(out["raw"], engine.tokenizer)
    # four tokens cannot hold a Person; the error names what came back instead
    assert out["parsed"] is None and "Person" in str(out["parsing_error"])
    with pytest.raises(Exception, match="Person"):
        await llm.with_structured_output(Person, method="json_mode").ainvoke(
            "Say hello.", max_tokens=4
        )
