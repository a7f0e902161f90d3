"""What one episode leaves behind: enough to train on, to debug, and to resume.

A `RoleTurn` is one role's part of an episode (possibly many model calls with
tool calls in between). Its `token_ids` are the whole multi-turn sequence after
the first prompt, and `mask` says which of those tokens the model wrote (1) and
which came from tools or the chat template (0): the trainer puts loss only on 1s.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentplay.models._types import Message, SamplingRecord


def new_id() -> str:
    return uuid.uuid4().hex


class ToolCallRecord(BaseModel):
    """One tool call as executed: what was asked, what came back, how long it took."""

    call_id: str
    name: str
    arguments: dict[str, Any] | None = None
    """Parsed arguments; None when they could not be parsed (see `error`)."""
    raw_arguments: str = ""
    result: str = ""
    """What the model saw (truncated to the tool's limit)."""
    truncated: bool = False
    error: str | None = None
    """Structured error text shown to the model (unknown tool, bad arguments, timeout...)."""
    latency_s: float = 0.0
    sandboxed: bool = False


class Generation(BaseModel):
    """One model call inside a role turn."""

    prompt_token_ids: list[int] | None = None
    completion_token_ids: list[int] | None = None
    logprobs: list[float] | None = None
    text: str = ""
    finish_reason: str = "stop"
    weight_version: int | None = None
    model: str = ""
    sampling: SamplingRecord | None = None
    """How the tokens were sampled (temperature, top_p, top_k, logprobs mode, engine); the
    trainer scores them under these. None in traces written before it was recorded."""
    tokenizer: str | None = None
    """The model's tokenizer (a local folder or tokenizer.json, or a Hugging Face repo id), so
    the ids can be decoded back token by token; None when the backend could not say."""


class RewardRecord(BaseModel):
    """A reward for one role turn, with the reason a human can read."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    value: float
    """The reward GRPO uses: the turn's reward plus the per-episode and per-group deltas."""
    reason: str = ""
    """Why, in words (shown in the UI beside the value)."""
    components: dict[str, float] = Field(default_factory=dict)
    """Named parts and figures (e.g. ``agreement``, ``format``; ``episode`` and ``group`` hold
    the deltas of those levels); sample filters and advantage scaling read them."""


class RoleTurn(BaseModel):
    """One role's contribution to an episode: the unit GRPO trains on."""

    turn_id: str = Field(default_factory=new_id)
    role: str
    node: str = ""
    """The graph node that produced it."""
    group_id: str | None = None
    """Samples with the same group id are normalised against each other."""
    messages: list[Message] = Field(default_factory=list)
    prompt_token_ids: list[int] | None = None
    """Ids of the first prompt (system + user), rendered by the chat template."""
    token_ids: list[int] | None = None
    """Everything after the first prompt: model tokens, tool outputs, template glue."""
    mask: list[int] | None = None
    """1 where the model wrote the token, 0 for tool output / template tokens."""
    logprobs: list[float] | None = None
    """Sampling logprob per token in `token_ids` (0.0 where mask is 0)."""
    token_exact: bool = True
    """True only when the ids came from the server that sampled them and each call's prompt
    extended the previous ids exactly; False for re-tokenized ids, a broken prefix, or no ids."""
    generations: list[Generation] = Field(default_factory=list)
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    weight_version: int | None = None
    output: Any = None
    """The role's parsed result (e.g. a question, an answer, a verdict)."""
    parse_error: str | None = None
    reward: RewardRecord | None = None
    reward_failed: str | None = None
    """Set when the reward fn (or the group reward fn) raised: the exception and the frame it
    was raised in. Such a turn has no reward (`reward` is None): a failure is never a score,
    and the trainer excludes it (and its group, see `TrainConfig.reward_failed_groups`)."""
    started_at: float = Field(default_factory=time.time)
    latency_s: float = 0.0

    @model_validator(mode="after")
    def _no_ids_are_not_exact(self) -> RoleTurn:
        if self.token_ids is None:
            self.token_exact = False  # also for turns stored before this rule (text-only servers said 1)
        return self


def turn_sampling(turn: RoleTurn) -> SamplingRecord | None:
    """How a role turn's tokens were sampled: its first recorded generation's settings (a
    role samples every call of its tool loop alike); None for traces that predate the record."""
    return next((g.sampling for g in turn.generations if g.sampling is not None), None)


EpisodeStatus = Literal["ok", "invalid", "error"]


class Episode(BaseModel):
    """A finished episode: written to the store at once, never updated after."""

    episode_id: str = Field(default_factory=new_id)
    run_id: str = ""
    index: int = 0
    """Position in the run (0..N-1); resume skips indexes already stored."""
    recipe: str = ""
    seed: int | None = None
    status: EpisodeStatus = "ok"
    error: str | None = None
    error_cause: str | None = None
    """For status "error": ``<kind>:<ExceptionType>``. Kind ``infrastructure`` means the
    machinery failed (sandbox, model server, network: an `agentplay.errors.InfrastructureError`
    in the exception chain), so the episode says nothing about the policy and was retried
    first; ``recipe`` is an exception raised by the graph or its code."""
    turns: list[RoleTurn] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    """Episode-level figures (valid proposal, solve rate...) for progress and charts."""
    metadata: dict[str, Any] = Field(default_factory=dict)
    created_at: float = Field(default_factory=time.time)
    seq: int | None = None
    """Store position, strictly increasing in commit order; set by the store when read back
    (None before the episode is stored). Readers poll with `episodes(since_seq=last_seq)`."""


RunStatus = Literal["running", "finished", "failed"]


class RunInfo(BaseModel):
    """A run as the store sees it: identity, configuration and progress counts."""

    run_id: str
    recipe: str
    """Recipe name the run was created with; resume refuses a different one."""
    config: dict[str, Any] = Field(default_factory=dict)
    """The configuration the run was started with (as given to `create_run`)."""
    status: RunStatus = "running"
    created_at: float = 0.0
    updated_at: float = 0.0
    """Last write to the run (episode stored, status changed): "is it still alive?"."""
    episodes: int = 0
    """Stored episodes, whatever their status."""
    status_counts: dict[str, int] = Field(default_factory=dict)
    """Episodes per status ("ok", "invalid", "error")."""
    mean_reward: float | None = None
    """Mean reward over all rewarded role turns of the run; None when none is rewarded yet."""
    mean_reward_by_role: dict[str, float] = Field(default_factory=dict)
    """Role -> mean reward over its rewarded turns (roles' rewards are on different scales)."""
    last_seq: int | None = None
    """Highest episode `seq` of the run (poll from here for new episodes)."""


class MetricPoint(NamedTuple):
    """One logged figure: a plain tuple (iteration, name, value) so charts and SQL agree."""

    iteration: int
    name: str
    value: float
