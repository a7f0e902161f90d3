"""SPICE: task parsing and checks, the challenger's variance reward and Dr. GRPO advantages on
hand-built states (exact values from the paper's formulas), then one real run on SmolLM2 over
the stdlib-docs corpus into a store, trained for one iteration."""

from __future__ import annotations

import math

import pytest
from _selfplay import train_one_iteration
from agentplay.graphs import spice
from agentplay.tools import CorpusIndex, Document
from agentplay.trainers import compute_advantages

from agentplay import EpisodeContext, EpisodeView
from agentplay.traces import Episode, RewardRecord, RoleTurn

VIEW = EpisodeView(turns=[], state={}, ctx=EpisodeContext(index=0, seed=0))
DOC = "zlib.crc32(data[, value]) Computes a CRC (Cyclic Redundancy Check) checksum of data. The result is an " \
      "unsigned 32-bit integer. The default starting value is 0."
MCQ = """Question: What does zlib.crc32 return?
A) a float
B) an unsigned 32-bit integer
C) a string
D) bytes
Answer: B"""


def test_parse_and_check_multiple_choice_and_free_form_tasks():
    task = spice.parse_task(MCQ, "mcq")
    assert task == {"question": "What does zlib.crc32 return?", "answer": "B",
                    "options": [["A", "a float"], ["B", "an unsigned 32-bit integer"], ["C", "a string"], ["D", "bytes"]]}
    assert spice.check_task(task, "mcq", DOC, grounded=True, min_question_chars=10) == ""
    wrong_letter = {**task, "answer": "A"}  # "a float" is not in the document
    assert "not in the document" in spice.check_task(wrong_letter, "mcq", DOC, grounded=True, min_question_chars=10)
    assert spice.check_task(wrong_letter, "mcq", DOC, grounded=False, min_question_chars=10) == ""
    three = spice.parse_task(MCQ.replace("D) bytes\n", ""), "mcq")
    assert "A) to D)" in spice.check_task(three, "mcq", DOC, grounded=True, min_question_chars=10)
    same = spice.parse_task(MCQ.replace("D) bytes", "D) A float"), "mcq")
    assert spice.check_task(same, "mcq", DOC, grounded=True, min_question_chars=10) == "two options are the same"

    free = spice.parse_task("Question: What is the default starting value of crc32?\nAnswer: 0", "free")
    assert free == {"question": "What is the default starting value of crc32?", "answer": "0", "options": []}
    assert spice.check_task(free, "free", DOC, grounded=True, min_question_chars=10) == ""
    leak = {"question": "Is the result an unsigned 32-bit integer?", "answer": "unsigned 32-bit integer", "options": []}
    assert spice.check_task(leak, "free", DOC, grounded=True, min_question_chars=10) == "the question gives its answer away"
    with pytest.raises(ValueError, match="Answer"):
        spice.parse_task("Question: What is crc32?", "free")
    with pytest.raises(ValueError, match="Question"):
        spice.parse_task("Answer: 0", "free")


def test_grading_by_letter_number_or_normalised_text():
    mcq = spice.parse_task(MCQ, "mcq")
    assert spice.grade("B", mcq, "mcq")[0] == 1.0
    assert spice.grade("(B) an unsigned 32-bit integer", mcq, "mcq")[0] == 1.0
    assert spice.grade("C", mcq, "mcq")[0] == 0.0
    number = {"question": "q", "answer": "1,000", "options": []}
    assert spice.grade("1000.0", number, "free")[0] == 1.0
    assert spice.grade("100", number, "free")[0] == 0.0
    text = {"question": "q", "answer": "Cyclic Redundancy Check", "options": []}
    assert spice.grade("cyclic redundancy check.", text, "free")[0] == 1.0
    assert spice.grade(None, text, "free") == (0.0, "no answer")


