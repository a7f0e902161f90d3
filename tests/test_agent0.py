"""Agent0: the paper's reward and advantage formulas on hand-built states (exact values worked
out by hand from Eqs. 2-6 and ADPO's scaling), then one real run on SmolLM2 with the Docker
sandbox into a store, trained for one iteration."""

from __future__ import annotations

import math

import pytest
from _selfplay import train_one_iteration
from agentplay.graphs import agent0
from agentplay.sandbox import SandboxConfig, open_sandbox
from agentplay.trainers import compute_advantages
from conftest import require_docker

from agentplay import EpisodeContext, EpisodeView, RewardGroup
from agentplay.traces import Episode, RewardRecord, RoleTurn

EPS = 1e-4
VIEW = EpisodeView(turns=[], state={}, ctx=EpisodeContext(index=0, seed=0))


def test_parsers_read_the_task_and_the_final_answer():
    assert agent0.parse_task("Let me think.\nTask: How many primes are below 50?") == "How many primes are below 50?"
    with pytest.raises(ValueError, match="no 'Task"):
        agent0.parse_task("How many primes are below 50?")
    with pytest.raises(ValueError, match="shorter"):
        agent0.parse_task("Task: 2+2?")
    assert agent0.parse_answer("so it is 7.\nAnswer: \\boxed{15}") == "15"
    assert agent0.parse_answer("Answer: 15.") == "15"
    # no box and no Answer: line: the last number written
    assert agent0.parse_answer("I ran the code and it printed 15, so 16.0") == "16"
    assert agent0.parse_answer("about 2.5 apples") == "2.5"
    with pytest.raises(ValueError, match="no final answer"):
        agent0.parse_answer("I ran the code and it printed nothing")
    # the vote compares numbers as numbers and text as normalised text
    assert agent0.answer_key("4") == agent0.answer_key("4.0") == agent0.answer_key("$4")
    assert agent0.answer_key("The Blue") == agent0.answer_key("blue")


def test_reward_formulas():
    # Eq. 3: gamma * min(N, C), averaged over the samples: 0.25 * (1 + 4 + 0 + 4) / 4
    assert agent0.tool_reward([1, 4, 0, 9], gamma=0.25, cap=4) == pytest.approx(0.5625)
    assert agent0.tool_reward([], gamma=0.25, cap=4) == 0.0
    # Eq. 5: format * max(0, l_unc R_unc + l_tool R_tool - R_rep)
    assert agent0.composite_reward(0.6, 0.5, 0.25, lambda_unc=1.0, lambda_tool=0.6) == pytest.approx(0.65)
    assert agent0.composite_reward(0.2, 0.0, 0.5, lambda_unc=1.0, lambda_tool=0.6) == 0.0
    assert agent0.composite_reward(1.0, 1.0, 0.0, lambda_unc=1.0, lambda_tool=0.6, formatted=False) == 0.0
    # ADPO as released (core_algos.py, train_qwen3_4b_adpo.sh): t = clip((p - .3) / .5, 0, 1);
    # advantage scale .6 + .4 t, upper clip bound widened by .1 (1 - t)
    assert agent0.ambiguity_scale(0.7) == pytest.approx(0.6 + 0.4 * 0.8)
    assert agent0.ambiguity_scale(0.3) == pytest.approx(0.6) and agent0.ambiguity_scale(0.1) == pytest.approx(0.6)
    assert agent0.ambiguity_scale(0.8) == 1.0 and agent0.ambiguity_scale(1.0) == 1.0
    assert agent0.clip_high_bonus(0.7) == pytest.approx(0.1 * 0.2)
    assert agent0.clip_high_bonus(0.3) == pytest.approx(0.1) and agent0.clip_high_bonus(0.0) == pytest.approx(0.1)
    assert agent0.clip_high_bonus(0.8) == 0.0 and agent0.clip_high_bonus(0.95) == 0.0
    assert agent0.clip_high_bonus(0.55, low=0.5, high=0.5, max_bonus=0.2) == 0.0  # a band of one point: a step
    assert agent0.clip_high_bonus(0.45, low=0.5, high=0.5, max_bonus=0.2) == 0.2
    with pytest.raises(ValueError, match="agreement"):
        agent0.ambiguity_scale(1.5)
    with pytest.raises(ValueError, match="agreement"):
        agent0.clip_high_bonus(-0.1)


