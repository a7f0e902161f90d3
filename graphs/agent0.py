"""Agent0 (Xia et al., 2025, "Agent0: Unleashing Self-Evolving Agents from Zero Data via
Tool-Integrated Reasoning"): a curriculum agent proposes tasks, an executor agent solves them
over several turns with a sandboxed Python tool. One model plays both roles.

Each episode: the curriculum agent writes one task (the `group_k` episodes of a
`GroupBy.seed` block share one prompt, so their tasks are the curriculum's GRPO group); the
executor samples k = `n_executors` multi-turn solutions, each free to call `run_python` up to
`max_tool_turns` times, ending with ``Answer: \\boxed{...}``.

Executor (the paper's Sec. 3.3). The majority answer ỹ of the k samples is the
pseudo-label and p̂ = (1/k) Σ_i 1(o_i = ỹ) its self-consistency (Eq. 6). Reward
R_i = 1(o_i = ỹ). The executor trains only on tasks inside the band `band_low` <= p̂ <=
`band_high` (Eq. 7; the paper's δ = 0.25 retains 0.3 <= p̂ <= 0.8, our defaults). ADPO
(ambiguity-dynamic policy optimization) then treats low-consistency pseudo-labels
differently in two ways, as the authors' released code does (aiming-lab/Agent0,
executor_train/verl_tool/trainer/ppo/core_algos.py: `compute_adpo_outcome_advantage` and
`compute_policy_loss_adpo`, with train_qwen3_4b_adpo.sh's settings), with
t = clip((p̂ - band_low) / (band_high - band_low), 0, 1):
- advantage scaling Ã_i = Â_i · s(p̂), s = `min_advantage_scale` + t · (1 - it) (0.6 -> 1):
  a noisier label trains less (`ambiguity_scale`, the advantage's `scale_component`);
- ambiguity-dynamic clipping: the upper clip bound of the ratio is ε_high + (1 - t) ·
  `max_epsilon_bonus` (+0.1 at p̂ <= 0.3, +0 at p̂ >= 0.8): an uncertain task may move its
  tokens' probabilities further up (`clip_high_bonus`, the advantage's `clip_high_component`;
  the trainer clips each sample at its own bound).

Curriculum (Sec. 3.2), for task x_i:
- uncertainty  R_unc = 1 - 2|p̂ - 1/2| (Eq. 2), 1 at p̂ = 0.5;
- tool use     R_tool = γ · min(N_tool, C) (Eq. 3), N_tool = tool calls that ran, averaged
  over the executor's samples (the paper counts them in "a complete prediction");
- repetition   R_rep = λ_rep · |C_k| / B (Eq. 4): the group's B tasks are clustered by
  BLEU distance d_ij = 1 - BLEU(x_i, x_j) < τ as R-Zero does (`rewards.bleu_cluster_penalty`),
  C_k the cluster of x_i;
- composite    R_C = R_format · max(0, λ_unc R_unc + λ_tool R_tool - R_rep) (Eq. 5).

R_unc and R_tool are per-turn rewards (they need only the episode); R_rep needs the whole
group, so it is a group reward: called once the block's episodes have all finished, it adds
max(0, base - R_rep) - base to each task's reward. A task that does not parse (no
``Task:`` line) is R_format = 0: reward 0 with the parse error as reason.

What we chose where the paper is silent or too big for one CPU: each block's prompt names
a topic (drawn by its group seed) so groups differ; an executor answer without
``\\boxed{}`` or ``Answer:`` falls back to the last number it wrote (SmolLM2-135M almost
never boxes, and without the fallback every vote is empty and nothing trains); answers
are compared as numbers when they are numbers (`answer_key`).

    recipe = build(group_k=4, n_executors=4)
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Sequence
from typing import Any, TypedDict

from agentplay.sandbox import Limits, open_sandbox
from agentplay.tools import CodeTool
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, ConfigDict, Field

from agentplay import (
    Advantage,
    EpisodeContext,
    EpisodeView,
    GroupBy,
    Recipe,
    RewardGroup,
    Role,
    SampleFilter,
)
from agentplay.models import DEFAULT_MODEL_SPEC, SamplingParams
from agentplay.prompts import load_prompt, render_prompt
from agentplay.rewards import (
    bleu_cluster_penalty,
    extract_number,
    majority_vote,
    normalize_answer,
    r_zero_uncertainty,
)
from agentplay.traces import RewardRecord, RoleTurn

__all__ = [
    "CURRICULUM_SYSTEM",
    "CURRICULUM_USER",
    "EXECUTOR_DEMO",
    "EXECUTOR_SYSTEM",
    "EXECUTOR_USER",
    "TOPICS",
    "Agent0Config",
    "Agent0State",
    "ambiguity_scale",
    "answer_key",
    "build",
    "clip_high_bonus",
    "composite_reward",
    "curriculum_reward",
    "executor_reward",
    "metrics",
    "parse_answer",
    "parse_task",
    "repetition_penalties",
    "tool_reward",
]


# -- config ------------------------------------------------------------------------------------

class Agent0Config(BaseModel):
    """Options of `build()`; every one can be passed as a keyword (or `--set name=value`)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    group_k: int = Field(4, ge=1, le=64)
    """Episodes (one task each) per curriculum group: the GRPO group and the batch B of R_rep."""
    n_executors: int = Field(4, ge=1, le=64)
    """Executor samples per task (the paper's k = 10): the executor's GRPO group and p̂'s sample."""
    max_tool_turns: int = Field(3, ge=0, le=16)
    """`run_python` rounds an executor sample may take before it must answer."""
    lambda_unc: float = Field(1.0, ge=0.0)
    """λ_unc: weight of the uncertainty reward."""
    lambda_tool: float = Field(0.6, ge=0.0)
    """λ_tool: weight of the tool reward (the paper's 0.6)."""
    tool_gamma: float = Field(0.25, ge=0.0)
    """γ: reward per rewarded tool call (0.25 with C = 4 puts R_tool in [0, 1])."""
    tool_cap: int = Field(4, ge=0)
    """C: tool calls rewarded at most (the paper's 4)."""
    lambda_rep: float = Field(1.0, ge=0.0)
    """λ_rep: weight of the repetition penalty |C_k| / B."""
    repetition_threshold: float = Field(0.5, gt=0.0, le=1.0)
    """τ_BLEU: BLEU distance below which tasks merge into one cluster (R-Zero's 0.5)."""
    band_low: float = Field(0.3, ge=0.0, le=1.0)
    """Smallest self-consistency p̂ of a task the executor trains on."""
    band_high: float = Field(0.8, ge=0.0, le=1.0)
    """Largest self-consistency p̂ of a task the executor trains on."""
    min_advantage_scale: float = Field(0.6, ge=0.0, le=1.0)
    """ADPO: the executor's advantage scale at p̂ <= band_low (1 at p̂ >= band_high, linear
    between; the released training script's 0.6)."""
    max_epsilon_bonus: float = Field(0.1, ge=0.0, le=1.0)
    """ADPO: how much the upper clip bound widens at p̂ <= band_low (0 at p̂ >= band_high,
    linear between; the released script's 0.1)."""
    min_task_chars: int = Field(12, ge=1)
    """Shorter text after ``Task:`` is not a task (R_format = 0)."""
    curriculum_max_tokens: int = Field(128, ge=1)
    executor_max_tokens: int = Field(192, ge=1)
    """Tokens per executor model call (each tool round is another call)."""
    temperature: float = Field(1.0, ge=0.0, le=5.0)
    wall_time_s: float = Field(5.0, gt=0, le=120)
    """Sandbox wall-clock limit of each `run_python` call."""
    memory_mb: int = Field(256, ge=32)
    sandbox_backend: str = "auto"
    """Backend of the sandbox opened on first use when `build()` gets no `sandbox`."""

    def model_post_init(self, _: Any) -> None:
        if self.band_low > self.band_high:
            raise ValueError(f"band_low ({self.band_low}) must not exceed band_high ({self.band_high})")


