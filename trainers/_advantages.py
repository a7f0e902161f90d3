"""GRPO advantages from the groups the graph declared, one role at a time.

TRL normalises rewards over `num_generations` consecutive completions of one
prompt. Our groups come from the recipe (`GroupBy.episode()`, `GroupBy.seed(k)`,
...), have any size and mix roles inside one episode, so the grouping is done
here; the advantage formula is TRL's (r - mean, divided by the unbiased std + 1e-4
when scaling) so that `scale_rewards` means the same thing as in TRL.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from agentplay.traces import Episode, RoleTurn

__all__ = ["AdvantageStats", "TrainSample", "compute_advantages"]

_STD_EPS = 1e-4


@dataclass
class TrainSample:
    """One RoleTurn that will be trained on, with its advantage already weighted by role."""

    turn: RoleTurn
    episode_id: str
    advantage: float
    """(r - mean) [/ (std + 1e-4)] times the role weight."""
    reward: float


@dataclass
class AdvantageStats:
    """What was kept and why the rest was not: every turn is counted once."""

    turns: int = 0
    groups: int = 0
    dropped_groups: int = 0
    """Groups with zero reward variance (or a single member) when `zero_variance="drop"`."""
    skipped_no_group: int = 0
    skipped_no_reward: int = 0
    skipped_no_tokens: int = 0
    """Turns without token ids / mask or whose tokens were not exact (a re-render broke the prefix)."""
    skipped_zero_weight: int = 0
    per_role_rewards: dict[str, list[float]] = field(default_factory=dict)

    @property
    def dropped_group_fraction(self) -> float:
        return self.dropped_groups / self.groups if self.groups else 0.0


def _usable(turn: RoleTurn) -> bool:
    return bool(
        turn.token_exact
        and turn.prompt_token_ids
        and turn.token_ids
        and turn.mask is not None
        and len(turn.mask) == len(turn.token_ids)
        and any(turn.mask)
    )


def compute_advantages(
    episodes: list[Episode],
    *,
    scale_rewards: bool = True,
    zero_variance: str = "drop",
    role_weights: dict[str, float] | None = None,
) -> tuple[list[TrainSample], AdvantageStats]:
    """Group turns by (role, group_id), normalise inside each group, weight by role.

    The key includes the role so that two roles sharing a group id (one episode id
    used as the group of both proposer and solver) are never compared.
    """
    weights = role_weights or {}
    stats = AdvantageStats()
    groups: dict[tuple[str, str], list[tuple[Episode, RoleTurn, float]]] = defaultdict(list)
    for ep in episodes:
        for turn in ep.turns:
            stats.turns += 1
            if turn.reward is not None:
                stats.per_role_rewards.setdefault(turn.role, []).append(float(turn.reward.value))
            if turn.group_id is None:
                stats.skipped_no_group += 1
            elif turn.reward is None or not math.isfinite(turn.reward.value):
                stats.skipped_no_reward += 1
            elif not _usable(turn):
                stats.skipped_no_tokens += 1
            elif weights.get(turn.role, 1.0) == 0.0:
                stats.skipped_zero_weight += 1
            else:
                groups[(turn.role, turn.group_id)].append((ep, turn, float(turn.reward.value)))

    samples: list[TrainSample] = []
    for (role, _gid), members in sorted(groups.items()):
        stats.groups += 1
        rewards = [r for _, _, r in members]
        n = len(rewards)
        mean = sum(rewards) / n
        std = math.sqrt(sum((r - mean) ** 2 for r in rewards) / (n - 1)) if n > 1 else 0.0
        if std == 0.0 and zero_variance == "drop":
            stats.dropped_groups += 1
            continue
        w = weights.get(role, 1.0)
        for ep, turn, r in members:
            adv = r - mean
            if scale_rewards:
                adv /= std + _STD_EPS
            samples.append(TrainSample(turn=turn, episode_id=ep.episode_id, advantage=adv * w, reward=r))
    return samples, stats
