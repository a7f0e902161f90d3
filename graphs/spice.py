"""SPICE (Liu et al., 2025, "SPICE: Self-Play In Corpus Environments Improves Reasoning"): a
challenger reads a document from a corpus and writes a question with its answer grounded
in it; a reasoner answers without the document. One model plays both roles.

Each episode draws a document (the k episodes of a `GroupBy.seed(k)` block share it and
its answer format, so their k questions are the challenger's GRPO group) from the corpus:
the shipped Python stdlib docs by default, or any index built by ``agentplay corpus index``
(``corpus=PATH``). The challenger writes either a multiple-choice question (four options,
one letter correct) or a free-form one (a short answer); `answer_format="mixed"` draws one
per block. The task is checked before anyone answers it: it parses, a multiple-choice
question has four distinct options and names one of them, and (`grounded=True`) the answer
(the correct option's text) appears in the document, so an answer the challenger made up
cannot become a label. The reasoner then samples `n_reasoners` answers without the
document.

Rewards (the paper's Sec. 3):
- reasoner   r_R = 1(answer is correct): the letter for multiple choice; normalised exact
  match, or numeric equality when the gold answer is a number, for free form;
- challenger r_C = exp(-(Var - 1/4)² / (2 · 0.01)) for a valid task, where Var = p̂(1 - p̂)
  is the variance of the reasoner's K binary scores (p̂ = the share correct): 1 at p̂ = 1/2,
  where the variance peaks at 1/4, and ~0.04 when every sample is right or every one wrong.
  An invalid task gets ρ = -0.1.
Advantages: Dr. GRPO per role, r - (the group's mean), without the std division.

    recipe = build(group_k=4, n_reasoners=4, answer_format="mixed")
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any, Literal, TypedDict

from agentplay.tools import CorpusIndex, default_corpus_index
from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, ConfigDict, Field

from agentplay import Advantage, EpisodeContext, EpisodeView, GroupBy, Recipe, Role
from agentplay.models import DEFAULT_MODEL_SPEC, SamplingParams
from agentplay.prompts import load_prompt, render_prompt
from agentplay.rewards import exact_match, normalize_answer, numeric_match
from agentplay.traces import RewardRecord, RoleTurn

__all__ = [
    "CHALLENGER_DEMOS",
    "CHALLENGER_FREE",
    "CHALLENGER_MCQ",
    "CHALLENGER_SYSTEM",
    "LETTERS",
    "REASONER_FREE",
    "REASONER_MCQ",
    "REASONER_SYSTEM",
    "SpiceConfig",
    "SpiceState",
    "build",
    "challenger_reward",
    "check_task",
    "correctness_variance",
    "grade",
    "metrics",
    "parse_choice",
    "parse_task",
    "reasoner_reward",
    "variance_reward",
]

AnswerFormat = Literal["mcq", "free"]
LETTERS = ("A", "B", "C", "D")


# -- config ------------------------------------------------------------------------------------

class SpiceConfig(BaseModel):
    """Options of `build()`; every one can be passed as a keyword (or `--set name=value`)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    corpus: str = "default"
    """Index folder from ``agentplay corpus index``, or ``default`` for the shipped stdlib docs."""
    answer_format: Literal["mixed", "mcq", "free"] = "mixed"
    """Multiple-choice, free-form, or either, drawn per block (the k episodes of a group agree)."""
    group_k: int = Field(4, ge=1, le=64)
    """Episodes (one question each) per challenger group; they share one document."""
    n_reasoners: int = Field(4, ge=1, le=64)
    """Reasoner answers per question (the paper's K): its GRPO group and the sample of Var."""
    target_variance: float = Field(0.25, ge=0.0, le=0.25)
    """Where the challenger reward peaks: 1/4, the variance of a 50% pass rate."""
    variance_sigma2: float = Field(0.01, gt=0.0)
    """The Gaussian's width 2σ² = 2 · this (the paper's 0.01)."""
    invalid_penalty: float = Field(-0.1, le=0.0)
    """ρ: the challenger's reward for a task that fails a check."""
    grounded: bool = True
    """Require the answer (the correct option's text) to appear in the document."""
    gate_reasoner: bool = True
    """Only valid tasks reach the reasoner (False: a parsed but invalid task is answered too,
    e.g. to debug prompts; the reasoner's reward is then 0 with the reason)."""
    doc_chars: int = Field(700, ge=100)
    """Characters of the document shown to the challenger."""
    min_doc_chars: int = Field(200, ge=1)
    """Documents shorter than this are not drawn."""
    min_question_chars: int = Field(10, ge=1)
    challenger_max_tokens: int = Field(128, ge=1)
    reasoner_max_tokens: int = Field(96, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=5.0)


