"""The self-play declaration: which node plays which role, what each role is rewarded for,
and which samples are compared with each other.

The graph itself is plain LangGraph. What no graph library says is how its
nodes become training data, so a `Recipe` states it in three small maps and
`compile()` checks them against the graph before any model is loaded.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentplay._recorder import EpisodeContext
from agentplay._train_spec import Advantage, SampleFilter
from agentplay.errors import AgentplayError
from agentplay.roles import Role
from agentplay.traces import Episode, RewardRecord, RoleTurn

__all__ = ["CompiledRecipe", "EpisodeRewardFn", "EpisodeView", "GroupBy", "GroupRewardFn", "Recipe",
           "RecipeError", "RewardFn", "RewardGroup"]


class RecipeError(AgentplayError, ValueError):
    """A recipe whose maps do not fit its graph; the message says what to add or rename."""


@dataclass
class EpisodeView:
    """What a reward function may look at besides its own turn."""

    turns: list[RoleTurn]
    """Every RoleTurn of the episode, in the order they finished."""
    state: dict[str, Any]
    """The graph's final state."""
    ctx: EpisodeContext

    def turns_of(self, role: str) -> list[RoleTurn]:
        return [t for t in self.turns if t.role == role]


@dataclass
class RewardGroup:
    """One GRPO group of one role, across the episodes it spans: what a group reward fn sees.

    `turns` are the group's rewarded turns in episode-index order; `episodes[i]` is the
    stored-to-be Episode of `turns[i]` (metrics, metadata, its other turns). Every turn
    already carries its per-turn and per-episode reward.
    """

    role: str
    group_id: str
    turns: list[RoleTurn]
    episodes: list[Episode]
    complete: bool = True
    """False when the group misses episodes: the run's last block cut short by `--episodes`,
    a block resumed after a kill, or episodes that failed."""


RewardFn = Callable[[RoleTurn, dict[str, Any], EpisodeView], "RewardRecord | float | Any"]
"""``fn(turn, state, episode) -> RewardRecord | float`` (may be async)."""
EpisodeRewardFn = Callable[[list[RoleTurn]], "list[float] | Any"]
"""``fn(turns) -> deltas``: a role's rewarded turns of one group inside one episode (may be async)."""
GroupRewardFn = Callable[[RewardGroup], "list[float] | Any"]
"""``fn(group) -> deltas``: a role's whole GRPO group, across episodes (may be async)."""


class GroupBy(BaseModel):
    """How samples of one role form a GRPO group (samples compared with each other)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True, use_attribute_docstrings=True)

    kind: Literal["episode", "seed", "key"]
    """`episode`: the role's turns of one episode; `seed`: of k consecutive episodes; `key`: by a fn."""
    k: int = 1
    """For `seed`: episodes per block sharing one group seed."""
    fn: Callable[[RoleTurn, dict[str, Any], EpisodeContext], str] | None = None
    """For `key`: returns the group key of a turn."""

    @classmethod
    def episode(cls) -> GroupBy:
        """All turns of the role in one episode form a group (e.g. n solver attempts at one question)."""
        return cls(kind="episode")

    @classmethod
    def seed(cls, k: int) -> GroupBy:
        """The role's turns from k consecutive episodes sharing `ctx.group_seed` form a group
        (e.g. k proposals for one target)."""
        if k < 1:
            raise RecipeError(f"GroupBy.seed: k must be at least 1, got {k}")
        return cls(kind="seed", k=k)

    @classmethod
    def key(cls, fn: Callable[[RoleTurn, dict[str, Any], EpisodeContext], str]) -> GroupBy:
        """Custom: turns whose `fn(turn, state, ctx)` is equal (within a run) form a group."""
        if not callable(fn):
            raise RecipeError("GroupBy.key: fn must be callable(turn, state, ctx) -> str")
        return cls(kind="key", fn=fn)

    def group_id(self, turn: RoleTurn, state: dict[str, Any], ctx: EpisodeContext) -> str:
        """Stable across resumes: derived from the run, the episode index/block, and the role."""
        if self.kind == "episode":
            return f"{ctx.run_id}/ep{ctx.index}/{turn.role}"
        if self.kind == "seed":
            return f"{ctx.run_id}/block{ctx.index // self.k}/{turn.role}"
        assert self.fn is not None
        return f"{ctx.run_id}/{turn.role}/{self.fn(turn, state, ctx)}"


