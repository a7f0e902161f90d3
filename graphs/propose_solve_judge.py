"""Propose-solve-judge self-play (Multi-Agent Evolve style): one model in three roles.

Per episode the proposer samples `n_questions` questions (any domain; arithmetic word
problems are the easiest to judge); with probability `pool_reuse_prob` a question from
the `QuestionPool` of earlier good questions is added. Every question gets `n_solvers`
answers. The judge scores each new question's quality (0-10) and each answer (0-10);
new questions scoring at least `quality_bar` enter the pool.

Rewards (what we chose, following MAE):
- proposer: w_quality * quality/10 + w_difficulty * (1 - mean solver score) + w_format *
  format (the question inside <question> tags), minus `repetition_weight` x the
  repetition penalty among the episode's questions; no question at all is 0 with the reason;
- solver: the judge's score/10 of its answer (`solver_reward="judge"`), or 1/0 for
  agreeing with the majority answer (`solver_reward="majority"`, R-Zero's pseudo-label);
- judge: format validity, 1 when its verdict parses as a score in 0..10 (MAE trains the
  judge too; an unparsable verdict is recorded as a parse error with reward 0).

    recipe = build(n_questions=2, n_solvers=4, pool=shared_pool)
"""

from __future__ import annotations

import asyncio
import random
import re
from collections import deque
from functools import partial
from typing import Any, Literal, TypedDict

from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, ConfigDict, Field

from agentplay import EpisodeContext, EpisodeView, GroupBy, Recipe, Role
from agentplay.models import DEFAULT_MODEL_SPEC, SamplingParams
from agentplay.prompts import load_prompt
from agentplay.rewards import exact_match, majority_vote, parse_score, repetition_penalty
from agentplay.traces import RewardRecord, RoleTurn

__all__ = [
    "ANSWER_USER",
    "JUDGE_SYSTEM",
    "PROPOSER_SYSTEM",
    "PROPOSER_USER",
    "QUALITY_USER",
    "SOLVER_SYSTEM",
    "SOLVER_USER",
    "PSJState",
    "ProposeSolveJudgeConfig",
    "QuestionPool",
    "build",
    "judge_group",
    "judge_reward",
    "judge_verdict",
    "majority_of",
    "metrics",
    "parse_answer",
    "parse_question",
    "parse_score_strict",
    "proposer_repetition",
    "proposer_reward",
    "solver_group",
    "solver_reward",
    "solver_score",
]


# -- config ------------------------------------------------------------------------------------

class ProposeSolveJudgeConfig(BaseModel):
    """Options of `build()`; every one can be passed as a keyword."""

    model_config = ConfigDict(extra="forbid")

    n_questions: int = Field(2, ge=1, le=64)
    """Questions the proposer samples per episode: its GRPO group and repetition-penalty batch."""
    n_solvers: int = Field(4, ge=1, le=64)
    """Answers per question: the solver's GRPO group and the difficulty estimate."""
    quality_bar: float = Field(7.0, ge=0.0, le=10.0)
    """Judge quality score (0-10) a new question needs to enter the pool."""
    pool_reuse_prob: float = Field(0.25, ge=0.0, le=1.0)
    """Chance an episode also poses one pooled question (when the pool is not empty)."""
    w_quality: float = Field(0.5, ge=0.0)
    w_difficulty: float = Field(0.4, ge=0.0)
    w_format: float = Field(0.1, ge=0.0)
    repetition_weight: float = Field(0.5, ge=0.0)
    repetition_threshold: float = Field(0.6, gt=0.0, le=1.0)
    """n-gram Jaccard similarity at which two questions count as near-duplicates."""
    solver_reward: Literal["judge", "majority"] = "judge"
    """`judge`: judge score / 10; `majority`: 1 when the answer agrees with the majority answer."""
    judge_model: str | None = None
    """Spec of the judge's model; None means the policy model (MAE: one model, three roles)."""
    judge_trainable: bool = True
    """Train the judge on format validity; set False for a judge served by another model."""
    min_question_chars: int = Field(10, ge=1)
    """Shorter text is not a question (reward 0, 'no question')."""
    proposer_max_tokens: int = Field(128, ge=1)
    solver_max_tokens: int = Field(128, ge=1)
    judge_max_tokens: int = Field(32, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=5.0)
    judge_temperature: float = Field(0.7, ge=0.0, le=5.0)