# -- state -------------------------------------------------------------------------------------

class SpiceState(TypedDict, total=False):
    doc_id: str
    title: str
    document: str
    """The excerpt the challenger reads (the reasoner never sees it)."""
    answer_format: AnswerFormat
    task: dict[str, Any] | None
    """The parsed task: question, answer, options (multiple choice: [(letter, text)])."""
    invalid: str
    """Why the task failed a check ('' when it is valid)."""
    attempts: list[dict[str, Any]]
    """One per reasoner sample: turn_id, answer, score, reason."""


# -- prompts -----------------------------------------------------------------------------------

CHALLENGER_SYSTEM = load_prompt(__file__, "spice/challenger_system.jinja")
CHALLENGER_FREE = load_prompt(__file__, "spice/challenger_free.jinja")
"""Variables: `title`, `document`."""
CHALLENGER_MCQ = load_prompt(__file__, "spice/challenger_mcq.jinja")
"""Variables: `title`, `document`."""
REASONER_SYSTEM = load_prompt(__file__, "spice/reasoner_system.jinja")
REASONER_FREE = load_prompt(__file__, "spice/reasoner_free.jinja")
"""Variables: `question`."""
REASONER_MCQ = load_prompt(__file__, "spice/reasoner_mcq.jinja")
"""Variables: `question`, `options` ([(letter, text)])."""

_DEMO_TITLE = "zlib.crc32"
_DEMO_DOC = ("zlib.crc32(data[, value]) Computes a CRC (Cyclic Redundancy Check) checksum of data. The result "
             "is an unsigned 32-bit integer. If value is present, it is used as the starting value of the checksum.")
# One worked example per format: the 135M model copies a demonstrated layout, not a described one.
CHALLENGER_DEMOS: dict[AnswerFormat, list[dict[str, Any]]] = {
    "free": [
        {"role": "user", "content": render_prompt(CHALLENGER_FREE, title=_DEMO_TITLE, document=_DEMO_DOC)},
        {"role": "assistant", "content": "Question: What kind of checksum does zlib.crc32 compute?\n"
                                         "Answer: Cyclic Redundancy Check"},
    ],
    "mcq": [
        {"role": "user", "content": render_prompt(CHALLENGER_MCQ, title=_DEMO_TITLE, document=_DEMO_DOC)},
        {"role": "assistant", "content": "Question: What does zlib.crc32 return?\nA) a signed 64-bit float\n"
                                         "B) an unsigned 32-bit integer\nC) a hexadecimal string\nD) a bytes object\n"
                                         "Answer: B"},
    ],
}

_QUESTION = re.compile(r"question\s*:\s*(.+)", re.IGNORECASE)
_OPTION = re.compile(r"^\s*\(?([A-D])[).:]\s*(.+?)\s*$", re.MULTILINE)
_ANSWER = re.compile(r"answer\s*:\s*(.+)", re.IGNORECASE)
_LETTER = re.compile(r"\b([A-D])\b")


def parse_task(text: str, answer_format: AnswerFormat) -> dict[str, Any]:
    """{question, answer, options} from the challenger's reply; ValueError when a part is missing."""
    questions = [q.strip() for q in _QUESTION.findall(text) if q.strip()]
    answers = [a.strip().rstrip(".").strip() for a in _ANSWER.findall(text) if a.strip()]
    if not questions:
        raise ValueError("no 'Question: ...' line")
    if not answers:
        raise ValueError("no 'Answer: ...' line")
    task: dict[str, Any] = {"question": questions[-1], "answer": answers[-1], "options": []}
    if answer_format == "mcq":
        task["options"] = [[letter.upper(), option] for letter, option in _OPTION.findall(text)]
        task["answer"] = parse_choice(answers[-1]) or answers[-1]
    return task


def parse_choice(text: str) -> str | None:
    """The option letter a reply names (``B``, ``B)``, ``(B) ...``, ``\\boxed{B}``), or None."""
    found = _LETTER.findall(text.upper() if len(text.strip()) <= 3 else text)
    return found[0] if found else None


