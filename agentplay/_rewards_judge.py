"""A model as grader: yes/no or 0..N verdicts, parsed strictly, failures recorded.

The parsers are public because recipes with a trainable judge role (propose-solve-judge)
parse that role's text with the same rules the reward library uses.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from agentplay.models import ChatModel, SamplingParams
from agentplay.traces import RewardRecord

JudgeMode = Literal["binary", "score"]

_VERDICT = re.compile(r"\b(yes|no|correct|incorrect|wrong|right)\b", re.IGNORECASE)
_POSITIVE = frozenset({"yes", "correct", "right"})
_LABELLED_SCORE = re.compile(r"(?:score|rating|grade)[\s*:=]*(\d+(?:\.\d+)?)", re.IGNORECASE)
_ANY_SCORE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)(?:\s*/\s*(\d+))?(?![\w])")

JUDGE_SYSTEM = "You are a strict grader. You check answers; you never solve the question yourself."

_BINARY_PROMPT = """Question: {question}
{reference}Candidate answer: {answer}

Is the candidate answer correct? Reply with one word: yes or no."""

_SCORE_PROMPT = """Question: {question}
{reference}Candidate answer: {answer}

Rate the candidate answer from 0 (wrong) to {max_score} (fully correct).
Reply in the form "Score: N"."""


def parse_yes_no(text: str | None) -> bool | None:
    """The first verdict word in `text` (yes/correct/right vs no/incorrect/wrong), or None."""
    m = _VERDICT.search(text or "")
    return None if m is None else m.group(1).lower() in _POSITIVE


def parse_score(text: str | None, max_score: float = 10) -> float | None:
    """A score in [0, max_score]: a labelled one ("Score: 7") first, else the first bare
    number ("7", "7/10"). None when absent or out of range (an out-of-range number is a
    format error, not something to clip silently)."""
    text = text or ""
    m = _LABELLED_SCORE.search(text)
    if m is not None:
        value = float(m.group(1))
    else:
        m = _ANY_SCORE.search(text)
        if m is None:
            return None
        value = float(m.group(1))
        if m.group(2) is not None and float(m.group(2)) != max_score:
            return None
    return value if 0.0 <= value <= max_score else None


async def llm_judge(
    model: Any,
    question: str,
    answer: str | None,
    reference: str | None = None,
    *,
    mode: JudgeMode = "binary",
    max_score: int = 10,
    sampling: SamplingParams | None = None,
) -> RewardRecord:
    """Ask a model whether `answer` answers `question` (optionally against a `reference`).

    `model` is a spec string (resolved through the process-wide registry, so a judge on
    the policy's spec shares its engine), a ModelConfig or a ChatModel. `mode="binary"`
    gives 1.0/0.0 from yes/no; `mode="score"` gives score / max_score. An empty answer
    or an unparsable verdict gives 0.0 with the reason (the judged text earned it); a
    failed call raises, so the turn is recorded `reward_failed` (or the episode retried
    when the server or network failed), never scored 0; a bad `model` argument raises.
    """
    from agentplay._registry import resolve_model  # late: avoids a cycle at import

    if mode not in ("binary", "score"):
        raise ValueError(f"mode must be 'binary' or 'score', got {mode!r}")
    chat_model: ChatModel = await resolve_model(model)
    if not answer or not answer.strip():
        return RewardRecord(value=0.0, reason="judge: empty answer, not asked")
    ref = f"Reference answer: {reference}\n" if reference else ""
    template = _BINARY_PROMPT if mode == "binary" else _SCORE_PROMPT
    prompt = template.format(question=question, reference=ref, answer=answer, max_score=max_score)
    params = sampling or SamplingParams(
        temperature=0.0, max_tokens=8 if mode == "binary" else 16, logprobs=False
    )
    messages = [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": prompt}]
    # A judge call that fails raises: the episode runner marks the turn reward_failed (or, for
    # a server or network failure, retries the episode); a failed grader is never a score of 0.
    result = await chat_model.chat(messages, sampling=params)
    text = result.choice.text
    shown = text.strip()[:80]
    cut = " (cut off by max_tokens)" if result.choice.finish_reason == "length" else ""
    if mode == "binary":
        verdict = parse_yes_no(text)
        if verdict is None:
            return RewardRecord(
                value=0.0,
                reason=f"judge verdict unparsable{cut}: {shown!r}",
                components={"parsed": 0.0},
            )
        return RewardRecord(
            value=float(verdict),
            reason=f"judge says {'yes' if verdict else 'no'}: {shown!r}",
            components={"parsed": 1.0},
        )
    score = parse_score(text, max_score)
    if score is None:
        return RewardRecord(
            value=0.0,
            reason=f"judge score unparsable or outside 0..{max_score}{cut}: {shown!r}",
            components={"parsed": 0.0},
        )
    return RewardRecord(
        value=score / max_score,
        reason=f"judge score {score:g}/{max_score}: {shown!r}",
        components={"parsed": 1.0, "score": score},
    )
