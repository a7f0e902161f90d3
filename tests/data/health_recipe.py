"""A one-role recipe that fails on purpose, for the run-health tests (issue 19).

`mode` picks the failure: "ok" (none), "reward_raises" (the reward fn raises on odd
episodes), "reward_raises_all", "graph_raises_all" (the node's own code raises),
"graph_raises_odd", "infra_once" (the first attempt of every episode meets an
infrastructure failure after its model turn, the retry works), "infra_always" and
"reward_infra_once" (the reward fn meets it on the first attempt).
"""

from __future__ import annotations

from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph

from agentplay import EpisodeContext, GroupBy, Recipe, Role
from agentplay.errors import InfrastructureError
from agentplay.models import DEFAULT_MODEL_SPEC, SamplingParams
from agentplay.traces import RewardRecord

ATTEMPTS: dict[tuple[str, int], int] = {}
"""(run id, episode index) -> attempts seen in this process (infra_once)."""


class State(TypedDict, total=False):
    index: int
    run_id: str
    text: str


class SandboxWentAway(InfrastructureError):
    """Stands for a sandbox or server that died under the episode."""


def build(mode: str = "ok", max_tokens: int = 2, k: int = 2, model: str = DEFAULT_MODEL_SPEC) -> Recipe:
    solver = Role(name="solver", model=model,
                  sampling=SamplingParams(max_tokens=max_tokens, temperature=1.0))

    def start(ctx: EpisodeContext) -> State:
        return {"index": ctx.index, "run_id": ctx.run_id}

    async def solve(state: State) -> dict[str, Any]:
        key = (state["run_id"], state["index"])
        ATTEMPTS[key] = ATTEMPTS.get(key, 0) + 1
        turn = await solver.run("Say one word.")  # the model answered; then the machinery failed
        if mode == "infra_always" or (mode == "infra_once" and ATTEMPTS[key] == 1):
            raise SandboxWentAway(f"sandbox died under episode {state['index']}")
        if mode == "graph_raises_all" or (mode == "graph_raises_odd" and state["index"] % 2):
            raise KeyError(f"recipe bug in episode {state['index']}")
        return {"text": turn.output}

    def reward(turn, state, episode) -> RewardRecord:
        if mode == "reward_infra_once" and ATTEMPTS[(state["run_id"], state["index"])] == 1:
            raise SandboxWentAway("the grader's sandbox died")
        if mode == "reward_raises_all" or (mode == "reward_raises" and state["index"] % 2):
            raise ZeroDivisionError("the grader divided by zero")
        return RewardRecord(value=float(len(str(turn.output or "")) % 3), reason="length mod 3")

    graph = StateGraph(State)
    graph.add_node("solve", solve)
    graph.add_edge(START, "solve")
    graph.add_edge("solve", END)
    return Recipe(name=f"health-{mode}", graph=graph, roles={"solve": solver}, rewards={"solver": reward},
                  groups={"solver": GroupBy.seed(k=k)}, initial_state=start)
