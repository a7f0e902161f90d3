"""R-Zero: a challenger writes questions, a solver answers them, and the solver's own vote is the label.

Paper: Huang et al., "R-Zero: Self-Evolving Reasoning LLM from Zero Data" (2025). One
model plays both roles. Each episode the challenger writes one question inside
<question></question>; the solver answers it `n_solvers` times; the majority answer ŷ is
the pseudo-label. With p the share of the m answers equal to ŷ (`majority_vote`):

    solver        r_j = 1[y_j = ŷ]                                  (`solver_reward`)
    challenger    r_unc(x) = 1 - 2|p(x) - 1/2|                      (`r_zero_uncertainty`)
                  r_rep(x_i) = |C(x_i)| / B                         (`bleu_cluster_penalty`)
                  r_i = 0 if x_i fails the format check,
                        else max(0, r_unc(x_i) - λ r_rep(x_i))      (`challenger_group_reward`)

r_rep clusters the challenger's batch of B questions by d_ij = 1 - BLEU(x_i, x_j)
(average linkage, cut at `repetition_threshold`). Here the batch is the challenger's
GRPO group: the `group_size` episodes of one `GroupBy.seed` block, so the penalty is a
`whole_group_rewards` fn called once the block's episodes have all finished. The solver
trains only on questions whose agreement p lies within [1/2 - δ, 1/2 + δ] (R-Zero's
filter, `SampleFilter.band("agreement", ...)`, counted as ``filtered/solver``).

What we chose beyond the paper: a question without tags is still posed to the solver
(so the solver always has work) but earns the challenger 0; the solver's answer is the
last \\boxed{} (else its whole text) compared after `normalize_answer`.

    agentplay train r-zero --set group_size=8 --set n_solvers=10
"""

from __future__ import annotations

import re
from functools import partial
from typing import Any, TypedDict

from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, ConfigDict, Field

from agentplay import EpisodeContext, EpisodeView, GroupBy, Recipe, RewardGroup, Role, SampleFilter
from agentplay.models import DEFAULT_MODEL_SPEC, SamplingParams
from agentplay.prompts import load_prompt
from agentplay.rewards import bleu_cluster_penalty, exact_match, majority_vote, r_zero_uncertainty
from agentplay.traces import RewardRecord, RoleTurn

__all__ = ["RZeroConfig", "RZeroState", "build", "challenger_group_reward", "challenger_reward", "metrics",
           "parse_boxed", "parse_question", "solver_reward"]


# -- config ------------------------------------------------------------------------------------

class RZeroConfig(BaseModel):
    """Options of `build()`; each can be passed as a keyword or ``--set name=value``."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    group_size: int = Field(8, ge=1, le=256)
    """Questions in the challenger's GRPO group (episodes per `GroupBy.seed` block): the batch B
    of the repetition penalty, which is never below 1/B, so keep B well above 1."""
    n_solvers: int = Field(10, ge=1, le=64)
    """Solver answers per question (m): the pseudo-label vote and the solver's GRPO group."""
    band_delta: float = Field(0.25, ge=0.0, le=0.5)
    """δ: the solver trains on questions with agreement p in [1/2 - δ, 1/2 + δ]."""
    repetition_weight: float = Field(1.0, ge=0.0)
    """λ, the weight of r_rep."""
    repetition_threshold: float = Field(0.5, gt=0.0, le=1.0)
    """BLEU distance below which questions merge into one cluster (R-Zero: 0.5)."""
    min_question_chars: int = Field(10, ge=1)
    """Shorter text is no question (a parse error: reward 0, nothing posed)."""
    challenger_max_tokens: int = Field(128, ge=1)
    solver_max_tokens: int = Field(256, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=5.0)


# -- state -------------------------------------------------------------------------------------

