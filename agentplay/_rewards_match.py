"""Rule-based rewards: answer matching, voting, difficulty shaping, format and repetition.

Plain functions over plain values so a recipe can call them from any reward fn and a
test can pin their edge cases; they never see RoleTurns.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from fractions import Fraction

from agentplay.traces import RewardRecord

_ARTICLES = frozenset({"a", "an", "the"})
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_KEEP_BETWEEN_DIGITS = re.compile(r"(?<=\d)[.](?=\d)")
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_NUMBER = re.compile(
    r"(?<![\w.])[-+−]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?(?![\w])"
)


def _check_probability(p: float, name: str = "p") -> float:
    if not isinstance(p, int | float) or math.isnan(p) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    return float(p)


def normalize_answer(text: str | None) -> str:
    """Fold the differences graders should not care about: Unicode forms and accents,
    case, punctuation, English articles (unless the answer is only an article, like
    the choice "A"), thousands separators and spacing.

    Punctuation becomes a space (not nothing) so "3.5" cannot collide with "35";
    a decimal point between digits is kept for the same reason.
    """
    if not text:
        return ""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).casefold()
    text = _THOUSANDS.sub("", text)
    text = _KEEP_BETWEEN_DIGITS.sub("\x00", text)
    text = "".join(
        " " if unicodedata.category(ch)[0] in "PS" else ch for ch in text
    ).replace("\x00", ".")
    words = text.split()
    kept = [w for w in words if w not in _ARTICLES]
    return " ".join(kept or words)  # "A" as a multiple-choice answer must survive


def exact_match(pred: str | None, gold: str | Sequence[str]) -> float:
    """1.0 when the normalised prediction equals the normalised gold (any of several golds)."""
    golds = [gold] if isinstance(gold, str) else list(gold)
    if pred is None or not golds:
        return 0.0
    key = normalize_answer(pred)
    return 1.0 if key and any(key == normalize_answer(g) for g in golds) else 0.0


def extract_number(text: str | None) -> float | None:
    r"""The number a text answers with: the content of the last \boxed{} if any, else the
    last number written ("1,234.5", "-3", "3/4", "2e3" all parse). None if there is none."""
    if not text:
        return None
    boxed = _BOXED.findall(text)
    if boxed:
        text = boxed[-1]
    found = _NUMBER.findall(text)
    if not found:
        return None
    raw = found[-1].replace(",", "").replace("−", "-").replace(" ", "")
    try:
        if "/" in raw:
            num, den = raw.split("/")
            return float(Fraction(num) / Fraction(den))
        return float(raw)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def numeric_match(
    pred: str | float | None,
    gold: str | float,
    *,
    rel_tol: float = 1e-6,
    abs_tol: float = 1e-9,
) -> float:
    """1.0 when both sides hold numbers equal within tolerance (`math.isclose` semantics)."""
    a = pred if isinstance(pred, int | float) else extract_number(pred)
    b = gold if isinstance(gold, int | float) else extract_number(gold)
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return 0.0
    return 1.0 if math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol) else 0.0


def majority_vote(
    answers: Sequence[str | None],
    *,
    key: Callable[[str], str] = normalize_answer,
) -> tuple[str | None, float]:
    """The most common answer (compared by `key`) and the share p of ALL answers that agree.

    Missing or empty answers never win but count in the denominator, so a group where
    most samples failed to answer cannot look confident. Ties go to the answer seen first.
    """
    if not answers:
        return None, 0.0
    counts: dict[str, int] = {}
    first: dict[str, str] = {}
    for ans in answers:
        k = key(ans) if ans is not None else ""
        if not k:
            continue
        counts[k] = counts.get(k, 0) + 1
        first.setdefault(k, ans)  # type: ignore[arg-type]
    if not counts:
        return None, 0.0
    best = max(counts, key=lambda k: counts[k])  # max keeps the first of equal counts
    return first[best], counts[best] / len(answers)


def learnability(p: float) -> float:
    """AZR proposer reward: 1 - p for a task some but not all attempts solve, else 0
    (a task nobody or everybody solves teaches nothing)."""
    p = _check_probability(p)
    return 1.0 - p if 0.0 < p < 1.0 else 0.0


def uncertainty(p: float) -> float:
    """min(p, 1 - p): the minority share of a vote, highest (0.5) at p = 0.5.

    Half of what the R-Zero and Agent0 papers use; `r_zero_uncertainty` is their form.
    Kept as is because recipes tuned their other reward terms against this scale.
    """
    p = _check_probability(p)
    return min(p, 1.0 - p)


def r_zero_uncertainty(p: float) -> float:
    """R-Zero's (and Agent0's) challenger reward 1 - 2|p - 1/2|: 1 at p = 0.5, 0 at p = 0 or 1.

    p is the share of solver samples agreeing with the majority answer (`majority_vote`).
    Equal to 2 * `uncertainty(p)`.
    """
    p = _check_probability(p)
    return 1.0 - 2.0 * abs(p - 0.5)


def format_check(
    text: str | None,
    *,
    pattern: str | re.Pattern[str] | None = None,
    required_tags: Sequence[str] = (),
) -> RewardRecord:
    """1.0 when `text` matches `pattern` (re.search) and holds a non-empty
    <tag>...</tag> for every required tag; otherwise 0.0 with what is missing."""
    text = text or ""
    problems: list[str] = []
    components: dict[str, float] = {}
    if pattern is not None:
        ok = re.search(pattern, text, re.DOTALL) is not None
        components["pattern"] = float(ok)
        if not ok:
            shown = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
            problems.append(f"does not match pattern {shown!r}")
    for tag in required_tags:
        m = re.search(rf"<{re.escape(tag)}>(.*?)</{re.escape(tag)}>", text, re.DOTALL)
        ok = m is not None and bool(m.group(1).strip())
        components[f"tag:{tag}"] = float(ok)
        if not ok:
            problems.append(f"missing non-empty <{tag}>...</{tag}>")
    if problems:
        return RewardRecord(value=0.0, reason="format: " + "; ".join(problems), components=components)
    return RewardRecord(value=1.0, reason="format ok", components=components)


def _shingles(text: str, max_n: int) -> frozenset[tuple[str, ...]]:
    words = normalize_answer(text).split()
    return frozenset(
        tuple(words[i : i + n]) for n in range(1, max_n + 1) for i in range(len(words) - n + 1)
    )


def ngram_jaccard(a: str, b: str, *, max_n: int = 2) -> float:
    """Jaccard similarity of the word 1..max_n-gram sets of two normalised texts
    (two empty texts are identical)."""
    sa, sb = _shingles(a, max_n), _shingles(b, max_n)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def repetition_penalty(
    texts: Sequence[str], threshold: float = 0.6, *, max_n: int = 2
) -> list[float]:
    """Penalty per text for near-duplicates inside one batch (R-Zero's fix for proposals
    collapsing onto one question).

    Texts whose n-gram Jaccard similarity reaches `threshold` are linked and linked
    texts form clusters (single linkage, O(n²) pairs: fine for one group). A text's
    penalty is (cluster size - 1) / (batch size - 1): 0 for a text unlike every other,
    1 when the whole batch is one cluster. Subtract it (scaled) from the reward.
    """
    threshold = _check_probability(threshold, "threshold")
    n = len(texts)
    if n < 2:
        return [0.0] * n
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    shingles = [_shingles(t, max_n) for t in texts]
    for i in range(n):
        for j in range(i + 1, n):
            union = shingles[i] | shingles[j]
            sim = 1.0 if not union else len(shingles[i] & shingles[j]) / len(union)
            if sim >= threshold:
                parent[find(i)] = find(j)
    roots = [find(i) for i in range(n)]
    sizes = {r: roots.count(r) for r in set(roots)}
    return [(sizes[r] - 1) / (n - 1) for r in roots]
