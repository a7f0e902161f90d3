"""Reward building blocks for self-play recipes: plain functions with typed inputs.

Matching (`exact_match`, `numeric_match`), pseudo-labels (`majority_vote`), difficulty
shaping from a solve rate p (`learnability` = AZR's 1 - p, `r_zero_uncertainty` = R-Zero's
1 - 2|p - 1/2|, `uncertainty` = min(p, 1 - p), half of it), `format_check`, a model grader (`llm_judge`) and a batch-level
`repetition_penalty` for near-duplicate proposals. Functions whose result needs
explaining return `agentplay.traces.RewardRecord` with a reason.
"""

from ._rewards_judge import JudgeMode, llm_judge, parse_score, parse_yes_no
from ._rewards_match import (
    exact_match,
    extract_number,
    format_check,
    learnability,
    majority_vote,
    ngram_jaccard,
    normalize_answer,
    numeric_match,
    r_zero_uncertainty,
    repetition_penalty,
    uncertainty,
)

__all__ = [
    "JudgeMode",
    "exact_match",
    "extract_number",
    "format_check",
    "learnability",
    "llm_judge",
    "majority_vote",
    "ngram_jaccard",
    "normalize_answer",
    "numeric_match",
    "parse_score",
    "parse_yes_no",
    "r_zero_uncertainty",
    "repetition_penalty",
    "uncertainty",
]