def test_repetition_penalty_is_cluster_size_over_batch_size():
    tasks = ["How many primes are there below 100?", "How many primes are there below 200?",
             "Name the weekday of 1 March 2024.", None]
    # tasks 0 and 1 differ in one word (BLEU distance below 0.5): one cluster of 2; B = 4,
    # the unparsed task counted in B
    assert agent0.repetition_penalties(tasks, threshold=0.5, lambda_rep=1.0) == [0.5, 0.5, 0.25, 0.0]
    # a threshold below their distance keeps them apart; lambda scales
    assert agent0.repetition_penalties(tasks, threshold=0.05, lambda_rep=2.0) == [0.5, 0.5, 0.5, 0.0]


def _attempt_state(answers, tool_calls):
    turns = [RoleTurn(role="executor", output=a) for a in answers]
    attempts = [{"turn_id": t.turn_id, "answer": a, "tool_calls": n} for t, a, n in zip(turns, answers, tool_calls)]
    return turns, {"task": "t", "attempts": attempts, "label": "4", "agreement": 0.5}


def test_executor_and_curriculum_rewards_on_a_hand_built_state():
    cfg = agent0.Agent0Config()
    recipe = agent0.build()
    turns, state = _attempt_state(["4", "4.0", "5", None], [1, 3, 0, 5])
    rewards = [recipe.rewards["executor"](t, state, VIEW) for t in turns]
    assert [r.value for r in rewards] == [1.0, 1.0, 0.0, 0.0]  # the unparsed answer disagrees
    assert rewards[0].components == pytest.approx({"agreement": 0.5, "ambiguity_scale": 0.6 + 0.4 * 0.4,
                                                   "clip_high_bonus": 0.1 * 0.6})
    wide = agent0.build(band_low=0.2, band_high=0.6, min_advantage_scale=0.5, max_epsilon_bonus=0.3)
    assert wide.rewards["executor"](turns[0], state, VIEW).components == pytest.approx(
        {"agreement": 0.5, "ambiguity_scale": 0.5 + 0.5 * 0.75, "clip_high_bonus": 0.3 * 0.25})
    curriculum = RoleTurn(role="curriculum", output="t")
    r = recipe.rewards["curriculum"](curriculum, state, VIEW)
    # R_unc = 1 - 2|0.5 - 0.5| = 1; R_tool = 0.25 * (1 + 3 + 0 + 4) / 4 = 0.5; 1 + 0.6 * 0.5
    assert r.value == pytest.approx(1.3)
    assert r.components == pytest.approx({"format": 1.0, "uncertainty": 1.0, "tool": 0.5, "agreement": 0.5})
    state["agreement"] = 0.8  # R_unc = 1 - 2 * 0.3 = 0.4
    assert recipe.rewards["curriculum"](curriculum, state, VIEW).value == pytest.approx(0.4 + cfg.lambda_tool * 0.5)
    unparsed = RoleTurn(role="curriculum", parse_error="format: no 'Task: ...' line")
    assert recipe.rewards["curriculum"](unparsed, state, VIEW).value == 0.0


def test_group_repetition_penalty_goes_through_the_max():
    recipe = agent0.build()
    fn = recipe.whole_group_rewards["curriculum"]
    bases = [1.3, 0.2, 0.9, 0.0]
    turns = [RoleTurn(role="curriculum", output=o, parse_error=None if o else "format: no task",
                      reward=RewardRecord(value=b)) for o, b in zip(
        ["How many primes are there below 100?", "How many primes are there below 200?",
         "Name the weekday of 1 March 2024.", None], bases)]
    deltas = fn(RewardGroup(role="curriculum", group_id="g", turns=turns, episodes=[]))
    # R_rep = 2/4, 2/4, 1/4, 0: finals max(0, 1.3 - .5) = .8, max(0, .2 - .5) = 0, .9 - .25 = .65, 0
    assert [d.value for d in deltas] == pytest.approx([0.8 - 1.3, 0.0 - 0.2, 0.65 - 0.9, 0.0])
    assert [d.components["repetition"] for d in deltas] == [0.5, 0.5, 0.25, 0.0]