class Recipe(BaseModel):
    """A LangGraph graph plus the node -> role, role -> reward and role -> group maps.

    Rewards come at three levels, applied in this order and added up:

    1. `rewards` (per turn): after the graph ends, once per RoleTurn of the role, with
       the final state; its RewardRecord is the turn's reward.
    2. `episode_rewards` (per episode): right after, once per (role, group) inside the
       episode, with that role's rewarded turns there; each returned delta is added to
       its turn's reward (recorded as the component ``episode``).
    3. `whole_group_rewards` (per GRPO group, across episodes): in the runner, once the
       episodes of the group have all finished and before any of them is stored; each
       delta is added to its turn's reward (component ``group``). Stored rewards are final.

    `group_rewards` is the old name of `episode_rewards` (it was always called once per
    episode); it still works and warns.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid", use_attribute_docstrings=True)

    name: str = Field(min_length=1)
    """Recipe name: stored with every run and episode; a resumed run must use the same."""
    graph: Any
    """A LangGraph `StateGraph` (uncompiled, or already compiled)."""
    roles: dict[str, str | Role]
    """Graph node -> the role it runs (a role name or the Role; a Role tells whether it is trainable)."""
    rewards: dict[str, RewardFn] = Field(default_factory=dict)
    """Role name -> reward fn, called once per RoleTurn of that role after the graph ends."""
    groups: dict[str, GroupBy] = Field(default_factory=dict)
    """Role name -> how its samples form groups."""
    episode_rewards: dict[str, EpisodeRewardFn] = Field(default_factory=dict)
    """Role name -> ``fn(turns) -> deltas``, called once per episode for each of the role's
    groups in it, with those rewarded turns (e.g. a repetition penalty among one episode's
    proposals). Each delta is added to its turn's reward."""
    whole_group_rewards: dict[str, GroupRewardFn] = Field(default_factory=dict)
    """Role name -> ``fn(group: RewardGroup) -> deltas``, called once per GRPO group when all
    of its episodes have finished (e.g. R-Zero's repetition penalty over the k questions of
    a `GroupBy.seed(k)` block). The runner holds a block's episodes until then and stores
    them together; roles grouped by `GroupBy.key` cannot have one (their groups never close)."""
    advantages: dict[str, Advantage] = Field(default_factory=dict)
    """Role name -> advantage estimator (`Advantage.grpo()`, `.dr_grpo()`, `.reinforce_pp()`,
    `.rae()`); roles not named use the trainer's default (GRPO, or Dr. GRPO with `dr_grpo` loss)."""
    filters: dict[str, SampleFilter] = Field(default_factory=dict)
    """Role name -> which of its turns are trained on (`SampleFilter.band("agreement", 0.3, 0.8)`);
    the trainer counts the rest per role in the metric ``filtered/<role>``."""
    initial_state: Callable[[EpisodeContext], dict[str, Any]]
    """Builds the graph input of one episode from its context (index, seeds, rng)."""
    metrics: Callable[[dict[str, Any], list[RoleTurn]], dict[str, float]] | None = None
    """``fn(final_state, turns) -> {name: value}``: the episode's figures, stored with it and averaged per run."""
    headline_metrics: list[str] = Field(default_factory=list)
    """The `metrics` names that say at a glance whether self-play works (e.g. ``["valid_proposal",
    "solve_rate"]``), in the order shown: the progress bar, the run summary, the trainer's log line,
    its summary table, the UI's charts and the report show these and no others."""
    zero_on_parse_error: bool = True
    """A turn whose answer could not be parsed gets reward 0 with the parse error as reason,
    without calling the reward fn (reward fns then only see well-formed answers)."""
    recursion_limit: int = Field(50, ge=1)
    """LangGraph's super-step limit for one episode."""
    options: dict[str, Any] = Field(default_factory=dict)
    """The build options the recipe was made with (stored with the run)."""

    @model_validator(mode="before")
    @classmethod
    def _old_group_rewards_name(cls, data: Any) -> Any:
        """`group_rewards=` (the old name of the per-episode hook) still works, with a warning."""
        if isinstance(data, dict) and "group_rewards" in data:
            warnings.warn("Recipe(group_rewards=...) is deprecated: it was always called once per episode; "
                          "name it episode_rewards= (whole_group_rewards= sees a whole GRPO group across episodes)",
                          DeprecationWarning, stacklevel=4)
            data = dict(data)
            old = data.pop("group_rewards") or {}
            if data.get("episode_rewards"):
                raise RecipeError("Recipe: give episode_rewards= only (group_rewards= is its deprecated old name)")
            data["episode_rewards"] = old
        return data

    @property
    def group_rewards(self) -> dict[str, EpisodeRewardFn]:
        """Deprecated: the old name of `episode_rewards`."""
        warnings.warn("Recipe.group_rewards is deprecated: use Recipe.episode_rewards", DeprecationWarning, stacklevel=2)
        return self.episode_rewards

    def role_names(self) -> dict[str, bool]:
        """Role name -> trainable, for the roles named in the node map."""
        out: dict[str, bool] = {}
        for value in self.roles.values():
            if isinstance(value, Role):
                out[value.name] = out.get(value.name, False) or value.trainable
            else:
                out.setdefault(value, True)
        return out

    def compile(self) -> CompiledRecipe:
        """Check the maps against the graph and compile it; errors say what to fix."""
        graph = self.graph
        compiled = graph.compile() if hasattr(graph, "add_node") else graph
        if not hasattr(compiled, "ainvoke"):
            raise RecipeError(f"Recipe {self.name!r}: graph must be a LangGraph StateGraph, got {type(graph).__name__}")
        nodes = set(getattr(graph, "nodes", {}) or getattr(compiled, "nodes", {})) - {"__start__", "__end__"}
        problems: list[str] = []
        for node in self.roles:
            if node not in nodes:
                problems.append(f"roles: node {node!r} is not in the graph (nodes: {', '.join(sorted(nodes))})")
        names = self.role_names()
        maps = (("rewards", self.rewards), ("groups", self.groups), ("episode_rewards", self.episode_rewards),
                ("whole_group_rewards", self.whole_group_rewards), ("advantages", self.advantages), ("filters", self.filters))
        for field, mapping in maps:
            for role in mapping:
                if role not in names:
                    problems.append(f"{field}: role {role!r} is not run by any node in `roles` (roles: {', '.join(sorted(names))})")
        for role, trainable in sorted(names.items()):
            if trainable and role not in self.rewards:
                problems.append(f"rewards: trainable role {role!r} has no reward fn (add rewards={{{role!r}: fn}} or mark the Role trainable=False)")
            if trainable and role not in self.groups:
                problems.append(f"groups: trainable role {role!r} has no group rule (e.g. groups={{{role!r}: GroupBy.episode()}})")
        for role, rule in self.groups.items():
            if not isinstance(rule, GroupBy):
                problems.append(f"groups: {role!r} must be a GroupBy (GroupBy.episode(), .seed(k), .key(fn))")
        for role in self.whole_group_rewards:
            group = self.groups.get(role)
            if group is None or (isinstance(group, GroupBy) and group.kind == "key"):
                problems.append(f"whole_group_rewards: role {role!r} needs a group that closes: GroupBy.episode() or "
                                f"GroupBy.seed(k) (a GroupBy.key group can gain members from any later episode)")
        for field, values, kind in (("advantages", self.advantages, Advantage), ("filters", self.filters, SampleFilter)):
            for role, value in values.items():
                if not isinstance(value, kind):
                    problems.append(f"{field}: the value for {role!r} must be an agentplay.{kind.__name__}, "
                                    f"got {type(value).__name__}")
        ks = {r.k for r in self.groups.values() if isinstance(r, GroupBy) and r.kind == "seed"}
        if len(ks) > 1:
            problems.append(f"groups: every GroupBy.seed(k) of one recipe must use the same k, got {sorted(ks)}")
        for field, fns in (("rewards", self.rewards), ("episode_rewards", self.episode_rewards),
                           ("whole_group_rewards", self.whole_group_rewards)):
            for role, fn in fns.items():
                if not callable(fn):
                    problems.append(f"{field}: the value for {role!r} is not callable")
        if self.headline_metrics and self.metrics is None:
            problems.append(f"headline_metrics: {', '.join(self.headline_metrics)} need a `metrics` fn that reports them")
        if len(set(self.headline_metrics)) != len(self.headline_metrics):
            problems.append(f"headline_metrics: a name appears twice in {self.headline_metrics}")
        if problems:
            raise RecipeError(f"Recipe {self.name!r} does not fit its graph:\n  - " + "\n  - ".join(problems))
        return CompiledRecipe(recipe=self, graph=compiled, block_size=ks.pop() if ks else 1)


@dataclass
class CompiledRecipe:
    """A checked recipe with its compiled graph: what `run_episode` runs."""

    recipe: Recipe
    graph: Any
    block_size: int = 1
    """Episodes per group-seed block (the k of `GroupBy.seed`, else 1)."""

    @property
    def holds_blocks(self) -> bool:
        """True when the runner must hold a block's episodes for the recipe's group rewards."""
        return bool(self.recipe.whole_group_rewards)

    @property
    def name(self) -> str:
        return self.recipe.name

    def role_for_node(self, node: str) -> str | None:
        value = self.recipe.roles.get(node)
        return value.name if isinstance(value, Role) else value


async def call_maybe_async(fn: Callable[..., Any], *args: Any) -> Any:
    out = fn(*args)
    return await out if inspect.isawaitable(out) else out
