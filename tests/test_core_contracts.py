"""Core's contracts with the rest of the process: the model override is per run (a
ContextVar), and tools are reached through the `ToolRunner` Protocol. No model loads:
the overrides are real `OpenAIModel` clients that are never called."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from agentplay.models import OpenAIModel, ToolCall, ToolCallParseFailure, parse_model_spec
from agentplay.tools import Toolbox, tool

from agentplay import Role, ToolRunner, override_models, resolve_model
from agentplay._role_loop import execute_tool_calls
from agentplay.models import Choice
from agentplay.traces import ToolCallRecord


def _client(name: str) -> OpenAIModel:
    # a real client on a loopback port nobody listens on; these tests never send a request
    return OpenAIModel(parse_model_spec(f"openai:{name}", base_url="http://127.0.0.1:9/v1", api_key="x"))


async def test_two_concurrent_runs_do_not_see_each_others_model_override():
    a, b = _client("model-a"), _client("model-b")
    both_inside = asyncio.Barrier(2)
    seen: dict[str, list[str]] = {"a": [], "b": []}

    async def run(name: str, model: OpenAIModel) -> None:
        with override_models(model):
            await both_inside.wait()  # both overrides are active now: a shared stack would leak here
            seen[name].append((await resolve_model("local:smollm2-135m-instruct")).spec)

            async def episode() -> str:  # an episode task started inside the run sees its run's override
                return (await resolve_model("local:smollm2-135m-instruct")).spec

            seen[name] += await asyncio.gather(episode(), episode())
            await both_inside.wait()  # neither leaves before the other has resolved

    await asyncio.gather(run("a", a), run("b", b))
    assert seen == {"a": [a.spec] * 3, "b": [b.spec] * 3}
    assert a.spec != b.spec


async def test_override_nests_and_ends_with_its_block():
    outer, inner = _client("outer"), _client("inner")
    with override_models(outer):
        with override_models(inner):
            assert await resolve_model("x") is inner
        with override_models(None):  # no --model: the enclosing override stays
            assert await resolve_model("x") is outer
        assert await resolve_model("x") is outer
    fallback = _client("fallback")
    from agentplay import register_model

    register_model(fallback, "api-test:fallback")
    assert await resolve_model("api-test:fallback") is fallback  # no override left behind


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class CountingRunner:
    """A user's own tool runner (not a Toolbox): wraps one and counts the calls it ran."""

    def __init__(self) -> None:
        self.inner = Toolbox([add])
        self.calls = 0

    def schemas(self) -> list[dict]:
        return self.inner.schemas()

    async def execute(self, calls: Sequence[ToolCall | ToolCallParseFailure]) -> list[ToolCallRecord]:
        self.calls += len(calls)
        return await self.inner.execute(calls)

    def tool_message(self, record: ToolCallRecord) -> dict:
        return {"role": "tool", "tool_call_id": record.call_id, "name": record.name, "content": f"= {record.result}"}


async def test_tools_are_reached_through_the_tool_runner_protocol():
    runner = CountingRunner()
    assert isinstance(runner, ToolRunner) and isinstance(Toolbox([add]), ToolRunner)
    assert not isinstance(add, ToolRunner)  # a single tool is wrapped in a Toolbox, not used as a runner
    role = Role(name="calc", model="local:smollm2-135m-instruct", system_prompt="s", tools=[runner])
    assert role._get_toolbox() is runner
    assert isinstance(Role(name="calc", model="m", system_prompt="s", tools=[add])._get_toolbox(), Toolbox)
    choice = Choice(text="...", tool_calls=[ToolCall(id="c1", name="add", arguments={"a": 2, "b": 3})],
                    tool_call_failures=[ToolCallParseFailure(raw="{bad", error="not JSON")])
    records, messages = await execute_tool_calls(role._get_toolbox(), choice)
    assert runner.calls == 2
    assert records[0].result == "5" and records[1].error is not None and "could not parse" in records[1].error
    assert messages[0] == {"role": "tool", "tool_call_id": records[0].call_id, "name": "add", "content": "= 5"}


def test_model_flag_overrides_the_roles_of_a_ready_recipe(tmp_path):
    """`--model` on a ready Recipe (its roles' models are fixed) goes through the override: the
    run's episode tasks see it, and nothing resolves the unserved model the role names."""
    import json
    from pathlib import Path

    from typer.testing import CliRunner

    from agentplay.cli import app
    from agentplay.models import DEFAULT_MODEL_SPEC
    from agentplay.traces import TraceStore

    recipe = Path(__file__).parent / "data" / "ready_recipe.py"
    store = tmp_path / "t.db"
    result = CliRunner().invoke(app, ["run", f"{recipe}:recipe", "--model", DEFAULT_MODEL_SPEC, "--episodes", "2",
                                      "--store", str(store), "--run-id", "ready", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["completed"] == 2
    with TraceStore(store, read_only=True) as db:
        episodes = list(db.episodes("ready"))
    assert [ep.status for ep in episodes] == ["ok", "ok"]
    assert {g.model for ep in episodes for t in ep.turns for g in t.generations} == {DEFAULT_MODEL_SPEC}