class RZeroState(TypedDict, total=False):
    question: str | None
    """The challenger's question (None when it wrote none)."""
    formatted: bool
    """Whether the question came inside <question></question> tags (the format check)."""
    answers: dict[str, str | None]
    """Solver turn id -> its parsed answer (None when it gave none)."""
    label: str | None
    """The majority answer ŷ (pseudo-label)."""
    agreement: float
    """p: the share of the m answers equal to ŷ."""
    episode_metadata: dict[str, Any]


# -- prompts and parsers -----------------------------------------------------------------------

CHALLENGER_SYSTEM = load_prompt(__file__, "r_zero/challenger_system.jinja")
CHALLENGER_USER = load_prompt(__file__, "r_zero/challenger_user.jinja")
CHALLENGER_EXAMPLE = load_prompt(__file__, "r_zero/challenger_example_answer.jinja")
"""One worked answer: a 135M model copies a layout it has seen far better than a described one."""
SOLVER_SYSTEM = load_prompt(__file__, "r_zero/solver_system.jinja")
SOLVER_USER = load_prompt(__file__, "r_zero/solver_user.jinja")
"""Variables: `question`."""

_QUESTION = re.compile(r"<question>(.*?)</question>", re.DOTALL)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def parse_question(text: str, *, min_chars: int = 10) -> dict[str, Any]:
    """{"question", "format"}: the first <question> (format 1), else the whole text (format 0)."""
    found = _QUESTION.findall(text)
    question = (found[0] if found else text).strip()
    if len(question) < min_chars:
        raise ValueError(f"no question (need at least {min_chars} characters)")
    return {"question": question, "format": 1.0 if found else 0.0}


def parse_boxed(text: str) -> str:
    """The last \\boxed{} answer, else the whole text; ValueError when empty."""
    found = _BOXED.findall(text)
    answer = (found[-1] if found else text).strip()
    if not answer:
        raise ValueError("empty answer")
    return answer


# -- rewards -----------------------------------------------------------------------------------

def solver_reward(turn: RoleTurn, state: dict[str, Any], episode: EpisodeView | None) -> RewardRecord:
    """1 when the answer equals the majority answer ŷ; the agreement p is kept for the band filter."""
    label, p = state["label"], state["agreement"]
    answer = state["answers"].get(turn.turn_id)
    value = exact_match(answer, label) if label is not None else 0.0
    return RewardRecord(value=value, reason=f"answer {str(answer)[:40]!r} vs majority {str(label)[:40]!r} (p={p:.2f})",
                        components={"agreement": p})


def challenger_reward(turn: RoleTurn, state: dict[str, Any], episode: EpisodeView | None) -> RewardRecord:
    """The per-turn part: r_unc = 1 - 2|p - 1/2| if the format check passed, else 0.

    The repetition penalty and the max(0, .) come later, over the group (`challenger_group_reward`).
    """
    p, fmt = state["agreement"], float(state["formatted"])
    unc = r_zero_uncertainty(p)
    why = f"agreement p={p:.2f}, uncertainty {unc:.2f}" + ("" if fmt else "; format check failed (no <question> tags)")
    return RewardRecord(value=unc * fmt, reason=why, components={"uncertainty": unc, "agreement": p, "format": fmt})


def challenger_group_reward(group: RewardGroup, *, cfg: RZeroConfig) -> list[RewardRecord]:
    """Turn each challenger reward into r_i = max(0, r_unc - λ r_rep) (0 on a failed format check).

    B is every challenger turn of the group; only questions that parsed enter the clustering
    (a turn without one keeps its 0 and its parse-error reason).
    """
    parsed = [t for t in group.turns if t.parse_error is None]
    penalty = dict(zip((t.turn_id for t in parsed), bleu_cluster_penalty(
        [t.output["question"] for t in parsed], cfg.repetition_threshold), strict=True))
    b = len(group.turns)
    deltas = []
    for t in group.turns:
        assert t.reward is not None
        if t.turn_id not in penalty:
            deltas.append(RewardRecord(value=0.0))
            continue
        # bleu_cluster_penalty divides by the parsed count; r_rep divides by the whole batch B
        rep = penalty[t.turn_id] * len(parsed) / b
        unc, fmt = t.reward.components["uncertainty"], t.reward.components["format"]
        final = max(0.0, unc - cfg.repetition_weight * rep) if fmt else 0.0
        deltas.append(RewardRecord(value=final - t.reward.value, components={"repetition": rep},
                                   reason=f"repetition {rep * b:.0f}/{b} of the batch alike"))
    return deltas


