"""A tiny verifiable recipe for trainer tests: one role, short answers, a graded reward.

The reward (fewer written tokens is better) varies inside almost every group, so
each iteration has something to learn; it is cheap enough for CPU test runs.
It also runs as `agentplay train tests/test_trainer_recipe.py:build` in the CLI test.
"""

from __future__ import annotations

from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

from agentplay import EpisodeContext, EpisodeView, GroupBy, Recipe, Role
from agentplay.models import DEFAULT_MODEL_SPEC, SamplingParams
from agentplay.traces import RewardRecord, RoleTurn

QUESTIONS = ["Name a colour.", "Name a fruit.", "Name an animal.", "Say hello."]
MAX_TOKENS = 10


class State(TypedDict, total=False):
    question: str


def build(model: str = DEFAULT_MODEL_SPEC, n: int = 4) -> Recipe:
    answerer = Role(name="answerer", model=model, system_prompt="Answer in one word.",
                    sampling=SamplingParams(max_tokens=MAX_TOKENS, temperature=1.0))

    async def answer(state: State) -> dict[str, Any]:
        await answerer.run_n(state["question"], n=n)
        return {}

    def reward(turn: RoleTurn, state: dict[str, Any], episode: EpisodeView) -> RewardRecord:
        written = sum(turn.mask or [])
        return RewardRecord(value=1.0 - written / (MAX_TOKENS + 1), reason=f"{written} tokens written")

    def initial_state(ctx: EpisodeContext) -> State:
        return {"question": QUESTIONS[ctx.index % len(QUESTIONS)]}

    graph = StateGraph(State)
    graph.add_node("answer", answer)
    graph.add_edge(START, "answer")
    graph.add_edge("answer", END)
    return Recipe(name="short-answers", graph=graph, roles={"answer": "answerer"}, rewards={"answerer": reward},
                  groups={"answerer": GroupBy.episode()}, initial_state=initial_state)


def test_recipe_compiles_with_one_trainable_role():
    compiled = build().compile()
    assert compiled.recipe.role_names() == {"answerer": True}
