"""Short answers: the smallest recipe that trains, one role and a graded, verifiable reward.

The answerer writes `n` answers to a one-line question; fewer written tokens is better.
The reward varies inside almost every group, so every iteration has something to learn
(an optimizer step, a new weight version), and it is cheap enough for CPU: the trainer
tests, the kill trials and `bench/async.py` all train on it.

Train it:  agentplay train examples/short_answers.py:build --iterations 2 --episodes-per-iteration 4
"""

from __future__ import annotations

from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

from agentplay import EpisodeContext, EpisodeView, GroupBy, Recipe, Role
from agentplay.models import DEFAULT_MODEL_SPEC, SamplingParams
from agentplay.traces import RewardRecord, RoleTurn

QUESTIONS = ["Name a colour.", "Name a fruit.", "Name an animal.", "Say hello.", "Name a city.", "Name a tree."]


class State(TypedDict, total=False):
    question: str


def build(model: str = DEFAULT_MODEL_SPEC, n: int = 4, max_tokens: int = 10, questions: int = 4) -> Recipe:
    """`n` answers per question, at most `max_tokens` each; episode i asks question i mod `questions`."""
    if not 1 <= questions <= len(QUESTIONS):
        raise ValueError(f"questions: {questions} is not between 1 and {len(QUESTIONS)}")
    answerer = Role(name="answerer", model=model, system_prompt="Answer in one word.",
                    sampling=SamplingParams(max_tokens=max_tokens, temperature=1.0))

    async def answer(state: State) -> dict[str, Any]:
        await answerer.run_n(state["question"], n=n)
        return {}

    def reward(turn: RoleTurn, state: dict[str, Any], episode: EpisodeView) -> RewardRecord:
        written = sum(turn.mask or [])
        return RewardRecord(value=1.0 - written / (max_tokens + 1), reason=f"{written} tokens written")

    def initial_state(ctx: EpisodeContext) -> State:
        return {"question": QUESTIONS[ctx.index % questions]}

    graph = StateGraph(State)
    graph.add_node("answer", answer)
    graph.add_edge(START, "answer")
    graph.add_edge("answer", END)
    return Recipe(name="short-answers", graph=graph, roles={"answer": "answerer"}, rewards={"answerer": reward},
                  groups={"answerer": GroupBy.episode()}, initial_state=initial_state)