# -- state -------------------------------------------------------------------------------------

class Agent0State(TypedDict, total=False):
    topic: str
    """The problem area the curriculum is asked for (shared by the k episodes of a block)."""
    task: str | None
    """The parsed task; None when the curriculum's answer had no task."""
    attempts: list[dict[str, Any]]
    """One per executor sample: turn_id, answer (None if unparsed), tool_calls (that ran)."""
    label: str | None
    """The majority answer ỹ (the pseudo-label)."""
    agreement: float
    """p̂: the share of all executor samples that agree with ỹ."""


# -- prompts -----------------------------------------------------------------------------------

CURRICULUM_SYSTEM = load_prompt(__file__, "agent0/curriculum_system.jinja")
CURRICULUM_USER = load_prompt(__file__, "agent0/curriculum_user.jinja")
"""Variables: `topic`."""
EXECUTOR_SYSTEM = load_prompt(__file__, "agent0/executor_system.jinja")
EXECUTOR_USER = load_prompt(__file__, "agent0/executor_user.jinja")
"""Variables: `task`."""

TOPICS = ("arithmetic", "number theory", "counting", "probability", "sequences", "algebra", "calendar and time")
"""Problem areas; a block draws one with its group seed so its k prompts are identical."""

_DEMO_CODE = "total = sum(n for n in range(1, 100) if n % 3 == 0 or n % 5 == 0)\nprint(total)"
# One worked example: small models copy a demonstrated tool call far more reliably than a
# described one (SmolLM2-135M ignores the instruction alone).
EXECUTOR_DEMO: list[dict[str, Any]] = [
    {"role": "user", "content": render_prompt(EXECUTOR_USER,
                                              task="What is the sum of the numbers below 100 divisible by 3 or 5?")},
    {"role": "assistant", "content": "<tool_call>\n" + json.dumps(
        {"name": "run_python", "arguments": {"code": _DEMO_CODE}}) + "\n</tool_call>"},
    {"role": "tool", "tool_call_id": "demo", "name": "run_python",
     "content": "status: ok (finished, exit code 0, 0.02 s)\n--- stdout ---\n2318"},
    {"role": "assistant", "content": "Answer: \\boxed{2318}"},
]
CURRICULUM_DEMO: list[dict[str, Any]] = [
    {"role": "user", "content": render_prompt(CURRICULUM_USER, topic="counting")},
    {"role": "assistant", "content": "Task: How many integers from 1 to 1000 have digits that add up to 10?"},
]

