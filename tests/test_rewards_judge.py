"""`llm_judge` with the real SmolLM2: a verdict in range with its reason, and recorded zeros
(not exceptions) when the grader cannot be read."""

from __future__ import annotations

import pytest

from agentplay.models import DEFAULT_MODEL_SPEC, SamplingParams
from agentplay.rewards import llm_judge
from agentplay.traces import RewardRecord


async def test_binary_and_score_verdicts_are_in_range_with_a_reason():
    # Pinned: the judge samples greedily by default, and greedy SmolLM2 writes a readable verdict
    # to both prompts (a one-word "No"; "The answer is 10."), so the parsed branch is what runs
    # here; the unparsable one is test_garbage_verdict_is_zero_with_reason's.
    yes_no = await llm_judge(DEFAULT_MODEL_SPEC, "What is 2 + 2?", "4", reference="4")
    assert isinstance(yes_no, RewardRecord) and yes_no.components == {"parsed": 1.0}
    verdict = yes_no.reason.removeprefix("judge says ").split(":")[0]
    assert yes_no.reason.startswith("judge says") and verdict in ("yes", "no")
    assert yes_no.value == (1.0 if verdict == "yes" else 0.0)
    score = await llm_judge(DEFAULT_MODEL_SPEC, "What is the capital of France?", "Paris", mode="score")
    assert score.components["parsed"] == 1.0 and score.reason.startswith("judge score")
    assert 0.0 <= score.value <= 1.0 and score.value == pytest.approx(score.components["score"] / 10)
    assert f"judge score {score.components['score']:g}/10" in score.reason


async def test_garbage_verdict_is_zero_with_reason():
    # greedy SmolLM2 starts this verdict with "The" ("The answer is 10."): cut to one token
    # it holds no score, so the verdict is unparsable, recorded as 0 with the reason
    one_token = SamplingParams(max_tokens=1, temperature=0.0, logprobs=False)
    record = await llm_judge(DEFAULT_MODEL_SPEC, "What is the capital of France?", "Paris", mode="score",
                             sampling=one_token)
    assert record.value == 0.0
    assert "unparsable or outside 0..10 (cut off by max_tokens)" in record.reason
    assert record.components == {"parsed": 0.0}


async def test_empty_answer_and_bad_arguments():
    empty = await llm_judge(DEFAULT_MODEL_SPEC, "What is 2 + 2?", "   ")
    assert empty.value == 0.0 and "empty answer" in empty.reason
    with pytest.raises(ValueError, match="mode"):
        await llm_judge(DEFAULT_MODEL_SPEC, "q", "a", mode="stars")  # type: ignore[arg-type]
