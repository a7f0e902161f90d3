"""Advantages from the groups the graph declared, one role at a time, by the role's estimator.

TRL normalises rewards over `num_generations` consecutive completions of one
prompt. Our groups come from the recipe (`GroupBy.episode()`, `GroupBy.seed(k)`,
...), have any size and mix roles inside one episode, so the grouping is done
here; GRPO's formula is TRL's (r - mean, divided by the unbiased std + 1e-4
when scaling) so that `scale_rewards` means the same thing as in TRL.

A recipe may choose another estimator per role (`agentplay.Advantage`): Dr. GRPO,
REINFORCE++ or SPIRAL's RAE, whose moving baselines are state carried from one
iteration to the next (`AdvantageStats.rae_baselines` in, the updated copy out;
the training loop keeps them in its checkpoints). A recipe may also keep only
some of a role's turns (`agentplay.SampleFilter`), counted per role.

Only real samples reach the trainer: turns of episodes that ended in error,
turns whose reward fn raised (`reward_failed`) and turns without exact token ids
are left out, each kind counted, and a group that lost a member to a reward
failure is left out whole by default (its mean would be taken over the members
that happened not to crash the reward fn).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from agentplay._train_spec import Advantage, SampleFilter
from agentplay.traces import Episode, RoleTurn

__all__ = ["AdvantageStats", "RaeBaselines", "TrainSample", "compute_advantages"]

_STD_EPS = 1e-4

RaeBaselines = dict[str, dict[str, float]]
"""role -> environment -> the role's moving-average reward there (SPIRAL's b[env, role])."""


@dataclass
class TrainSample:
    """One RoleTurn that will be trained on, with its advantage already weighted by role."""

    turn: RoleTurn
    episode_id: str
    advantage: float
    """The role's estimator's advantage, times its scale component, times the role weight."""
    reward: float
    clip_high_bonus: float = 0.0
    """Added to the trainer's upper clip bound epsilon_high for this sample only (the role's
    `Advantage.clip_high_component`; 0: the batch's bound)."""


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
    filtered: dict[str, int] = field(default_factory=dict)
    """Role -> turns its `SampleFilter` left out (outside the band, or without the component)."""
    dropped_zero_advantage: int = 0
    """RAE samples left out because their advantage was exactly 0 (`Advantage.rae(drop_zero=True)`)."""
    per_role_rewards: dict[str, list[float]] = field(default_factory=dict)
    rae_baselines: RaeBaselines = field(default_factory=dict)
    """The RAE baselines after this batch (the input's, updated by its episodes): save them."""
    skipped_episode_error: int = 0
    """Turns of episodes that ended in error (infrastructure or recipe): never samples."""
    skipped_reward_failed: int = 0
    """Turns whose reward fn raised (`RoleTurn.reward_failed`): they have no reward."""
    dropped_reward_failed_groups: int = 0
    """Groups left out because a member's reward failed (`reward_failed_groups="drop"`)."""
    dropped_reward_failed_turns: int = 0
    """The otherwise usable members of those groups."""
    dropped_zero_variance_turns: int = 0
    """Members of the zero-variance groups counted in `dropped_groups`."""

    @property
    def dropped_group_fraction(self) -> float:
        return self.dropped_groups / self.groups if self.groups else 0.0

    @property
    def failed_turns(self) -> int:
        """Turns lost to a failure: an episode error, a reward fn that raised, missing token ids
        or reward. Each says something broke, unlike an uninformative group."""
        return (self.skipped_episode_error + self.skipped_reward_failed + self.dropped_reward_failed_turns
                + self.skipped_no_tokens + self.skipped_no_reward)

    @property
    def uninformative_turns(self) -> int:
        """Turns left out by design: zero-variance groups, filters, zero advantages, roles weighted 0."""
        return (self.dropped_zero_variance_turns + self.skipped_zero_weight + sum(self.filtered.values())
                + self.dropped_zero_advantage)

    def exclusions(self) -> dict[str, int]:
        """Why turns did not become samples: reason -> turns (only reasons that occurred)."""
        reasons = {
            "episode errors": self.skipped_episode_error,
            "reward fn failed": self.skipped_reward_failed,
            "group of a failed reward": self.dropped_reward_failed_turns,
            "no exact token ids": self.skipped_no_tokens,
            "no reward": self.skipped_no_reward,
            "zero-variance groups": self.dropped_zero_variance_turns,
            "filtered": sum(self.filtered.values()),
            "zero advantage": self.dropped_zero_advantage,
            "role weight 0": self.skipped_zero_weight,
            "no group (not trained)": self.skipped_no_group,
        }
        return {k: v for k, v in reasons.items() if v}