_TASK = re.compile(r"task\s*:\s*(.+)", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_ANSWER = re.compile(r"answer\s*:\s*(.+)", re.IGNORECASE)


def parse_task(text: str, min_chars: int = 12) -> str:
    """The text of the last ``Task:`` line; ValueError (R_format = 0) when there is none."""
    found = [t.strip() for t in _TASK.findall(text) if t.strip()]
    if not found:
        raise ValueError("format: no 'Task: ...' line")
    if len(found[-1]) < min_chars:
        raise ValueError(f"format: task shorter than {min_chars} characters")
    return found[-1]


def parse_answer(text: str) -> str:
    """The last \\boxed{} content, else the text after the last ``Answer:``, else the last
    number written (a small model rarely boxes; see the module docstring); ValueError if none."""
    boxed = [b.strip() for b in _BOXED.findall(text) if b.strip()]
    if boxed:
        return boxed[-1]
    found = [a.strip().rstrip(".").strip() for a in _ANSWER.findall(text)]
    if found and found[-1]:
        return found[-1]
    number = extract_number(text)
    if number is not None and math.isfinite(number):
        return str(int(number)) if number.is_integer() else repr(number)
    raise ValueError("no final answer (expected 'Answer: \\boxed{...}') and no number")


def answer_key(answer: str) -> str:
    """What two answers are compared by in the vote: the number they state if any ("4" and
    "4.0" agree), else their normalised text."""
    number = extract_number(answer)
    if number is not None and math.isfinite(number):
        return repr(float(number))
    return normalize_answer(answer)


# -- reward formulas (pure, the paper's equations) ---------------------------------------------

def tool_reward(tool_calls: Sequence[int], gamma: float, cap: int) -> float:
    """R_tool = γ · min(N_tool, C) (Eq. 3), averaged over the executor's samples."""
    if not tool_calls:
        return 0.0
    return gamma * sum(min(n, cap) for n in tool_calls) / len(tool_calls)


def composite_reward(r_unc: float, r_tool: float, r_rep: float, *, lambda_unc: float, lambda_tool: float,
                     formatted: bool = True) -> float:
    """R_C = R_format · max(0, λ_unc R_unc + λ_tool R_tool - R_rep) (Eq. 5)."""
    return float(formatted) * max(0.0, lambda_unc * r_unc + lambda_tool * r_tool - r_rep)


def _trust(agreement: float, low: float, high: float) -> float:
    """t = clip((p̂ - low) / (high - low), 0, 1): where p̂ sits in the band (a step when low == high)."""
    if not 0.0 <= agreement <= 1.0:
        raise ValueError(f"agreement must be in [0, 1], got {agreement}")
    if high <= low:
        return 1.0 if agreement >= high else 0.0
    return min(1.0, max(0.0, (agreement - low) / (high - low)))


def ambiguity_scale(agreement: float, *, low: float = 0.3, high: float = 0.8, min_scale: float = 0.6) -> float:
    """ADPO's advantage scale s(p̂) = min_scale + t · (1 - min_scale), increasing in self-consistency."""
    return min_scale + _trust(agreement, low, high) * (1.0 - min_scale)


def clip_high_bonus(agreement: float, *, low: float = 0.3, high: float = 0.8, max_bonus: float = 0.1) -> float:
    """ADPO's widening of the upper clip bound, (1 - t) · max_bonus: largest for the least consistent tasks."""
    return (1.0 - _trust(agreement, low, high)) * max_bonus


def repetition_penalties(texts: Sequence[str | None], *, threshold: float, lambda_rep: float) -> list[float]:
    """R_rep(x_i) = λ_rep · |C_k| / B (Eq. 4) for a batch of B tasks, clustered as R-Zero does
    (`bleu_cluster_penalty`: d_ij = 1 - BLEU, average linkage cut at `threshold`). A missing
    task (None: it did not parse) counts in B but is in no cluster and gets 0."""
    present = [i for i, t in enumerate(texts) if t is not None]
    shares = bleu_cluster_penalty([texts[i] for i in present], threshold)  # type: ignore[misc]
    penalty = {i: lambda_rep * share * len(present) / len(texts) for i, share in zip(present, shares, strict=True)}
    return [penalty.get(i, 0.0) for i in range(len(texts))]


# -- rewards (what the recipe registers) -------------------------------------------------------

def executor_reward(turn: RoleTurn, state: Agent0State, episode: EpisodeView, *,
                    cfg: Agent0Config | None = None) -> RewardRecord:
    """R_i = 1(o_i = ỹ) (an answer that did not parse disagrees), with p̂ (`agreement`, the
    filter's band), ADPO's advantage scale (`ambiguity_scale`) and clip widening
    (`clip_high_bonus`) stored as components for the trainer."""
    cfg = cfg or Agent0Config()
    attempt = next(a for a in state["attempts"] if a["turn_id"] == turn.turn_id)
    label, p = state.get("label"), state.get("agreement", 0.0)
    agrees = label is not None and attempt["answer"] is not None and answer_key(attempt["answer"]) == answer_key(label)
    band = {"low": cfg.band_low, "high": cfg.band_high}
    return RewardRecord(value=float(agrees), reason=f"{'agrees' if agrees else 'disagrees'} with the majority answer "
                        f"{str(label)[:40]!r} (p̂ = {p:.2f})",
                        components={"agreement": p,
                                    "ambiguity_scale": ambiguity_scale(p, **band, min_scale=cfg.min_advantage_scale),
                                    "clip_high_bonus": clip_high_bonus(p, **band, max_bonus=cfg.max_epsilon_bonus)})


def curriculum_reward(turn: RoleTurn, state: Agent0State, episode: EpisodeView, *, cfg: Agent0Config) -> RewardRecord:
    """λ_unc R_unc + λ_tool R_tool, before the group's repetition penalty; 0 (R_format = 0)
    for an answer with no task."""
    if turn.parse_error is not None:
        return RewardRecord(value=0.0, reason=f"no task: {turn.parse_error}", components={"format": 0.0})
    p = state.get("agreement", 0.0)
    r_unc = r_zero_uncertainty(p)
    calls = [a["tool_calls"] for a in state.get("attempts", [])]
    r_tool = tool_reward(calls, cfg.tool_gamma, cfg.tool_cap)
    value = composite_reward(r_unc, r_tool, 0.0, lambda_unc=cfg.lambda_unc, lambda_tool=cfg.lambda_tool)
    return RewardRecord(value=value, reason=f"R_unc {r_unc:.2f} (p̂ = {p:.2f}), R_tool {r_tool:.2f} "
                        f"({sum(calls)} tool calls over {len(calls)} samples)",
                        components={"format": 1.0, "uncertainty": r_unc, "tool": r_tool, "agreement": p})


def curriculum_repetition(group: RewardGroup, *, cfg: Agent0Config) -> list[RewardRecord]:
    """The group's R_rep, applied through Eq. 5's max(0, ·): each task's delta is
    max(0, base - R_rep) - base. Unparsed tasks (reward 0, R_format = 0) get 0."""
    tasks = [t.output if t.parse_error is None else None for t in group.turns]
    penalties = repetition_penalties(tasks, threshold=cfg.repetition_threshold, lambda_rep=cfg.lambda_rep)
    out = []
    for turn, task, r_rep in zip(group.turns, tasks, penalties, strict=True):
        base = turn.reward.value if turn.reward is not None else 0.0
        final = max(0.0, base - r_rep) if task is not None else base
        out.append(RewardRecord(value=final - base, reason=f"R_rep {r_rep:.2f} over a batch of {len(tasks)}",
                                components={"repetition": r_rep}))
    return out


def metrics(state: Agent0State, turns: list[RoleTurn]) -> dict[str, float]:
    """Whether the task parsed; when it was solved: p̂, whether it is in the training band
    (the executor's filter), tool calls per sample, and the share of samples that answered."""
    attempts = state.get("attempts", [])
    out = {"valid_proposal": float(state.get("task") is not None)}
    if attempts:
        out["agreement"] = state.get("agreement", 0.0)
        out["tool_calls"] = sum(a["tool_calls"] for a in attempts) / len(attempts)
        out["answered"] = sum(a["answer"] is not None for a in attempts) / len(attempts)
    return out


# -- build: roles, nodes, graph ----------------------------------------------------------------

def build(model: str = DEFAULT_MODEL_SPEC, *, sandbox: Any = None, **options: Any) -> Recipe:
    """The Agent0 recipe. `sandbox`: an open `agentplay.sandbox.Sandbox` (its lifetime is
    yours); without one, a sandbox of `sandbox_backend` opens on the first tool call."""
    cfg = Agent0Config(**options)
    code_tool = CodeTool(sandbox, limits=Limits(wall_time_s=cfg.wall_time_s, memory_mb=cfg.memory_mb))

    curriculum = Role(name="curriculum", model=model, system_prompt=CURRICULUM_SYSTEM, examples=CURRICULUM_DEMO,
                      sampling=SamplingParams(max_tokens=cfg.curriculum_max_tokens, temperature=cfg.temperature),
                      output_parser=functools.partial(parse_task, min_chars=cfg.min_task_chars))
    executor = Role(name="executor", model=model, system_prompt=EXECUTOR_SYSTEM, examples=EXECUTOR_DEMO,
                    user_template=EXECUTOR_USER, tools=[code_tool], max_tool_turns=cfg.max_tool_turns,
                    sampling=SamplingParams(max_tokens=cfg.executor_max_tokens, temperature=cfg.temperature),
                    output_parser=parse_answer)

    def initial_state(ctx: EpisodeContext) -> Agent0State:
        return {"topic": ctx.group_rng.choice(TOPICS), "task": None, "attempts": []}

    async def propose(state: Agent0State) -> dict[str, Any]:
        turn = await curriculum.run(render_prompt(CURRICULUM_USER, topic=state["topic"]))
        return {"task": turn.output if turn.parse_error is None else None}

    async def execute(state: Agent0State) -> dict[str, Any]:
        if code_tool.sandbox is None:
            code_tool.sandbox = open_sandbox(cfg.sandbox_backend)
        turns = await executor.run_n(n=cfg.n_executors, variables={"task": state["task"]})
        attempts: list[dict[str, Any]] = [{"turn_id": t.turn_id, "answer": t.output if t.parse_error is None else None,
                     "tool_calls": sum(c.name == code_tool.name and c.error is None for c in t.tool_calls)}
                    for t in turns]
        label, p = majority_vote([a["answer"] for a in attempts], key=answer_key)
        return {"attempts": attempts, "label": label, "agreement": p}

    graph = StateGraph(Agent0State)
    graph.add_node("propose", propose)
    graph.add_node("execute", execute)
    graph.add_edge(START, "propose")
    graph.add_conditional_edges("propose", lambda s: "execute" if s.get("task") else END, ["execute", END])
    graph.add_edge("execute", END)

    return Recipe(
        name="agent0",
        graph=graph,
        roles={"propose": curriculum, "execute": executor},
        rewards={"curriculum": functools.partial(curriculum_reward, cfg=cfg),
                 "executor": functools.partial(executor_reward, cfg=cfg)},
        groups={"curriculum": GroupBy.seed(cfg.group_k), "executor": GroupBy.episode()},
        whole_group_rewards={"curriculum": functools.partial(curriculum_repetition, cfg=cfg)},
        advantages={"curriculum": Advantage.grpo(),
                    "executor": Advantage.grpo(scale_component="ambiguity_scale", clip_high_component="clip_high_bonus")},
        filters={"executor": SampleFilter.band("agreement", cfg.band_low, cfg.band_high)},
        initial_state=initial_state,
        metrics=metrics,
        headline_metrics=["valid_proposal", "agreement"],
        zero_on_parse_error=False,  # an unparsed answer still counts against p̂ and in its group
        options={"model": model, **cfg.model_dump()},
    )