def _executor_turn(group: str, reward: float, p: float) -> RoleTurn:
    return RoleTurn(role="executor", group_id=group, prompt_token_ids=[1, 2], token_ids=[5, 6, 7], mask=[1, 1, 1],
                    logprobs=[-0.1] * 3, reward=RewardRecord(value=reward, components={
                        "agreement": p, "ambiguity_scale": agent0.ambiguity_scale(p),
                        "clip_high_bonus": agent0.clip_high_bonus(p)}))


def test_adpo_advantages_are_scaled_by_agreement_and_filtered_to_the_band():
    recipe = agent0.build()
    in_band = [_executor_turn("g1", r, 0.5) for r in (1.0, 1.0, 0.0, 0.0)]
    too_easy = [_executor_turn("g2", r, 0.9) for r in (1.0, 0.0)]  # p 0.9 > 0.8: not trained on
    episodes = [Episode(episode_id="a", index=0, turns=in_band), Episode(episode_id="b", index=1, turns=too_easy)]
    samples, stats = compute_advantages(episodes, estimators=recipe.advantages, filters=recipe.filters)
    # GRPO: mean .5, unbiased std sqrt(4 * .25 / 3); times s(.5) = .6 + .4 * .4 = .76
    std = math.sqrt(1 / 3)
    assert [s.advantage for s in samples] == pytest.approx([0.76 * 0.5 / (std + EPS)] * 2 + [-0.76 * 0.5 / (std + EPS)] * 2,
                                                           abs=1e-12)
    assert [s.clip_high_bonus for s in samples] == pytest.approx([0.06] * 4)  # ε_high + .1 * (1 - .4) in the loss
    assert stats.filtered == {"executor": 2}


@pytest.mark.timeout(900)
async def test_one_real_iteration_on_smollm2_with_the_docker_sandbox(tmp_path):
    require_docker()
    sandbox = open_sandbox(config=SandboxConfig(backend="docker", pool_min=1, pool_max=2))
    k, n = 2, 2
    recipe = agent0.build(sandbox=sandbox, group_k=k, n_executors=n, curriculum_max_tokens=48,
                          executor_max_tokens=48, max_tool_turns=1)
    try:
        # stored ok, token-exact, and one optimizer step: some group had reward variance (two
        # executor answers that differ give p = 0.5, inside the band)
        run = await train_one_iteration(recipe, tmp_path, run_name="a0", episodes=k)
    finally:
        await sandbox.aclose()
    episodes, m = run.episodes, run.metrics
    curriculum = [t for ep in episodes for t in ep.turns if t.role == "curriculum"]
    assert len(curriculum) == k and len({t.group_id for t in curriculum}) == 1  # one GroupBy.seed(k) group
    for ep in episodes:
        executors = [t for t in ep.turns if t.role == "executor"]
        parsed = ep.metrics["valid_proposal"] == 1.0
        assert len(executors) == (n if parsed else 0)
        assert len({t.group_id for t in executors}) <= 1
        for t in executors:
            assert set(t.reward.components) == {"agreement", "ambiguity_scale", "clip_high_bonus"}
            assert t.reward.components["agreement"] == ep.metrics["agreement"]
    assert any(ep.metrics["valid_proposal"] for ep in episodes), "no task parsed: the run exercised no executor"
    for t in curriculum:  # the group's repetition penalty was applied before storing
        assert "repetition" in t.reward.components or t.parse_error
    executors = [t for ep in episodes for t in ep.turns if t.role == "executor"]
    out_of_band = sum(not 0.3 <= t.reward.components["agreement"] <= 0.8 for t in executors)
    assert m.get("filtered/executor", 0.0) == out_of_band
    assert {"reward/curriculum", "reward/executor", "time/rollout_s"} <= set(m)