# -- state -------------------------------------------------------------------------------------

class PSJState(TypedDict, total=False):
    seed: int
    """The episode seed."""
    pooled: list[dict[str, Any]]
    """Pool questions drawn for this episode."""
    questions: list[dict[str, Any]]
    """Each: text, source ("proposal"/"pool"), turn_id (proposer turn or None), format."""
    solver_question: dict[str, int]
    """Solver turn id -> index in `questions`."""
    answers: dict[str, str | None]
    """Solver turn id -> parsed answer."""
    quality: dict[int, dict[str, Any]]
    """Question index -> {"score": 0..10 or None, "reason"} from the judge."""
    answer_scores: dict[str, dict[str, Any]]
    """Solver turn id -> {"score": 0..10 or None, "reason"} from the judge."""
    judge_kind: dict[str, str]
    """Judge turn id -> "quality" or "answer"."""
    admitted: list[int]
    """Indexes of new questions that entered the pool."""
    episode_metadata: dict[str, Any]
    """Copied into Episode.metadata by the runner: pool size, admitted and pooled questions."""


# -- the question pool -------------------------------------------------------------------------

class QuestionPool:
    """Questions the judge rated at or above the bar, shared by every episode of the process.

    Inject one into `build(pool=...)` to keep it across runs; Ray workers each keep their own.
    """

    def __init__(self, max_size: int = 1000):
        self._items: deque[dict[str, Any]] = deque(maxlen=max_size)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, question: str, quality: float, **meta: Any) -> None:
        if all(item["question"] != question for item in self._items):
            self._items.append({"question": question, "quality": quality, **meta})

    def sample(self, rng: random.Random) -> dict[str, Any] | None:
        return rng.choice(list(self._items)) if self._items else None

    def items(self) -> list[dict[str, Any]]:
        return list(self._items)


# -- role prompts and parsers ------------------------------------------------------------------

PROPOSER_SYSTEM = load_prompt(__file__, "propose_solve_judge/proposer_system.jinja")
PROPOSER_USER = load_prompt(__file__, "propose_solve_judge/proposer_user.jinja")
SOLVER_SYSTEM = load_prompt(__file__, "propose_solve_judge/solver_system.jinja")
SOLVER_USER = load_prompt(__file__, "propose_solve_judge/solver_user.jinja")
"""Variables: `question`."""
JUDGE_SYSTEM = load_prompt(__file__, "propose_solve_judge/judge_system.jinja")
QUALITY_USER = load_prompt(__file__, "propose_solve_judge/judge_quality.jinja")
"""Variables: `question`."""
ANSWER_USER = load_prompt(__file__, "propose_solve_judge/judge_answer.jinja")
"""Variables: `question`, `answer`."""

