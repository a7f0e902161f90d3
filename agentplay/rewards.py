"""Reward building blocks for self-play recipes: plain functions with typed inputs.

Matching (`exact_match`, `numeric_match`), pseudo-labels (`majority_vote`), difficulty
shaping from a solve rate p (`learnability` = AZR's 1 - p, `r_zero_uncertainty` = R-Zero's
1 - 2|p - 1/2|, `uncertainty` = min(p, 1 - p), half of it), `format_check`, a model grader
(`llm_judge`) and batch-level penalties for near-duplicate proposals (`repetition_penalty` by n-gram Jaccard,
`bleu_cluster_penalty` = R-Zero's BLEU clusters). Functions whose result needs
explaining return `agentplay.traces.RewardRecord` with a reason.
"""

from ._rewards_bleu import bleu_cluster_penalty, bleu_clusters, bleu_distance
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
    "bleu_cluster_penalty",
    "bleu_clusters",
    "bleu_distance",
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
