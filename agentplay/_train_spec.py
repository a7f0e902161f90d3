"""What a recipe declares about training, per role: its advantage estimator and its sample filter.

Declarations only (small pydantic values, no torch): `agentplay.trainers` computes with
them, so `agentplay run` never imports the trainer. A role without a declaration
trains with the trainer's default (GRPO group normalisation, unfiltered).

    Recipe(...,
           advantages={"player_0": Advantage.rae(decay=0.95)},        # SPIRAL
           filters={"solver": SampleFilter.band("agreement", 0.3, 0.8)})  # Agent0 / R-Zero
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentplay.errors import AgentplayError

__all__ = ["Advantage", "AdvantageKind", "SampleFilter"]

AdvantageKind = Literal["grpo", "dr_grpo", "reinforce_pp", "rae"]


class Advantage(BaseModel):
    """How one role's rewards become advantages. Build with the class methods.

    - ``grpo()``: (r - group mean) / (group std + 1e-4), the unbiased std, as TRL computes it.
    - ``dr_grpo()``: r - group mean (Dr. GRPO drops the std division, which favours easy and
      hard groups over informative ones).
    - ``reinforce_pp()``: (r - batch mean) / (batch std + 1e-4) over all of the role's samples
      of the iteration (REINFORCE++); ``group_baseline=True`` subtracts the group mean first
      and then divides by the batch std (the "REINFORCE++-baseline" variant).
    - ``rae(decay)``: SPIRAL's role-conditioned advantage: r - b[env, role], with b an
      exponential moving average of the role's reward per environment, updated once per
      episode after its advantages are taken (b <- decay * b + (1 - decay) * episode reward),
      starting at 0, kept across iterations and saved in checkpoints.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    kind: AdvantageKind
    """Which estimator (see the class docstring for each formula)."""
    decay: float = Field(0.95, gt=0.0, lt=1.0)
    """`rae`: weight of the old baseline in each update (SPIRAL uses 0.95)."""
    env_key: str = "env"
    """`rae`: the `Episode.metadata` key naming the episode's environment (a game);
    episodes without it share one baseline named after the recipe."""
    drop_zero: bool = True
    """`rae`: leave out samples whose advantage is exactly 0 (SPIRAL's filter_zero_adv);
    they add nothing to the gradient but count in the token normaliser."""
    group_baseline: bool = False
    """`reinforce_pp`: subtract the group mean before the batch normalisation."""
    scale_component: str | None = None
    """Multiply each advantage by this component of the turn's reward record (e.g. Agent0's
    ambiguity scale, computed by the recipe's reward fn and stored with the reward)."""
    clip_high_component: str | None = None
    """Widen the upper clip bound of each sample's importance ratio by this component of its
    reward record (>= 0): the loss clips at 1 + epsilon_high + it instead of 1 + epsilon_high
    (Agent0's ADPO: ambiguity-dynamic clipping, a wider trust region for uncertain tasks)."""

    @classmethod
    def grpo(cls, *, scale_component: str | None = None, clip_high_component: str | None = None) -> Advantage:
        """Group-normalised advantages (the trainer's default)."""
        return cls(kind="grpo", scale_component=scale_component, clip_high_component=clip_high_component)

    @classmethod
    def dr_grpo(cls, *, scale_component: str | None = None, clip_high_component: str | None = None) -> Advantage:
        """Group-centred advantages without the std division (Dr. GRPO, SPICE)."""
        return cls(kind="dr_grpo", scale_component=scale_component, clip_high_component=clip_high_component)

    @classmethod
    def reinforce_pp(cls, *, group_baseline: bool = False, scale_component: str | None = None,
                     clip_high_component: str | None = None) -> Advantage:
        """Batch-normalised advantages (REINFORCE++), optionally with a group-mean baseline."""
        return cls(kind="reinforce_pp", group_baseline=group_baseline, scale_component=scale_component,
                   clip_high_component=clip_high_component)

    @classmethod
    def rae(cls, decay: float = 0.95, *, env_key: str = "env", drop_zero: bool = True,
            scale_component: str | None = None, clip_high_component: str | None = None) -> Advantage:
        """SPIRAL's role-conditioned advantage estimation with an EMA baseline per (env, role)."""
        return cls(kind="rae", decay=decay, env_key=env_key, drop_zero=drop_zero, scale_component=scale_component,
                   clip_high_component=clip_high_component)


class SampleFilterError(AgentplayError, ValueError):
    """A sample filter that cannot work as declared (an empty band, a missing component name)."""


class SampleFilter(BaseModel):
    """Which of a role's turns are trained on, decided from the reward record stored with each.

    A turn is kept when ``low <= reward.components[component] <= high``; a turn whose
    reward has no such component is left out too (counted). Filtering happens before
    grouping, so the kept turns of a group are normalised among themselves.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    component: str = Field(min_length=1)
    """Name of the reward component to test (e.g. ``agreement``, the majority-vote share p)."""
    low: float
    """Smallest kept value (inclusive)."""
    high: float
    """Largest kept value (inclusive)."""

    @model_validator(mode="after")
    def _check(self) -> SampleFilter:
        if self.low > self.high:
            raise SampleFilterError(f"SampleFilter.band: low ({self.low}) must not exceed high ({self.high})")
        return self

    @classmethod
    def band(cls, component: str, low: float, high: float) -> SampleFilter:
        """Keep turns whose reward component lies in [low, high] (e.g. agreement p in [0.3, 0.8])."""
        return cls(component=component, low=low, high=high)

    def keeps(self, components: dict[str, float]) -> bool:
        value = components.get(self.component)
        return value is not None and self.low <= value <= self.high