def check_task(task: dict[str, Any], answer_format: AnswerFormat, document: str, *, grounded: bool,
               min_question_chars: int) -> str:
    """Why a parsed task is invalid ('' when it is valid)."""
    question, answer = task["question"], task["answer"]
    if len(question) < min_question_chars:
        return f"question shorter than {min_question_chars} characters"
    if answer_format == "mcq":
        letters = [letter for letter, _ in task["options"]]
        if letters != list(LETTERS):
            return f"options must be A) to D) once each, got {''.join(letters) or 'none'}"
        texts = {normalize_answer(option) for _, option in task["options"]}
        if len(texts) < len(LETTERS):
            return "two options are the same"
        if answer not in LETTERS:
            return f"the answer {answer!r} is not one of A-D"
        answer = dict(task["options"])[answer]
    elif normalize_answer(answer) in normalize_answer(question):
        return "the question gives its answer away"
    if grounded and normalize_answer(answer) not in normalize_answer(document):
        return f"the answer {answer[:40]!r} is not in the document"
    return ""


def grade(reply: str | None, task: dict[str, Any], answer_format: AnswerFormat) -> tuple[float, str]:
    """(1 or 0, why): the letter for multiple choice; free form by number when the gold answer
    is a number, else by normalised exact match."""
    if reply is None:
        return 0.0, "no answer"
    if answer_format == "mcq":
        choice = parse_choice(reply)
        return float(choice == task["answer"]), f"chose {choice or 'nothing'}, correct {task['answer']}"
    gold = task["answer"]
    score = numeric_match(reply, gold) if _is_number(gold) else exact_match(reply, gold)
    return score, f"{reply[:40]!r} {'matches' if score else 'does not match'} {gold[:40]!r}"


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", "").strip())
    except ValueError:
        return False
    return True


def _reasoner_answer(text: str) -> str:
    found = [a.strip().rstrip(".").strip() for a in _ANSWER.findall(text) if a.strip()]
    answer = found[-1] if found else next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "")
    if not answer:
        raise ValueError("empty answer")
    return answer


# -- reward formulas (pure, the paper's) -------------------------------------------------------

def correctness_variance(scores: list[float]) -> float:
    """Var of the reasoner's binary scores (population variance, p̂(1 - p̂) for 0/1 scores)."""
    if not scores:
        return 0.0
    mean = sum(scores) / len(scores)
    return sum((s - mean) ** 2 for s in scores) / len(scores)


def variance_reward(variance: float, *, target: float = 0.25, sigma2: float = 0.01) -> float:
    """SPICE's challenger reward exp(-(Var - target)² / (2 σ²)), highest at a 50% pass rate."""
    # Source: Liu et al. 2025, "SPICE: Self-Play In Corpus Environments Improves Reasoning"
    # (arXiv:2510.24684), Sec. 3, challenger reward: r_C = exp(-(Var - 0.25)² / (2 · 0.01)) for a
    # valid task, Var the variance of the reasoner's K binary correctness scores (0.25 at a 50%
    # pass rate), and the penalty ρ = -0.1 for an invalid one (`SpiceConfig.invalid_penalty`).
    # ANCHORS.md: "challenger rewarded by variance of reasoner correctness".
    return math.exp(-((variance - target) ** 2) / (2.0 * sigma2))


# -- rewards (what the recipe registers) -------------------------------------------------------

def reasoner_reward(turn: RoleTurn, state: SpiceState, episode: EpisodeView) -> RewardRecord:
    """1 for the correct answer, 0 otherwise (also for an invalid task it was shown)."""
    attempt = next(a for a in state["attempts"] if a["turn_id"] == turn.turn_id)
    return RewardRecord(value=attempt["score"], reason=attempt["reason"])


def challenger_reward(turn: RoleTurn, state: SpiceState, episode: EpisodeView, *, cfg: SpiceConfig) -> RewardRecord:
    """Gaussian in the variance of the reasoner's correctness for a valid task; ρ otherwise."""
    invalid = turn.parse_error or state.get("invalid")
    if invalid:
        return RewardRecord(value=cfg.invalid_penalty, reason=f"invalid task: {invalid}", components={"valid": 0.0})
    scores = [a["score"] for a in state.get("attempts", [])]
    if not scores:  # Var of no answers would read as "all wrong" (0.04): a made-up reward
        raise ValueError("a valid task has no reasoner answers to take the variance of")
    var = correctness_variance(scores)
    value = variance_reward(var, target=cfg.target_variance, sigma2=cfg.variance_sigma2)
    p = sum(scores) / len(scores)
    return RewardRecord(value=value, reason=f"pass rate {p:.2f} over {len(scores)} answers, variance {var:.3f}",
                        components={"valid": 1.0, "pass_rate": p, "variance": var})


def metrics(state: SpiceState, turns: list[RoleTurn]) -> dict[str, float]:
    """Task validity and format; the reasoner's pass rate when it answered."""
    scores = [a["score"] for a in state.get("attempts", [])]
    out = {"valid_proposal": float(state.get("task") is not None and not state.get("invalid")),
           "multiple_choice": float(state.get("answer_format") == "mcq")}
    if scores:
        out["solve_rate"] = sum(scores) / len(scores)
    return out