_QUESTION = re.compile(r"<question>(.*?)</question>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def parse_question(text: str, *, min_chars: int = 10) -> dict[str, Any]:
    """{"question", "format"}: the first <question> (format 1), else the whole text (format 0).
    ValueError when it is shorter than `min_chars` (`min_question_chars`)."""
    found = _QUESTION.findall(text)
    question = (found[0] if found else text).strip()
    if len(question) < min_chars:
        raise ValueError(f"no question (need a <question> of at least {min_chars} chars)")
    return {"question": question, "format": 1.0 if found else 0.0}


def parse_answer(text: str) -> str:
    """The last <answer>, else the whole text; ValueError when empty."""
    found = _ANSWER.findall(text)
    answer = (found[-1] if found else text).strip()
    if not answer:
        raise ValueError("empty answer")
    return answer



def parse_score_strict(text: str) -> float:
    """The judge's score in 0..10; ValueError when there is none."""
    score = parse_score(text, 10)
    if score is None:
        raise ValueError(f"no score in 0..10 in {text.strip()[:60]!r}")
    return score


def judge_verdict(turn: RoleTurn) -> dict[str, Any]:
    """A judge turn as stored in the state: {"score": 0..10 or None, "reason"}."""
    if turn.parse_error:
        return {"score": None, "reason": f"judge gave no score: {turn.parse_error}"}
    return {"score": float(turn.output), "reason": f"judge score {turn.output:g}/10"}


# -- rewards -----------------------------------------------------------------------------------

def majority_of(state: dict[str, Any], qi: int) -> tuple[str | None, float]:
    """The majority answer to question `qi` and the share that agrees with it."""
    return majority_vote([state["answers"].get(tid) for tid, i in state["solver_question"].items() if i == qi])


def solver_score(state: dict[str, Any], tid: str, cfg: ProposeSolveJudgeConfig) -> float | None:
    """The solver's score in [0, 1], or None when it could not be scored."""
    answer = state["answers"].get(tid)
    if answer is None:
        return None
    if cfg.solver_reward == "majority":
        label, _ = majority_of(state, state["solver_question"][tid])
        return exact_match(answer, label) if label is not None else 0.0
    score = state["answer_scores"].get(tid, {}).get("score")
    return None if score is None else score / 10.0


def solver_reward(turn: RoleTurn, state: dict[str, Any], episode: EpisodeView | None, *,
                  cfg: ProposeSolveJudgeConfig) -> RewardRecord:
    """The judge's score / 10 of the answer, or agreement with the majority answer."""
    score = solver_score(state, turn.turn_id, cfg)
    if cfg.solver_reward == "majority":
        label, p = majority_of(state, state["solver_question"][turn.turn_id])
        return RewardRecord(value=score or 0.0, reason=f"majority answer {str(label)[:40]!r} (agreement {p:.2f})",
                            components={"agreement": p})
    verdict = state["answer_scores"].get(turn.turn_id, {"reason": "answer was not judged"})
    return RewardRecord(value=score or 0.0, reason=verdict["reason"])


def proposer_reward(turn: RoleTurn, state: dict[str, Any], episode: EpisodeView | None, *,
                    cfg: ProposeSolveJudgeConfig) -> RewardRecord:
    """MAE's mix: w_quality x judged quality + w_difficulty x (1 - mean solver score) + w_format x format."""
    qi = next(i for i, q in enumerate(state["questions"]) if q["turn_id"] == turn.turn_id)
    q = state["questions"][qi]
    verdict = state["quality"].get(qi, {"score": None, "reason": "not judged"})
    quality = (verdict["score"] or 0.0) / 10.0
    scores = [s for tid, i in state["solver_question"].items()
              if i == qi and (s := solver_score(state, tid, cfg)) is not None]
    difficulty = 1.0 - sum(scores) / len(scores) if scores else 0.0
    value = cfg.w_quality * quality + cfg.w_difficulty * difficulty + cfg.w_format * q["format"]
    why = (f"quality {quality:.2f} ({verdict['reason']}), difficulty {difficulty:.2f} over "
           f"{len(scores)} scored answers, format {q['format']:.0f}")
    return RewardRecord(value=value, reason=why, components={
        "quality": quality, "difficulty": difficulty, "format": q["format"],
        "admitted": float(qi in state["admitted"])})


def judge_reward(turn: RoleTurn, state: dict[str, Any], episode: EpisodeView | None) -> RewardRecord:
    """1 for a verdict that parsed (unparsable ones are zeroed as parse errors before this runs)."""
    return RewardRecord(value=1.0, reason=f"{state['judge_kind'].get(turn.turn_id, '?')} score parsed")


def proposer_repetition(turns: list[RoleTurn], *, cfg: ProposeSolveJudgeConfig) -> list[float]:
    """Near-duplicate questions in one episode share a penalty; unparsed ones keep their 0."""
    ok = [t for t in turns if t.parse_error is None]
    pen = dict(zip((t.turn_id for t in ok),
                   repetition_penalty([t.output["question"] for t in ok], cfg.repetition_threshold)))
    return [-cfg.repetition_weight * pen.get(t.turn_id, 0.0) for t in turns]


def solver_group(turn: RoleTurn, state: dict[str, Any], ctx: EpisodeContext) -> str:
    """The answers to one question in one episode form a GRPO group."""
    return f"ep{ctx.index}/q{state['solver_question'].get(turn.turn_id, -1)}"


def judge_group(turn: RoleTurn, state: dict[str, Any], ctx: EpisodeContext) -> str:
    """Quality verdicts and answer verdicts of one episode form two groups."""
    return f"ep{ctx.index}/{state['judge_kind'].get(turn.turn_id, 'unknown')}"


def metrics(state: dict[str, Any], turns: list[RoleTurn], *, cfg: ProposeSolveJudgeConfig,
            pool: QuestionPool) -> dict[str, float]:
    """Valid-proposal and solve rates, judged quality, pool admissions and the pool's size."""
    scored = [v["score"] for v in state.get("quality", {}).values() if v["score"] is not None]
    solver_scores = [s for tid in state.get("solver_question", {})
                     if (s := solver_score(state, tid, cfg)) is not None]
    new = sum(q["source"] == "proposal" for q in state.get("questions", []))
    return {
        "valid_proposal": new / cfg.n_questions,
        "mean_quality": sum(scored) / len(scored) if scored else 0.0,
        "solve_rate": sum(solver_scores) / len(solver_scores) if solver_scores else 0.0,
        "admitted": float(len(state.get("admitted", []))),
        "pool_size": float(len(pool)),
        "pooled": float(len(state.get("pooled", []))),
    }


# -- build: roles, nodes, graph ----------------------------------------------------------------

def build(model: str = DEFAULT_MODEL_SPEC, *, pool: QuestionPool | None = None, **options: Any) -> Recipe:
    """The propose-solve-judge recipe. `pool`: a shared QuestionPool (default: a fresh one)."""
    cfg = ProposeSolveJudgeConfig(**options)
    pool = pool if pool is not None else QuestionPool()

    def sampling(max_tokens: int, temperature: float) -> SamplingParams:
        return SamplingParams(max_tokens=max_tokens, temperature=temperature)

    proposer = Role(name="proposer", model=model, system_prompt=PROPOSER_SYSTEM, user_template=PROPOSER_USER,
                    sampling=sampling(cfg.proposer_max_tokens, cfg.temperature),
                    output_parser=partial(parse_question, min_chars=cfg.min_question_chars))
    solver = Role(name="solver", model=model, system_prompt=SOLVER_SYSTEM, user_template=SOLVER_USER,
                  sampling=sampling(cfg.solver_max_tokens, cfg.temperature), output_parser=parse_answer)
    judge_args = {"name": "judge", "model": cfg.judge_model or model, "system_prompt": JUDGE_SYSTEM,
                  "sampling": sampling(cfg.judge_max_tokens, cfg.judge_temperature),
                  "output_parser": parse_score_strict, "trainable": cfg.judge_trainable}
    quality_judge = Role(user_template=QUALITY_USER, **judge_args)
    answer_judge = Role(user_template=ANSWER_USER, **judge_args)

    def initial_state(ctx: EpisodeContext) -> PSJState:
        pooled: list[dict[str, Any]] = []
        if len(pool) and ctx.rng.random() < cfg.pool_reuse_prob:
            item = pool.sample(ctx.rng)  # not None: the pool is not empty
            pooled = [item] if item is not None else []
        return {"seed": ctx.seed, "pooled": pooled, "questions": [], "solver_question": {}, "answers": {},
                "quality": {}, "answer_scores": {}, "judge_kind": {}, "admitted": [], "episode_metadata": {}}

    async def propose(state: PSJState) -> dict[str, Any]:
        turns = await proposer.run_n(n=cfg.n_questions)
        questions = [{"text": t.output["question"], "format": t.output["format"], "source": "proposal",
                      "turn_id": t.turn_id} for t in turns if t.parse_error is None]
        questions += [{"text": p["question"], "format": 1.0, "source": "pool", "turn_id": None}
                      for p in state["pooled"]]
        return {"questions": questions}

    async def solve(state: PSJState) -> dict[str, Any]:
        runs = await asyncio.gather(*(solver.run_n(n=cfg.n_solvers, variables={"question": q["text"]})
                                      for q in state["questions"]))
        return {"solver_question": {t.turn_id: i for i, turns in enumerate(runs) for t in turns},
                "answers": {t.turn_id: t.output for turns in runs for t in turns}}

    async def judge(state: PSJState) -> dict[str, Any]:
        questions = state["questions"]
        new = [i for i, q in enumerate(questions) if q["source"] == "proposal"]
        answered = [(tid, qi, a) for tid, qi in state["solver_question"].items()
                    if (a := state["answers"].get(tid)) is not None]
        q_turns, a_turns = await asyncio.gather(
            asyncio.gather(*(quality_judge.run(variables={"question": questions[i]["text"]}) for i in new)),
            asyncio.gather(*(answer_judge.run(variables={"question": questions[qi]["text"], "answer": a})
                             for _, qi, a in answered)),
        )
        quality = {i: judge_verdict(t) for i, t in zip(new, q_turns, strict=True)}
        admitted = []
        for i, v in quality.items():
            if v["score"] is not None and v["score"] >= cfg.quality_bar:
                admitted.append(i)
                pool.add(questions[i]["text"], v["score"], seed=state["seed"])
        return {
            "quality": quality,
            "answer_scores": {tid: judge_verdict(t) for (tid, _, _), t in zip(answered, a_turns, strict=True)},
            "judge_kind": {**{t.turn_id: "quality" for t in q_turns}, **{t.turn_id: "answer" for t in a_turns}},
            "admitted": admitted,
            "episode_metadata": {"pool_size": len(pool), "admitted": [questions[i]["text"] for i in admitted],
                                 "pooled": [p["question"] for p in state["pooled"]]},
        }

    graph = StateGraph(PSJState)
    graph.add_node("propose", propose)
    graph.add_node("solve", solve)
    graph.add_node("judge", judge)
    graph.add_edge(START, "propose")
    graph.add_conditional_edges("propose", lambda s: "solve" if s["questions"] else END, ["solve", END])
    graph.add_edge("solve", "judge")
    graph.add_edge("judge", END)

    rewards: dict[str, Any] = {"proposer": partial(proposer_reward, cfg=cfg), "solver": partial(solver_reward, cfg=cfg)}
    groups = {"proposer": GroupBy.episode(), "solver": GroupBy.key(solver_group)}
    if cfg.judge_trainable:
        rewards["judge"] = judge_reward
        groups["judge"] = GroupBy.key(judge_group)
    return Recipe(
        name="propose-solve-judge",
        graph=graph,
        roles={"propose": proposer, "solve": solver, "judge": quality_judge},
        rewards=rewards,
        groups=groups,
        episode_rewards={"proposer": partial(proposer_repetition, cfg=cfg)},
        initial_state=initial_state,
        metrics=partial(metrics, cfg=cfg, pool=pool),
        headline_metrics=["valid_proposal", "solve_rate"],
        options={"model": model, **cfg.model_dump()},
    )
