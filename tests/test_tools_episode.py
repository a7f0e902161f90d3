"""A bad tool call inside a real episode: recorded, shown to the real model, and the episode goes on."""

from __future__ import annotations

import pytest
from agentplay.tools import ReadDocumentTool, SearchTool, Toolbox, default_corpus_index

from agentplay.models import SamplingParams, ToolCall, ToolCallParseFailure


@pytest.fixture
def model(smollm2):
    return smollm2  # the session's SmolLM2 (conftest.py): this test only samples from it


async def test_malformed_calls_do_not_end_the_episode(model):
    idx = default_corpus_index()
    tb = Toolbox([SearchTool(idx, k=2), ReadDocumentTool(idx)], max_result_chars=600)
    messages = [
        {"role": "system", "content": "You answer questions about Python. Use the search tool."},
        {"role": "user", "content": "How do I delete a folder with everything in it?"},
    ]
    # What a small model typically writes: broken JSON, a wrong argument name, an unknown tool.
    raw = '<tool_call>\n{"name": "search", "arguments": {"query": "delete folder"\n</tool_call>'
    calls = [
        ToolCallParseFailure(raw=raw, error="Expecting ',' delimiter"),
        ToolCall(id="a", name="search", arguments={"q": "delete folder"}),
        ToolCall(id="b", name="browse", arguments={"url": "https://docs.python.org"}),
        ToolCall(id="c", name="search", arguments={"query": "delete a directory tree"}),
    ]
    records = await tb.execute(calls)
    assert [r.error.split(":")[0] if r.error else None for r in records] == [
        "parse_error", "bad_arguments", "unknown_tool", None]
    assert "shutil.rmtree" in records[3].result
    messages.append({"role": "assistant", "content": raw})
    messages += [tb.tool_message(r) for r in records]

    turns = 0
    for _ in range(2):  # the episode continues: the model reads the errors and answers or calls again
        res = await model.chat(messages, tools=tb.schemas(), sampling=SamplingParams(max_tokens=32, seed=11))
        choice = res.choice
        turns += 1
        messages.append(choice.assistant_message())
        pending = [*choice.tool_calls, *choice.tool_call_failures]
        if not pending:
            break
        more = await tb.execute(pending)
        assert len(more) == len(pending)
        assert all((r.error is None) == bool(r.result) for r in more), "each record: a result or an error"
        messages += [tb.tool_message(r) for r in more]
    assert turns >= 1 and res.prompt_token_ids and len(res.choice.text) > 0
    rendered = [m for m in messages if m["role"] == "tool"]
    assert rendered[0]["content"].startswith("Error: parse_error: could not parse the tool call")