# -- build: roles, nodes, graph ----------------------------------------------------------------

def build(model: str = DEFAULT_MODEL_SPEC, *, index: CorpusIndex | None = None, **options: Any) -> Recipe:
    """The SPICE recipe on `index` (default: the `corpus` option's index, the stdlib docs)."""
    cfg = SpiceConfig(**options)
    if index is None:
        index = default_corpus_index() if cfg.corpus == "default" else CorpusIndex.load(cfg.corpus)

    # one challenger role, two parsers: the block's format decides which reads the reply
    challengers = {fmt: Role(name="challenger", model=model, system_prompt=CHALLENGER_SYSTEM,
                             examples=CHALLENGER_DEMOS[fmt], output_parser=functools.partial(parse_task, answer_format=fmt),
                             sampling=SamplingParams(max_tokens=cfg.challenger_max_tokens, temperature=cfg.temperature))
                   for fmt in ("mcq", "free")}
    reasoner = Role(name="reasoner", model=model, system_prompt=REASONER_SYSTEM, output_parser=_reasoner_answer,
                    sampling=SamplingParams(max_tokens=cfg.reasoner_max_tokens, temperature=cfg.temperature))

    def initial_state(ctx: EpisodeContext) -> SpiceState:
        # the block's group seed picks its document and format: its k challengers see one prompt
        doc = index.sample_documents(1, seed=ctx.group_seed or 0, min_chars=cfg.min_doc_chars)[0]
        fmt = cfg.answer_format if cfg.answer_format != "mixed" else ctx.group_rng.choice(("mcq", "free"))
        text = " ".join(doc.text.split())[: cfg.doc_chars]
        return {"doc_id": doc.id, "title": doc.title or doc.id, "document": text, "answer_format": fmt,
                "task": None, "invalid": "", "attempts": []}

    async def challenge(state: SpiceState) -> dict[str, Any]:
        fmt = state["answer_format"]
        prompt = render_prompt(CHALLENGER_MCQ if fmt == "mcq" else CHALLENGER_FREE,
                               title=state["title"], document=state["document"])
        turn = await challengers[fmt].run(prompt)
        if turn.parse_error is not None:
            return {"task": None, "invalid": turn.parse_error}
        task = turn.output
        invalid = check_task(task, fmt, state["document"], grounded=cfg.grounded,
                             min_question_chars=cfg.min_question_chars)
        return {"task": task, "invalid": invalid}

    async def answer(state: SpiceState) -> dict[str, Any]:
        task, fmt = state["task"], state["answer_format"]
        assert task is not None
        prompt = (render_prompt(REASONER_MCQ, question=task["question"], options=task["options"]) if fmt == "mcq"
                  else render_prompt(REASONER_FREE, question=task["question"]))
        turns = await reasoner.run_n(prompt, n=cfg.n_reasoners)
        attempts = []
        for t in turns:
            if state.get("invalid"):
                score, why = 0.0, f"not scored: the task is invalid ({state['invalid']})"
            else:
                score, why = grade(t.output if t.parse_error is None else None, task, fmt)
            attempts.append({"turn_id": t.turn_id, "answer": t.output, "score": score, "reason": why})
        return {"attempts": attempts}

    def to_reasoner(state: SpiceState) -> str:
        if state.get("task") is None or (cfg.gate_reasoner and state.get("invalid")):
            return END
        return "answer"

    graph = StateGraph(SpiceState)
    graph.add_node("challenge", challenge)
    graph.add_node("answer", answer)
    graph.add_edge(START, "challenge")
    graph.add_conditional_edges("challenge", to_reasoner, ["answer", END])
    graph.add_edge("answer", END)

    return Recipe(
        name="spice",
        graph=graph,
        roles={"challenge": challengers["free"], "answer": reasoner},
        rewards={"challenger": functools.partial(challenger_reward, cfg=cfg), "reasoner": reasoner_reward},
        groups={"challenger": GroupBy.seed(cfg.group_k), "reasoner": GroupBy.episode()},
        advantages={"challenger": Advantage.dr_grpo(), "reasoner": Advantage.dr_grpo()},
        initial_state=initial_state,
        metrics=metrics,
        headline_metrics=["valid_proposal", "solve_rate"],
        zero_on_parse_error=False,  # an unparsable task earns ρ, not 0; an unparsable answer is wrong
        options={"model": model, **cfg.model_dump()},
    )
