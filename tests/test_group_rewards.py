"""Group-level rewards across episodes: called once per closed group, before anything is stored.

The graph records its turns through the real episode recorder (no model needed to
test the runner's bookkeeping); rewards, groups, the runner and the SQLite store
are the real ones. The recipes' own end-to-end tests run the same path on SmolLM2.
"""

from __future__ import annotations

from typing import Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph

from agentplay import GroupBy, Recipe, RecipeError, RewardGroup, RunConfig, run_recipe
from agentplay._recorder import current_recorder
from agentplay.runner import RunHealthError
from agentplay.traces import RoleTurn, TraceStore


class S(TypedDict, total=False):
    text: str


def _recipe(seen: list[tuple[list[int], bool]], *, k: int = 3, fail_on: int | None = None) -> Recipe:
    async def write(state: S) -> dict[str, Any]:
        ctx = current_recorder().ctx
        if ctx.index == fail_on:
            raise RuntimeError("node bug")
        current_recorder().add(RoleTurn(role="writer", output=f"question {ctx.index % 2}"))
        return {"text": f"question {ctx.index % 2}"}

    def penalise_duplicates(group: RewardGroup) -> list[tuple[float, str]]:
        seen.append(([ep.index for ep in group.episodes], group.complete))
        texts = [t.output for t in group.turns]
        return [(-texts.count(t) / len(texts), f"{texts.count(t)} of {len(texts)} alike") for t in texts]

    graph = StateGraph(S)
    graph.add_node("write", write)
    graph.add_edge(START, "write")
    graph.add_edge("write", END)
    return Recipe(name="dup", graph=graph, roles={"write": "writer"},
                  rewards={"writer": lambda turn, state, ep: 1.0},
                  groups={"writer": GroupBy.seed(k)},
                  whole_group_rewards={"writer": penalise_duplicates},
                  initial_state=lambda ctx: {})


async def test_group_fn_sees_each_closed_block_once_and_stored_rewards_are_final(tmp_path):
    seen: list[tuple[list[int], bool]] = []
    with TraceStore(tmp_path / "t.db") as store:
        summary = await run_recipe(_recipe(seen), RunConfig(episodes=7, concurrency=3, progress=False, run_id="r"),
                                   store=store)
        stored = {ep.index: ep for ep in store.episodes("r")}
    assert summary.completed == 7 and summary.errors == 0
    assert sorted(seen) == [([0, 1, 2], True), ([3, 4, 5], True), ([6], False)]  # 7 = 3 + 3 + a cut block
    for i, ep in stored.items():
        (turn,) = ep.turns
        block = [j for j in range(i // 3 * 3, min(i // 3 * 3 + 3, 7))]
        alike = sum(j % 2 == i % 2 for j in block)
        assert turn.reward.value == pytest.approx(1.0 - alike / len(block))  # turn reward + group delta
        assert turn.reward.components["group"] == pytest.approx(-alike / len(block))
        assert f"{alike} of {len(block)} alike" in turn.reward.reason
        assert turn.group_id == f"r/block{i // 3}/writer"


async def test_a_block_is_stored_whole_or_not_at_all_and_resume_reruns_it(tmp_path):
    seen: list[tuple[list[int], bool]] = []
    released: list[int] = []

    def stop_after_first_block(ep):
        released.append(ep.index)
        if len(released) == 3:
            raise KeyboardInterrupt  # what a kill looks like from inside the loop

    path = tmp_path / "t.db"
    with TraceStore(path) as store, pytest.raises(KeyboardInterrupt):
        await run_recipe(_recipe(seen), RunConfig(episodes=9, concurrency=4, progress=False, run_id="r"),
                         store=store, on_episode=stop_after_first_block)
    with TraceStore(path) as store:
        assert sorted(store.stored_indexes("r")) == [0, 1, 2]  # episodes 3.. had finished but were held
        summary = await run_recipe(_recipe(seen), RunConfig(episodes=9, concurrency=4, progress=False, run_id="r",
                                                            resume=True), store=store)
        assert summary.skipped == 3 and summary.completed == 6
        assert sorted(store.stored_indexes("r")) == list(range(9))
    assert ([3, 4, 5], True) in seen and ([6, 7, 8], True) in seen


async def test_failed_episodes_leave_their_group_incomplete(tmp_path):
    seen: list[tuple[list[int], bool]] = []
    with TraceStore(tmp_path / "t.db") as store:
        summary = await run_recipe(_recipe(seen, fail_on=1), RunConfig(episodes=3, progress=False, run_id="r"),
                                   store=store)
    assert summary.errors == 1
    assert seen == [([0, 2], False)]


def test_group_rewards_need_a_group_that_closes():
    recipe = _recipe([])
    with pytest.raises(RecipeError, match="whole_group_rewards: role 'writer' needs a group that closes"):
        recipe.model_copy(update={"groups": {"writer": GroupBy.key(lambda t, s, c: "all")}}).compile()
    with pytest.raises(RecipeError, match="advantages: the value for 'writer' must be an agentplay.Advantage"):
        recipe.model_copy(update={"advantages": {"writer": "rae"}}).compile()


def test_the_old_group_rewards_name_is_the_per_episode_hook_and_warns():
    per_episode = _recipe([]).model_copy(update={"whole_group_rewards": {}})
    fields = {k: getattr(per_episode, k) for k in ("name", "graph", "roles", "rewards", "groups", "initial_state")}
    fn = lambda turns: [0.5] * len(turns)
    with pytest.warns(DeprecationWarning, match="episode_rewards"):
        old = Recipe(**fields, group_rewards={"writer": fn})
    assert old.episode_rewards == {"writer": fn} and old.whole_group_rewards == {}
    with pytest.warns(DeprecationWarning):
        assert old.group_rewards == {"writer": fn}
    assert not old.compile().holds_blocks  # per episode: nothing is held back


@pytest.mark.parametrize(("fn", "why"), [
    (lambda group: 1 / 0, "ZeroDivisionError"),
    (lambda group: [0.5], "returned 1 deltas for 2 turns"),
])
async def test_a_failing_group_fn_leaves_every_member_reward_failed_never_a_partial_reward(tmp_path, fn, why):
    """Issue 19: a reward that could not be computed is not a reward. Every member of the
    group is stored `reward_failed` (no reward, never trained on); here no turn of the run
    has a reward left, so the run itself fails with the diagnosis."""
    recipe = _recipe([], k=2).model_copy(update={"whole_group_rewards": {"writer": fn}})
    with TraceStore(tmp_path / "t.db") as store:
        with pytest.raises(RunHealthError, match="every reward fn call failed") as caught:
            await run_recipe(recipe, RunConfig(episodes=2, progress=False, run_id="r"), store=store)
        stored = list(store.episodes("r"))
    assert caught.value.summary.completed == 2 and len(stored) == 2
    assert caught.value.summary.reward_failures == {"writer": 2}
    for ep in stored:
        (turn,) = ep.turns
        assert turn.reward is None
        assert turn.reward_failed.startswith("group reward fn of role 'writer' raised") and why in turn.reward_failed
