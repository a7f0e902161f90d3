"""A ready Recipe (not a build function) whose role names a model nobody serves: only
`agentplay run ... --model SPEC` (the model override) can run it (tests/test_core_contracts.py)."""

from __future__ import annotations

from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

from agentplay import GroupBy, Recipe, Role
from agentplay.models import SamplingParams


class State(TypedDict, total=False):
    text: str


solver = Role(name="solver", model="openai:nobody-serves-this", sampling=SamplingParams(max_tokens=2))


async def solve(state: State) -> dict[str, Any]:
    turn = await solver.run("Say one word.")
    return {"text": turn.output}


graph = StateGraph(State)
graph.add_node("solve", solve)
graph.add_edge(START, "solve")
graph.add_edge("solve", END)
recipe = Recipe(name="ready", graph=graph, roles={"solve": solver}, rewards={"solver": lambda t, s, e: 1.0},
                groups={"solver": GroupBy.episode()}, initial_state=lambda ctx: {})
