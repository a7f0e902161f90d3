"""Group-level rewards: a role's whole GRPO group, across episodes, before anything is stored.

Episodes are stored once and never updated, so a reward that depends on the other
members of a group (R-Zero's repetition penalty over the k questions of a seed block)
must be applied before the first member is written. The runner therefore holds the
finished episodes of a `GroupBy.seed(k)` block (k = 1 when the recipe groups nothing
across episodes) until every index of the block that this call runs has come back,
calls the recipe's `whole_group_rewards` fns on the block, and stores the block in one
transaction. A kill loses the blocks in flight (a resume re-runs them with the same
seeds); a stored block always carries final rewards.
"""

from __future__ import annotations

from collections import defaultdict

from agentplay._episode import apply_deltas
from agentplay.recipe import CompiledRecipe, RewardGroup
from agentplay.traces import Episode, RoleTurn

__all__ = ["BlockBuffer", "apply_group_rewards"]


async def apply_group_rewards(compiled: CompiledRecipe, episodes: list[Episode], *, complete: bool = True) -> None:
    """Call each role's group reward fn once per group found in `episodes` (one closed block).

    Only rewarded turns of episodes that finished ("ok" or "invalid") take part, in
    episode-index order; the deltas are added to those turns' rewards (component ``group``).
    """
    recipe = compiled.recipe
    members: dict[tuple[str, str], list[tuple[Episode, RoleTurn]]] = defaultdict(list)
    for ep in sorted(episodes, key=lambda e: e.index):
        if ep.status == "error":
            complete = False
            continue
        for turn in ep.turns:
            if turn.role in recipe.whole_group_rewards and turn.reward is not None:
                members[(turn.role, turn.group_id or "")].append((ep, turn))
    for (role, group_id), pairs in members.items():
        group = RewardGroup(role=role, group_id=group_id, turns=[t for _, t in pairs],
                            episodes=[e for e, _ in pairs], complete=complete)
        await apply_deltas(recipe.whole_group_rewards[role], group.turns, [group], component="group")


class BlockBuffer:
    """Holds a run's finished episodes until their block is whole, then rewards and releases it."""

    def __init__(self, compiled: CompiledRecipe, indexes: list[int], *, total: int, resumed: set[int]) -> None:
        """`indexes`: the episode indexes this call runs; `total`: the run's episode count;
        `resumed`: blocks that already had episodes stored before this call."""
        self._compiled = compiled
        self._k = compiled.block_size
        self._total = total
        self._resumed = resumed
        self._waiting: dict[int, set[int]] = defaultdict(set)
        for i in indexes:
            self._waiting[i // self._k].add(i)
        self._held: dict[int, list[Episode]] = defaultdict(list)

    async def add(self, episode: Episode) -> list[Episode]:
        """Take one finished episode; return its whole block (index order) once complete, else []."""
        block = episode.index // self._k
        self._held[block].append(episode)
        self._waiting[block].discard(episode.index)
        if self._waiting[block]:
            return []
        del self._waiting[block]
        episodes = sorted(self._held.pop(block), key=lambda e: e.index)
        whole = len(episodes) == self._k and block not in self._resumed and (block + 1) * self._k <= self._total
        await apply_group_rewards(self._compiled, episodes, complete=whole)
        return episodes

    @property
    def held(self) -> int:
        """Episodes finished but not yet released (their block is still running)."""
        return sum(len(v) for v in self._held.values())
