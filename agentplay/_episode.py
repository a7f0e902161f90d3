"""One episode, start to stored record: the single code path every executor shares.

Graph first, rewards after: reward functions see the final state and every
turn. A failure is never a score: a reward function that raises marks its turn
`reward_failed` (no reward; the trainer leaves it out), and an exception that
comes from the machinery (an `InfrastructureError` in its chain: sandbox, model
server, network) fails the whole episode with an ``infrastructure:`` cause so
the executor retries it instead of anyone scoring it.
"""

from __future__ import annotations

import traceback
from collections import defaultdict
from typing import Any

from agentplay._health import error_cause, infrastructure_failure, reward_failure_text
from agentplay._lc_capture import TraceCallback
from agentplay._recorder import _CURRENT, EpisodeContext, EpisodeRecorder, derive_seed
from agentplay.recipe import CompiledRecipe, EpisodeView, Recipe, call_maybe_async
from agentplay.traces import Episode, RewardRecord, RoleTurn

__all__ = ["run_episode"]


async def run_episode(
    recipe: CompiledRecipe | Recipe,
    *,
    index: int = 0,
    seed: int | None = None,
    run_id: str = "",
    group_seed: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> Episode:
    """Run the graph once, then rewards and metrics; never raises for a failing episode.

    `seed` defaults to one derived from `index`; `group_seed` to one derived
    from the episode's block (so k episodes of a `GroupBy.seed(k)` block share it).
    """
    compiled = recipe.compile() if isinstance(recipe, Recipe) else recipe
    seed = derive_seed("episode", index) if seed is None else seed
    block = index // compiled.block_size
    if group_seed is None:
        group_seed = derive_seed("group", run_id, block)
    ctx = EpisodeContext(index=index, seed=seed, run_id=run_id, recipe=compiled.name,
                         group_seed=group_seed, group_block=block)
    recorder = EpisodeRecorder(ctx)
    episode = Episode(run_id=run_id, index=index, recipe=compiled.name, seed=seed,
                      metadata={"group_seed": group_seed, "group_block": block, **(metadata or {})})
    token = _CURRENT.set(recorder)
    try:
        state = compiled.recipe.initial_state(ctx)
        config = {
            "callbacks": [TraceCallback(compiled, recorder)],
            "recursion_limit": compiled.recipe.recursion_limit,
            "metadata": {"agentplay_episode": index, "agentplay_run": run_id},
        }
        final = await compiled.graph.ainvoke(state, config=config)
        final = dict(final) if isinstance(final, dict) else {"output": final}
        episode.metadata.update(final.get("episode_metadata") or {})  # a recipe's own notes (e.g. pool admissions)
        turns = list(recorder.turns)
        await _assign_groups(compiled, turns, final, ctx)
        await _reward(compiled, final, ctx, recorder)
        episode.turns = list(recorder.turns)
        if compiled.recipe.metrics is not None:
            episode.metrics = {k: float(v) for k, v in compiled.recipe.metrics(final, episode.turns).items()}
    except Exception as exc:  # noqa: BLE001 - one broken episode must not stop the run
        episode.status = "error"
        episode.error_cause = error_cause(exc)
        episode.error = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"[-4000:]
        episode.turns = list(recorder.turns)
    finally:
        _CURRENT.reset(token)
    return episode


async def _assign_groups(compiled: CompiledRecipe, turns: list[RoleTurn], state: dict[str, Any],
                         ctx: EpisodeContext) -> None:
    for turn in turns:
        rule = compiled.recipe.groups.get(turn.role)
        if turn.group_id is None and rule is not None:
            turn.group_id = rule.group_id(turn, state, ctx)


async def _reward(compiled: CompiledRecipe, state: dict[str, Any], ctx: EpisodeContext,
                  recorder: EpisodeRecorder) -> None:
    recipe = compiled.recipe
    turns = list(recorder.turns)  # reward fns may run roles (judges); those turns are recorded, not rewarded
    view = EpisodeView(turns=turns, state=state, ctx=ctx)
    for turn in turns:
        fn = recipe.rewards.get(turn.role)
        if fn is None:
            continue
        if turn.parse_error and recipe.zero_on_parse_error:
            turn.reward = RewardRecord(value=0.0, reason=f"parse error: {turn.parse_error}")
            continue
        try:
            turn.reward = as_reward(await call_maybe_async(fn, turn, state, view))
        except Exception as exc:
            if infrastructure_failure(exc) is not None:
                raise  # a dead sandbox or endpoint while scoring: the episode is retried, not scored
            turn.reward, turn.reward_failed = None, reward_failure_text(exc)
    await apply_episode_rewards(recipe, turns)


async def apply_episode_rewards(recipe: Recipe, turns: list[RoleTurn]) -> None:
    """The per-episode hook: each role's rewarded turns of one group in this episode, one call each."""
    by_group: dict[tuple[str, str], list[RoleTurn]] = defaultdict(list)
    for turn in turns:
        if turn.role in recipe.episode_rewards and turn.reward is not None:
            by_group[(turn.role, turn.group_id or "")].append(turn)
    for (role, _), members in by_group.items():
        await apply_deltas(recipe.episode_rewards[role], members, [members], component="episode")


async def apply_deltas(fn: Any, members: list[RoleTurn], args: list[Any], *, component: str) -> None:
    """Call a per-episode or per-group reward fn and add its deltas to the members' rewards.

    It returns one delta per member (a number, (number, reason), or a RewardRecord whose
    components are merged in); each is added to the turn's reward and recorded as
    `components[component]`. A fn that raises or returns the wrong count leaves every
    member without a reward, marked `reward_failed` (their reward is unknown, never
    a partial one); an infrastructure failure in a per-episode fn fails the episode
    instead, so it is retried.
    """
    try:
        deltas = [as_reward(d) for d in await call_maybe_async(fn, *args)]
        if len(deltas) != len(members):
            raise ValueError(f"returned {len(deltas)} deltas for {len(members)} turns")
    except Exception as exc:
        if component == "episode" and infrastructure_failure(exc) is not None:
            raise
        failed = reward_failure_text(exc, f"{component} reward fn of role {members[0].role!r}")
        for t in members:
            t.reward, t.reward_failed = None, failed
        return
    for t, delta in zip(members, deltas):
        assert t.reward is not None
        t.reward.value += delta.value
        t.reward.components.update(delta.components)
        t.reward.components[component] = delta.value
        if delta.reason:
            t.reward.reason = f"{t.reward.reason}; {delta.reason}" if t.reward.reason else delta.reason


def as_reward(value: Any) -> RewardRecord:
    """Accept what reward fns naturally return: a RewardRecord, a number, or (number, reason)."""
    if isinstance(value, RewardRecord):
        return value
    if isinstance(value, bool | int | float):
        return RewardRecord(value=float(value))
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], bool | int | float):
        return RewardRecord(value=float(value[0]), reason=str(value[1]))
    raise TypeError(f"reward fn must return RewardRecord, float or (float, reason), got {type(value).__name__}")
