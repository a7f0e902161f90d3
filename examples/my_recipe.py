"""A recipe of your own: a writer phrases an addition problem, n solvers answer it.

Run it:  agentplay run examples/my_recipe.py:build --episodes 8 --store traces.db
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from agentplay import EpisodeContext, GroupBy, Recipe, Role
from agentplay.models import DEFAULT_MODEL_SPEC, SamplingParams
from agentplay.rewards import learnability, numeric_match
from agentplay.traces import RewardRecord


class State(TypedDict, total=False):
    a: int
    b: int
    question: str
    answers: Annotated[list[dict[str, Any]], operator.add]  # Send fan-out: each solver appends


def build(model: str = DEFAULT_MODEL_SPEC, n_solvers: int = 2, max_tokens: int = 32) -> Recipe:
    sampling = SamplingParams(max_tokens=max_tokens, temperature=0.8)
    writer = Role(name="writer", model=model, sampling=sampling,
                  system_prompt="Rewrite the task as a short word problem. Do not solve it.")
    solver = Role(name="solver", model=model, sampling=sampling,
                  system_prompt="Solve the problem. Reply with the number only.")

    def start(ctx: EpisodeContext) -> State:
        return {"a": ctx.rng.randint(1, 9), "b": ctx.rng.randint(1, 9), "answers": []}

    async def write(state: State) -> dict[str, Any]:
        turn = await writer.run(f"Task: add {state['a']} and {state['b']}.")
        return {"question": turn.output or f"What is {state['a']} + {state['b']}?"}

    def fan_out(state: State) -> list[Send]:
        return [Send("solve", state) for _ in range(n_solvers)]

    async def solve(state: State) -> dict[str, Any]:
        turn = await solver.run(state["question"])
        return {"answers": [{"turn_id": turn.turn_id, "ok": numeric_match(turn.output, state["a"] + state["b"])}]}

    def solver_reward(turn, state, episode) -> RewardRecord:
        ok = next(a["ok"] for a in state["answers"] if a["turn_id"] == turn.turn_id)
        return RewardRecord(value=ok, reason=f"expected {state['a'] + state['b']}, got {turn.output!r}")

    def writer_reward(turn, state, episode) -> RewardRecord:
        rate = sum(a["ok"] for a in state["answers"]) / len(state["answers"])
        return RewardRecord(value=learnability(rate), reason=f"solve rate {rate:.2f}")

    graph = StateGraph(State)
    graph.add_node("write", write)
    graph.add_node("solve", solve)
    graph.add_edge(START, "write")
    graph.add_conditional_edges("write", fan_out, ["solve"])
    graph.add_edge("solve", END)

    return Recipe(
        name="add-game",
        graph=graph,
        roles={"write": writer, "solve": solver},
        rewards={"writer": writer_reward, "solver": solver_reward},
        groups={"writer": GroupBy.seed(k=2), "solver": GroupBy.episode()},
        initial_state=start,
        metrics=lambda state, turns: {"solve_rate": sum(a["ok"] for a in state["answers"]) / len(state["answers"])},
    )