def _usable(turn: RoleTurn) -> bool:
    return bool(
        turn.token_exact
        and turn.prompt_token_ids
        and turn.token_ids
        and turn.mask is not None
        and len(turn.mask) == len(turn.token_ids)
        and any(turn.mask)
    )


_Member = tuple[Episode, RoleTurn, float]


def compute_advantages(
    episodes: list[Episode],
    *,
    scale_rewards: bool = True,
    zero_variance: str = "drop",
    role_weights: dict[str, float] | None = None,
    estimators: Mapping[str, Advantage] | None = None,
    filters: Mapping[str, SampleFilter] | None = None,
    rae_baselines: RaeBaselines | None = None,
    reward_failed_groups: str = "drop",
) -> tuple[list[TrainSample], AdvantageStats]:
    """Group turns by (role, group_id), apply each role's estimator, weight by role.

    The key includes the role so that two roles sharing a group id (one episode id
    used as the group of both proposer and solver) are never compared. Roles without
    an estimator use GRPO (`scale_rewards`) or Dr. GRPO (`not scale_rewards`).
    `rae_baselines` is not modified; the updated baselines are in the returned stats.
    `reward_failed_groups`: "drop" leaves out a group with a reward-failed member;
    "shrink" normalises over the members that have a reward.
    """
    if reward_failed_groups not in ("drop", "shrink"):
        raise ValueError(f"reward_failed_groups: must be 'drop' or 'shrink', got {reward_failed_groups!r}")
    weights = role_weights or {}
    chosen = dict(estimators or {})
    default = Advantage.grpo() if scale_rewards else Advantage.dr_grpo()
    stats = AdvantageStats(rae_baselines={r: dict(b) for r, b in (rae_baselines or {}).items()})
    groups: dict[tuple[str, str], list[_Member]] = defaultdict(list)
    tainted: set[tuple[str, str]] = set()
    for ep in sorted(episodes, key=lambda e: (e.run_id, e.index)):  # a fixed order: RAE is sequential
        for turn in ep.turns:
            stats.turns += 1
            if ep.status == "error":
                stats.skipped_episode_error += 1
                continue
            if turn.reward is not None:
                stats.per_role_rewards.setdefault(turn.role, []).append(float(turn.reward.value))
            if turn.group_id is None:
                stats.skipped_no_group += 1
            elif turn.reward_failed is not None:
                stats.skipped_reward_failed += 1
                tainted.add((turn.role, turn.group_id))
            elif turn.reward is None or not math.isfinite(turn.reward.value):
                stats.skipped_no_reward += 1
            elif not _usable(turn):
                stats.skipped_no_tokens += 1
            elif weights.get(turn.role, 1.0) == 0.0:
                stats.skipped_zero_weight += 1
            elif filters is not None and turn.role in filters and not filters[turn.role].keeps(turn.reward.components):
                stats.filtered[turn.role] = stats.filtered.get(turn.role, 0) + 1
            else:
                groups[(turn.role, turn.group_id)].append((ep, turn, float(turn.reward.value)))

    by_role: dict[str, list[list[_Member]]] = defaultdict(list)
    for key, members in sorted(groups.items(), key=lambda kv: kv[0]):
        if key in tainted and reward_failed_groups == "drop":
            stats.dropped_reward_failed_groups += 1
            stats.dropped_reward_failed_turns += len(members)
            continue
        by_role[key[0]].append(members)
    samples: list[TrainSample] = []
    for role, role_groups in sorted(by_role.items()):
        est = chosen.get(role, default)
        if est.kind == "rae":
            advantages = _rae(role, role_groups, est, episodes, stats)
        elif est.kind == "reinforce_pp":
            advantages = _reinforce_pp(role_groups, est, zero_variance, stats)
        else:
            advantages = _group_normalised(role_groups, est.kind == "grpo", zero_variance, stats)
        w = weights.get(role, 1.0)
        for (ep, turn, r), adv in advantages:
            if est.scale_component is not None:
                adv *= _component(turn, est.scale_component)
            bonus = 0.0
            if est.clip_high_component is not None:
                bonus = _component(turn, est.clip_high_component)
                if not (math.isfinite(bonus) and bonus >= 0.0):
                    raise ValueError(f"advantages: the {role!r} estimator widens the clip bound by reward component "
                                     f"{est.clip_high_component!r}, which must be a finite number >= 0; turn "
                                     f"{turn.turn_id} has {bonus}")
            samples.append(TrainSample(turn=turn, episode_id=ep.episode_id, advantage=adv * w, reward=r,
                                       clip_high_bonus=bonus))
    return samples, stats