def test_challenger_reward_peaks_at_half_solved():
    # Var of K binary scores = p(1 - p); reward exp(-(Var - 1/4)^2 / (2 * 0.01))
    assert spice.correctness_variance([1, 0, 1, 0]) == 0.25
    assert spice.correctness_variance([1, 1, 1, 0]) == pytest.approx(0.1875)
    assert spice.variance_reward(0.25) == 1.0
    assert spice.variance_reward(0.1875) == pytest.approx(math.exp(-(0.0625 ** 2) / 0.02))  # 0.8226
    assert spice.variance_reward(0.0) == pytest.approx(math.exp(-3.125))  # all right or all wrong: 0.0439

    recipe = spice.build()
    turn = RoleTurn(role="challenger", output={"question": "q", "answer": "B", "options": []})
    state = {"task": turn.output, "invalid": "", "attempts": [{"score": s} for s in (1.0, 1.0, 1.0, 0.0)]}
    r = recipe.rewards["challenger"](turn, state, VIEW)
    assert r.value == pytest.approx(math.exp(-(0.0625 ** 2) / 0.02))
    assert r.components == {"valid": 1.0, "pass_rate": 0.75, "variance": 0.1875}
    invalid = recipe.rewards["challenger"](turn, {**state, "invalid": "two options are the same"}, VIEW)
    assert invalid.value == -0.1 and "two options are the same" in invalid.reason
    unparsed = RoleTurn(role="challenger", parse_error="output_parser: no 'Answer: ...' line")
    assert recipe.rewards["challenger"](unparsed, {"task": None, "invalid": "x"}, VIEW).value == -0.1


