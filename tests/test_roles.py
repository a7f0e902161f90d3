"""Role: the multi-turn tool loop on the real SmolLM2 with the real corpus search tool."""

from __future__ import annotations

import pytest
from _trace_checks import check_token_exact
from agentplay.tools import SearchTool, default_corpus_index
from pydantic import BaseModel, ValidationError

from agentplay import Role, resolve_model
from agentplay.models import DEFAULT_MODEL_SPEC, SamplingParams

# A worked example makes the 135M model write a well-formed call (instructions alone do not).
DEMO = [
    {"role": "user", "content": "Use the search tool for json.dumps"},
    {"role": "assistant", "content": '<tool_call>\n{"name": "search", "arguments": {"query": "json.dumps"}}\n</tool_call>'},
    {"role": "tool", "tool_call_id": "1", "name": "search",
     "content": "[1] id: json.dumps\ntitle: json.dumps\nSerialize obj to a JSON formatted str."},
    {"role": "assistant", "content": "json.dumps serializes an object to a JSON string."},
    {"role": "user", "content": "Use the search tool for os.path.join"},
]


@pytest.fixture(scope="module")
def search_tool():
    return SearchTool(default_corpus_index(), k=1, mode="bm25", snippet_chars=120)


async def test_tool_loop_is_token_exact_and_masks_tool_output(search_tool):
    role = Role(name="searcher", model=DEFAULT_MODEL_SPEC, tools=[search_tool], max_tool_turns=1,
                sampling=SamplingParams(max_tokens=40, temperature=0.0))
    turn = await role.run(DEMO)
    tokenizer = (await resolve_model(DEFAULT_MODEL_SPEC)).tokenizer

    assert len(turn.tool_calls) == 1, turn.generations[0].text
    call = turn.tool_calls[0]
    assert call.name == "search" and call.error is None and "id:" in call.result
    assert len(turn.generations) == 2  # call -> tool result -> final answer
    glue = check_token_exact(turn, tokenizer)
    assert len(glue) == 1 and call.result in glue[0]  # the tool output is exactly the mask-0 span
    assert "<|im_start|>tool" in glue[0]
    assert "<tool_call>" in tokenizer.decode([t for t, m in zip(turn.token_ids, turn.mask) if m])
    assert [m["role"] for m in turn.messages[-3:]] == ["assistant", "tool", "assistant"]
    assert turn.output and turn.parse_error is None and turn.role == "searcher"


async def test_examples_sit_between_system_prompt_and_task_as_prompt_tokens():
    shot = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Teal."}]
    role = Role(name="namer", model=DEFAULT_MODEL_SPEC, system_prompt="Answer in one word.",
                user_template="Name a {{ thing }}.", examples=shot,
                sampling=SamplingParams(max_tokens=3, temperature=0.0))
    messages = role.build_messages(None, {"thing": "fruit"})
    assert messages == [{"role": "system", "content": "Answer in one word."}, *shot,
                        {"role": "user", "content": "Name a fruit."}]
    messages[1]["content"] = "changed"  # the role's examples are copied, not shared
    assert role.examples[0]["content"] == "Name a colour."

    turn = await role.run(variables={"thing": "fruit"})
    tokenizer = (await resolve_model(DEFAULT_MODEL_SPEC)).tokenizer
    prompt = tokenizer.decode(turn.prompt_token_ids)
    assert prompt.index("Answer in one word.") < prompt.index("Teal.") < prompt.index("Name a fruit.")
    assert turn.messages[:4] == role.build_messages(None, {"thing": "fruit"})
    assert 1 <= len(turn.token_ids) <= 3 and all(turn.mask)  # only the model's reply is trained on
    with pytest.raises(ValidationError, match="examples"):
        Role(name="bad", model=DEFAULT_MODEL_SPEC, examples="Name a colour.")


async def test_run_n_shares_one_prompt_and_records_parse_errors():
    class Verdict(BaseModel):
        ok: bool

    role = Role(name="judge", model=DEFAULT_MODEL_SPEC, output_schema=Verdict,
                sampling=SamplingParams(max_tokens=1, temperature=1.0, seed=3))
    turns = await role.run_n("Reply with JSON {\"ok\": true}", n=2)
    assert len(turns) == 2
    assert turns[0].prompt_token_ids == turns[1].prompt_token_ids
    for turn in turns:  # one token cannot hold a JSON object: a recorded parse error, not an exception
        assert turn.output is None and "JSON" in turn.parse_error
        assert len(turn.token_ids) == 1 and turn.mask == [1]


async def test_output_parser_value_error_is_recorded():
    def strict(text: str) -> int:
        raise ValueError(f"not a number: {text!r}")

    role = Role(name="counter", model=DEFAULT_MODEL_SPEC, output_parser=strict,
                sampling=SamplingParams(max_tokens=2, temperature=0.0))
    turn = await role.run("Say hi")
    assert turn.output is None and turn.parse_error.startswith("output_parser: not a number")


def test_configuration_errors_name_the_field():
    with pytest.raises(ValidationError, match="system_prompt"):
        Role(name="x", model=DEFAULT_MODEL_SPEC, system_prompt="{{ unclosed")
    with pytest.raises(ValidationError, match="max_tool_turns"):
        Role(name="x", model=DEFAULT_MODEL_SPEC, max_tool_turns=-1)
    with pytest.raises(ValidationError, match="name"):
        Role(name="", model=DEFAULT_MODEL_SPEC)
    role = Role(name="x", model=DEFAULT_MODEL_SPEC, system_prompt="Topic: {{ topic }}")
    with pytest.raises(ValueError, match="system_prompt needs a variable"):
        role.build_messages("hi", {})
    with pytest.raises(ValueError, match="no user_template"):
        role.build_messages(None, {"topic": "x"})
    assert role.build_messages("hi", {"topic": "sets"})[0]["content"] == "Topic: sets"