def _std(values: list[float]) -> float:
    """Unbiased sample std (TRL's); 0 for fewer than two values."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def _group_normalised(role_groups: list[list[_Member]], scale: bool, zero_variance: str,
                      stats: AdvantageStats) -> list[tuple[_Member, float]]:
    """GRPO: (r - mean) / (std + 1e-4); Dr. GRPO: r - mean. Zero-variance groups may be dropped."""
    out: list[tuple[_Member, float]] = []
    for members in role_groups:
        stats.groups += 1
        rewards = [r for _, _, r in members]
        mean, std = sum(rewards) / len(rewards), _std(rewards)
        if std == 0.0 and zero_variance == "drop":
            stats.dropped_groups += 1
            stats.dropped_zero_variance_turns += len(members)
            continue
        for m in members:
            adv = m[2] - mean
            out.append((m, adv / (std + _STD_EPS) if scale else adv))
    return out


def _reinforce_pp(role_groups: list[list[_Member]], est: Advantage, zero_variance: str,
                  stats: AdvantageStats) -> list[tuple[_Member, float]]:
    """REINFORCE++: normalise over the role's whole batch (optionally after a group baseline).

    With the group baseline a zero-variance group has nothing left and is dropped like
    GRPO's; without it, groups do not enter the formula and none is dropped.
    """
    centred: list[tuple[_Member, float]] = []
    for members in role_groups:
        stats.groups += 1
        rewards = [r for _, _, r in members]
        if est.group_baseline:
            if _std(rewards) == 0.0 and zero_variance == "drop":
                stats.dropped_groups += 1
                stats.dropped_zero_variance_turns += len(members)
                continue
            mean = sum(rewards) / len(rewards)
            centred += [(m, m[2] - mean) for m in members]
        else:
            centred += [(m, m[2]) for m in members]
    values = [v for _, v in centred]
    if not values:
        return []
    mean = 0.0 if est.group_baseline else sum(values) / len(values)
    std = _std(values)
    return [(m, (v - mean) / (std + _STD_EPS)) for m, v in centred]


def _rae(role: str, role_groups: list[list[_Member]], est: Advantage, episodes: list[Episode],
         stats: AdvantageStats) -> list[tuple[_Member, float]]:
    """SPIRAL's RAE: each sample's reward minus b[env, role] as it stood before its episode.

    Episodes are taken in (run, index) order. The baseline moves once per episode with
    the mean of the role's finite rewards there (every rewarded turn of the role, trainable
    or not: the baseline tracks what the role earns, not what is trained on).
    """
    trainable: dict[str, list[_Member]] = defaultdict(list)
    for members in role_groups:
        stats.groups += 1
        for m in members:
            trainable[m[0].episode_id].append(m)
    baselines = stats.rae_baselines.setdefault(role, {})
    out: list[tuple[_Member, float]] = []
    for ep in sorted(episodes, key=lambda e: (e.run_id, e.index)):
        rewards = [float(t.reward.value) for t in ep.turns
                   if t.role == role and t.reward is not None and math.isfinite(t.reward.value)]
        if not rewards:
            continue
        env = str(ep.metadata.get(est.env_key) or ep.recipe or "default")
        b = baselines.get(env, 0.0)
        for m in trainable.get(ep.episode_id, []):
            adv = m[2] - b
            if adv == 0.0 and est.drop_zero:
                stats.dropped_zero_advantage += 1
                continue
            out.append((m, adv))
        baselines[env] = est.decay * b + (1.0 - est.decay) * (sum(rewards) / len(rewards))
    return out


def _component(turn: RoleTurn, name: str) -> float:
    assert turn.reward is not None
    try:
        return float(turn.reward.components[name])
    except KeyError:
        raise ValueError(f"advantages: the {turn.role!r} estimator scales by reward component {name!r}, "
                         f"but turn {turn.turn_id} has only {sorted(turn.reward.components)}") from None
