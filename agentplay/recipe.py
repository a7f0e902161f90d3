"""The self-play declaration: which node plays which role, what each role is rewarded for,
and which samples are compared with each other.

The graph itself is plain LangGraph. What no graph library says is how its
nodes become training data, so a `Recipe` states it in three small maps and
`compile()` checks them against the graph before any model is loaded.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agentplay._recorder import EpisodeContext
from agentplay.roles import Role
from agentplay.traces import RewardRecord, RoleTurn

__all__ = ["CompiledRecipe", "EpisodeView", "GroupBy", "Recipe", "RecipeError", "RewardFn"]


class RecipeError(ValueError):
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


RewardFn = Callable[[RoleTurn, dict[str, Any], EpisodeView], "RewardRecord | float | Any"]
"""``fn(turn, state, episode) -> RewardRecord | float`` (may be async)."""
GroupRewardFn = Callable[[list[RoleTurn]], "list[float] | Any"]
"""``fn(turns_of_one_group) -> deltas`` added to each turn's reward (may be async)."""


class GroupBy(BaseModel):
    """How samples of one role form a GRPO group (samples compared with each other)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    kind: Literal["episode", "seed", "key"]
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
    """A LangGraph graph plus the node -> role, role -> reward and role -> group maps."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    name: str = Field(min_length=1)
    graph: Any
    """A LangGraph `StateGraph` (uncompiled, or already compiled)."""
    roles: dict[str, str | Role]
    """Graph node -> the role it runs (a role name or the Role; a Role tells whether it is trainable)."""
    rewards: dict[str, RewardFn] = Field(default_factory=dict)
    """Role name -> reward fn, called once per RoleTurn of that role after the graph ends."""
    groups: dict[str, GroupBy] = Field(default_factory=dict)
    """Role name -> how its samples form groups."""
    group_rewards: dict[str, GroupRewardFn] = Field(default_factory=dict)
    """Role name -> fn over the role's turns of one group in one episode, returning reward deltas."""
    initial_state: Callable[[EpisodeContext], dict[str, Any]]
    """Builds the graph input of one episode from its context (index, seeds, rng)."""
    metrics: Callable[[dict[str, Any], list[RoleTurn]], dict[str, float]] | None = None
    """Episode figures shown in progress and stored (``valid_proposal`` feeds the valid-proposal rate)."""
    zero_on_parse_error: bool = True
    """A turn whose answer could not be parsed gets reward 0 with the parse error as reason,
    without calling the reward fn (reward fns then only see well-formed answers)."""
    recursion_limit: int = Field(50, ge=1)
    """LangGraph's super-step limit for one episode."""
    options: dict[str, Any] = Field(default_factory=dict)
    """The build options the recipe was made with (stored with the run)."""

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
        for field, mapping in (("rewards", self.rewards), ("groups", self.groups), ("group_rewards", self.group_rewards)):
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
        ks = {r.k for r in self.groups.values() if isinstance(r, GroupBy) and r.kind == "seed"}
        if len(ks) > 1:
            problems.append(f"groups: every GroupBy.seed(k) of one recipe must use the same k, got {sorted(ks)}")
        for field, fns in (("rewards", self.rewards), ("group_rewards", self.group_rewards)):
            for role, fn in fns.items():
                if not callable(fn):
                    problems.append(f"{field}: the value for {role!r} is not callable")
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
    def name(self) -> str:
        return self.recipe.name

    def role_for_node(self, node: str) -> str | None:
        value = self.recipe.roles.get(node)
        return value.name if isinstance(value, Role) else value


async def call_maybe_async(fn: Callable[..., Any], *args: Any) -> Any:
    out = fn(*args)
    return await out if inspect.isawaitable(out) else out