@pytest.mark.parametrize("k", [4, 8])
def test_challenger_reward_over_every_pass_rate_of_k_answers(k):
    """The paper's r_C for each possible count of right answers out of K: symmetric in right and
    wrong, largest at half, falling monotonically to exp(-3.125) at all right or all wrong."""
    recipe = spice.build(n_reasoners=k)
    turn = RoleTurn(role="challenger", output={"question": "q", "answer": "B", "options": []})
    values = []
    for right in range(k + 1):
        scores = [1.0] * right + [0.0] * (k - right)
        p = right / k
        r = recipe.rewards["challenger"](turn, {"task": turn.output, "invalid": "", "attempts":
                                                [{"score": s} for s in scores]}, VIEW)
        assert r.value == pytest.approx(math.exp(-((p * (1 - p) - 0.25) ** 2) / 0.02), abs=1e-12)
        assert r.components["variance"] == pytest.approx(p * (1 - p)) and r.components["pass_rate"] == p
        values.append(r.value)
    assert values == pytest.approx(values[::-1], abs=1e-12)
    assert values[k // 2] == 1.0 and values[0] == pytest.approx(math.exp(-3.125))
    assert all(a < b for a, b in zip(values[: k // 2], values[1 : k // 2 + 1]))
    # an invalid task is rho = -0.1 whatever the answers (and is never scored by variance)
    invalid = recipe.rewards["challenger"](turn, {"task": turn.output, "invalid": "answer not in the document",
                                                  "attempts": [{"score": 1.0}, {"score": 0.0}]}, VIEW)
    assert invalid.value == -0.1 and invalid.components == {"valid": 0.0}


def test_a_valid_task_without_answers_is_not_given_a_variance_reward():
    recipe = spice.build()
    turn = RoleTurn(role="challenger", output={"question": "q", "answer": "B", "options": []})
    with pytest.raises(ValueError, match="no reasoner answers"):
        recipe.rewards["challenger"](turn, {"task": turn.output, "invalid": "", "attempts": []}, VIEW)


def _turn(role: str, group: str, reward: float) -> RoleTurn:
    return RoleTurn(role=role, group_id=group, prompt_token_ids=[1, 2], token_ids=[5, 6, 7], mask=[1, 1, 1],
                    logprobs=[-0.1] * 3, reward=RewardRecord(value=reward))


def test_dr_grpo_advantages_per_role():
    recipe = spice.build()
    r1, r2 = spice.variance_reward(0.25), spice.variance_reward(0.1875)
    episodes = [
        Episode(episode_id="a", index=0, turns=[_turn("challenger", "block0", r1),
                                                *[_turn("reasoner", "ep0", s) for s in (1.0, 0.0, 1.0, 0.0)]]),
        Episode(episode_id="b", index=1, turns=[_turn("challenger", "block0", r2),
                                                *[_turn("reasoner", "ep1", s) for s in (1.0, 1.0, 1.0, 0.0)]]),
    ]
    samples, _ = compute_advantages(episodes, estimators=recipe.advantages)
    adv = {(s.turn.role, s.turn.group_id): [] for s in samples}
    for s in samples:
        adv[(s.turn.role, s.turn.group_id)].append(s.advantage)
    half = (r1 - r2) / 2  # r - group mean, no std division
    assert adv[("challenger", "block0")] == pytest.approx([half, -half], abs=1e-12)
    assert adv[("reasoner", "ep0")] == [0.5, -0.5, 0.5, -0.5]
    assert adv[("reasoner", "ep1")] == [0.25, 0.25, 0.25, -0.75]


def test_any_corpus_index_and_formats_per_block(tmp_path):
    docs = [Document(id=f"d{i}", title=f"Doc {i}", text=f"Document number {i}. " * 30) for i in range(6)]
    index = CorpusIndex.build(docs, tmp_path / "idx", dense=False)
    recipe = spice.build(corpus=str(tmp_path / "idx"), group_k=2)
    states = [recipe.initial_state(EpisodeContext(index=i, seed=i, group_seed=100 + i // 2)) for i in range(4)]
    assert states[0]["doc_id"] == states[1]["doc_id"] and states[0]["doc_id"].startswith("d")
    assert states[0]["answer_format"] == states[1]["answer_format"]
    assert {s["answer_format"] for s in states} <= {"mcq", "free"}
    free = spice.build(index=index, answer_format="free")
    assert free.initial_state(EpisodeContext(index=0, seed=0, group_seed=1))["answer_format"] == "free"
    with pytest.raises(ValueError, match="answer_format"):
        spice.build(index=index, answer_format="essay")


@pytest.mark.timeout(900)
async def test_one_real_iteration_on_smollm2_over_the_stdlib_docs(tmp_path):
    k, n = 2, 2
    recipe = spice.build(group_k=k, n_reasoners=n, challenger_max_tokens=64, reasoner_max_tokens=24,
                         answer_format="free", gate_reasoner=False, temperature=0.7, grounded=False)
    # stored ok, token-exact, and one optimizer step: a valid and an invalid task in the
    # challenger's group differ in reward
    run = await train_one_iteration(recipe, tmp_path, run_name="sp", episodes=k)
    episodes, m = run.episodes, run.metrics
    challengers = [t for ep in episodes for t in ep.turns if t.role == "challenger"]
    assert len(challengers) == k and len({t.group_id for t in challengers}) == 1  # one GroupBy.seed(k) group
    for ep in episodes:
        reasoners = [t for t in ep.turns if t.role == "reasoner"]
        (challenger,) = [t for t in ep.turns if t.role == "challenger"]
        # gate_reasoner=False: every parsed task is answered n times, as one group
        assert len(reasoners) == (0 if challenger.parse_error else n)
        assert len({t.group_id for t in reasoners}) <= 1
        if challenger.reward.components["valid"] == 0.0:
            assert challenger.reward.value == -0.1
            assert all(t.reward.value == 0.0 for t in reasoners)
        for t in reasoners:  # the reasoner never sees the document
            assert all("Document:" not in str(msg.get("content")) for msg in t.messages)
    assert any(t.role == "reasoner" for ep in episodes for t in ep.turns), "no task parsed: no reasoner ran"
    assert {"reward/challenger", "reward/reasoner", "time/rollout_s", "episode/valid_proposal"} <= set(m)
