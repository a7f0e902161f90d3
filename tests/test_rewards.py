"""The rewards library: boundaries and the false positives reward checkers are known for."""

from __future__ import annotations

import math

import pytest

from agentplay.rewards import (
    exact_match,
    extract_number,
    format_check,
    learnability,
    majority_vote,
    ngram_jaccard,
    normalize_answer,
    numeric_match,
    parse_score,
    parse_yes_no,
    r_zero_uncertainty,
    repetition_penalty,
    uncertainty,
)
from agentplay.traces import RewardRecord


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("The Café!", "cafe"),
        ("  an   APPLE. ", "apple"),
        ("«Paris»", "paris"),
        ("New-York", "new york"),
        ("ＡＢＣ", "abc"),  # full-width forms fold (NFKC/NFKD)
        ("1,000 apples", "1000 apples"),
        ("A", "a"),  # a lone article is the answer (multiple choice), not noise
        ("", ""),
        (None, ""),
    ],
)
def test_normalize_answer(text, want):
    assert normalize_answer(text) == want


def test_normalize_keeps_decimal_point_so_numbers_do_not_collide():
    assert normalize_answer("3.5") != normalize_answer("35")
    assert exact_match("3.5", "35") == 0.0


def test_exact_match_variants():
    assert exact_match("the Eiffel Tower.", "Eiffel tower") == 1.0
    assert exact_match("Eiffel", "Eiffel Tower") == 0.0
    assert exact_match("paris", ["London", "Paris"]) == 1.0
    assert exact_match(None, "x") == 0.0
    assert exact_match("", "") == 0.0  # nothing matches nothing: no free reward for silence
    assert exact_match("?!", "...") == 0.0
    assert exact_match("x", []) == 0.0


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("The answer is 42.", 42.0),
        (r"so \boxed{3/4} and 7 later", 0.75),
        ("-1,234.5 units", -1234.5),
        ("x = 2e3", 2000.0),
        ("−7", -7.0),  # unicode minus
        ("first 3 then 5", 5.0),  # the last number is the answer
        ("no digits here", None),
        ("version v1", None),  # digits glued to a word are not a number
        ("1/0", None),
        (None, None),
    ],
)
def test_extract_number(text, want):
    assert extract_number(text) == want


def test_numeric_match_tolerance_boundaries():
    assert numeric_match("about 3.0000001", "3", rel_tol=1e-6) == 1.0
    assert numeric_match("3.001", "3", rel_tol=1e-6) == 0.0
    assert numeric_match("3.001", "3", rel_tol=1e-3) == 1.0
    assert numeric_match("0", 1e-12) == 1.0  # abs_tol makes zero reachable
    assert numeric_match("0", 1e-6) == 0.0
    assert numeric_match("1,000", "1000") == 1.0
    assert numeric_match("0.5", "1/2") == 1.0
    assert numeric_match("no answer", "3") == 0.0
    assert numeric_match(float("nan"), float("nan")) == 0.0
    assert numeric_match(math.inf, math.inf) == 0.0


def test_majority_vote_counts_missing_answers_in_the_denominator():
    assert majority_vote(["Paris", "paris.", None, "London"]) == ("Paris", 0.5)
    assert majority_vote([None, "", "  "]) == (None, 0.0)
    assert majority_vote([]) == (None, 0.0)
    # ties go to the first answer seen, so the pseudo-label is reproducible
    assert majority_vote(["b", "a", "a", "b"]) == ("b", 0.5)
    assert majority_vote(["7", "7", "7"]) == ("7", 1.0)


@pytest.mark.parametrize(
    ("p", "learn", "unc", "r_zero"),
    [(0.0, 0.0, 0.0, 0.0), (1.0, 0.0, 0.0, 0.0), (0.25, 0.75, 0.25, 0.5), (0.5, 0.5, 0.5, 1.0),
     (0.75, 0.25, 0.25, 0.5), (0.9, 0.1, 0.1, 0.2)],
)
def test_learnability_and_both_uncertainty_forms(p, learn, unc, r_zero):
    assert learnability(p) == pytest.approx(learn)
    assert uncertainty(p) == pytest.approx(unc)  # min(p, 1 - p)
    assert r_zero_uncertainty(p) == pytest.approx(r_zero)  # R-Zero's 1 - 2|p - 1/2|


@pytest.mark.parametrize("bad", [-0.01, 1.01, float("nan")])
def test_probabilities_out_of_range_are_refused(bad):
    with pytest.raises(ValueError, match="p must be a probability"):
        learnability(bad)
    with pytest.raises(ValueError, match="p must be a probability"):
        uncertainty(bad)
    with pytest.raises(ValueError, match="p must be a probability"):
        r_zero_uncertainty(bad)


def test_format_check_tags_and_pattern():
    ok = format_check("<question>What is 2+2?</question>", required_tags=["question"])
    assert isinstance(ok, RewardRecord) and ok.value == 1.0 and ok.components == {"tag:question": 1.0}
    empty = format_check("<question>  </question>", required_tags=["question"])
    assert empty.value == 0.0 and "<question>" in empty.reason
    missing = format_check("Score: 7", pattern=r"Score:\s*\d+", required_tags=["answer"])
    assert missing.value == 0.0
    assert missing.components == {"pattern": 1.0, "tag:answer": 0.0}
    assert "missing non-empty <answer>" in missing.reason
    nopat = format_check(None, pattern=r"\d")
    assert nopat.value == 0.0 and "pattern" in nopat.reason


def test_repetition_penalty_detects_near_duplicates_and_keeps_distinct():
    texts = [
        "What is the sum of 12 and 30?",
        "what is the sum of 12 and 30",
        "Name the capital city of France.",
        "How many legs does a spider have?",
    ]
    pen = repetition_penalty(texts, threshold=0.6)
    assert pen[0] == pen[1] == pytest.approx(1 / 3)
    assert pen[2] == 0.0 and pen[3] == 0.0
    # all the same: the whole batch is one cluster
    assert repetition_penalty(["same"] * 3) == [1.0, 1.0, 1.0]
    assert repetition_penalty(["only one"]) == [0.0]
    assert repetition_penalty([]) == []
    # a one-word change in a long question is still a near-duplicate
    a = "A train leaves at 3 pm travelling at 60 km per hour towards a city 180 km away"
    b = "A train leaves at 3 pm travelling at 60 km per hour towards a city 240 km away"
    assert ngram_jaccard(a, b) > 0.6 and repetition_penalty([a, b]) == [1.0, 1.0]
    with pytest.raises(ValueError, match="threshold"):
        repetition_penalty(texts, threshold=2)


def test_judge_parsers():
    assert parse_yes_no("Yes, it is right.") is True
    assert parse_yes_no("The answer is incorrect") is False
    assert parse_yes_no("Maybe") is None
    assert parse_score("Score: 7") == 7.0
    assert parse_score("**Rating**: 8.5 because") == 8.5
    assert parse_score("I give it 9/10") == 9.0
    assert parse_score("9/5") is None  # a score on another scale is a format error
    assert parse_score("Score: 11") is None
    assert parse_score("no score") is None