def metrics(state: dict[str, Any], turns: list[RoleTurn]) -> dict[str, float]:
    """Agreement p, whether a question was posed and formatted, and how many answers parsed."""
    answers = state.get("answers", {})
    return {
        "valid_proposal": float(state.get("question") is not None),
        "formatted": float(bool(state.get("formatted"))),
        "agreement": float(state.get("agreement", 0.0)),
        "answered": sum(a is not None for a in answers.values()) / len(answers) if answers else 0.0,
    }


# -- build: roles, nodes, graph ----------------------------------------------------------------

def build(model: str = DEFAULT_MODEL_SPEC, **options: Any) -> Recipe:
    """The R-Zero recipe (options: `RZeroConfig`)."""
    cfg = RZeroConfig(**options)
    challenger = Role(name="challenger", model=model, system_prompt=CHALLENGER_SYSTEM, user_template=CHALLENGER_USER,
                      examples=[{"role": "user", "content": CHALLENGER_USER},
                                {"role": "assistant", "content": CHALLENGER_EXAMPLE}],
                      sampling=SamplingParams(max_tokens=cfg.challenger_max_tokens, temperature=cfg.temperature),
                      output_parser=partial(parse_question, min_chars=cfg.min_question_chars))
    solver = Role(name="solver", model=model, system_prompt=SOLVER_SYSTEM, user_template=SOLVER_USER,
                  sampling=SamplingParams(max_tokens=cfg.solver_max_tokens, temperature=cfg.temperature),
                  output_parser=parse_boxed)

    def initial_state(ctx: EpisodeContext) -> RZeroState:
        return {"question": None, "formatted": False, "answers": {}, "label": None, "agreement": 0.0}

    async def challenge(state: RZeroState) -> dict[str, Any]:
        turn = await challenger.run()
        if turn.parse_error is not None:
            return {"question": None}
        return {"question": turn.output["question"], "formatted": bool(turn.output["format"])}

    async def solve(state: RZeroState) -> dict[str, Any]:
        turns = await solver.run_n(n=cfg.n_solvers, variables={"question": state["question"]})
        answers = {t.turn_id: (t.output if t.parse_error is None else None) for t in turns}
        label, p = majority_vote(list(answers.values()))
        return {"answers": answers, "label": label, "agreement": p,
                "episode_metadata": {"question": state["question"], "label": label, "agreement": p}}

    graph = StateGraph(RZeroState)
    graph.add_node("challenge", challenge)
    graph.add_node("solve", solve)
    graph.add_edge(START, "challenge")
    graph.add_conditional_edges("challenge", lambda s: "solve" if s["question"] else END, ["solve", END])
    graph.add_edge("solve", END)

    return Recipe(
        name="r-zero",
        graph=graph,
        roles={"challenge": challenger, "solve": solver},
        rewards={"challenger": challenger_reward, "solver": solver_reward},
        groups={"challenger": GroupBy.seed(cfg.group_size), "solver": GroupBy.episode()},
        whole_group_rewards={"challenger": partial(challenger_group_reward, cfg=cfg)},
        filters={"solver": SampleFilter.band("agreement", 0.5 - cfg.band_delta, 0.5 + cfg.band_delta)},
        initial_state=initial_state,
        metrics=metrics,
        headline_metrics=["valid_proposal", "agreement"],
        options={"model": model, **cfg.model_dump()},
    )
