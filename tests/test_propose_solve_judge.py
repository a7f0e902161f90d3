"""Propose-solve-judge end to end with the real SmolLM2 and a real SQLite store, plus the
reward arithmetic checked on hand-made states (MAE mix, majority mode, the pool)."""

from __future__ import annotations

import random

import pytest
from _trace_checks import check_token_exact
from agentplay.graphs import propose_solve_judge as psj

from agentplay import EpisodeContext, EpisodeView, RunConfig, resolve_model, run_episode, run_recipe
from agentplay.models import DEFAULT_MODEL_SPEC
from agentplay.traces import RoleTurn, TraceStore

TINY = {"n_questions": 2, "n_solvers": 2, "proposer_max_tokens": 32, "solver_max_tokens": 24, "judge_max_tokens": 6}


async def test_episodes_are_stored_rewarded_and_token_exact(tmp_path):
    pool = psj.QuestionPool()
    pool.add("What is 17 + 25?", 8.0)
    recipe = psj.build(pool=pool, pool_reuse_prob=1.0, quality_bar=0.0, **TINY)
    store = TraceStore(tmp_path / "traces.db")
    summary = await run_recipe(recipe, RunConfig(episodes=2, concurrency=2, progress=False), store=store)
    assert summary.completed == 2 and summary.errors == 0
    tokenizer = (await resolve_model(DEFAULT_MODEL_SPEC)).tokenizer
    episodes = list(store.episodes(summary.run_id))
    assert len(episodes) == 2
    for ep in episodes:
        assert ep.status == "ok", ep.error
        roles = [t.role for t in ep.turns]
        assert roles.count("proposer") == 2
        # the pooled question is always posed (reuse prob 1), so solvers and judges always run
        assert ep.metrics["pooled"] == 1.0 and roles.count("solver") >= 2 and "judge" in roles
        for turn in ep.turns:
            check_token_exact(turn, tokenizer)
            assert turn.reward is not None and turn.reward.reason
        for t in ep.turns:
            if t.role == "proposer" and not t.parse_error:
                c = t.reward.components
                mix = 0.5 * c["quality"] + 0.4 * c["difficulty"] + 0.1 * c["format"]
                assert t.reward.value == pytest.approx(mix + c.get("episode", 0.0))
            if t.role == "judge":
                assert t.reward.value == (0.0 if t.parse_error else 1.0)
            if t.role == "solver":
                assert 0.0 <= t.reward.value <= 1.0
        # quality_bar 0: every new question the judge scored enters the pool
        quality_turns = [t for t in ep.turns if t.role == "judge"
                         and any("Rate this question" in str(m.get("content")) for m in t.messages)]
        assert len(quality_turns) == roles.count("proposer") - sum(bool(t.parse_error) for t in ep.turns
                                                                   if t.role == "proposer")
        assert ep.metrics["admitted"] == sum(not t.parse_error for t in quality_turns)
        assert ep.metadata["pooled"] == ["What is 17 + 25?"]
        assert len(ep.metadata["admitted"]) == ep.metrics["admitted"] and ep.metadata["pool_size"] >= 1
    assert len(pool) >= 1 + max(ep.metrics["admitted"] for ep in episodes)
    store.close()


async def test_malformed_output_gets_zero_with_a_reason():
    recipe = psj.build(n_questions=2, n_solvers=2, proposer_max_tokens=1, pool_reuse_prob=0.0)
    ep = await run_episode(recipe.compile(), index=0, seed=1)
    assert ep.status == "ok", ep.error
    proposers = [t for t in ep.turns if t.role == "proposer"]
    assert len(proposers) == 2 and len(ep.turns) == 2  # no question: nothing to solve or judge
    for t in proposers:
        assert t.reward.value == 0.0 and "no question" in t.reward.reason
    assert ep.metrics["valid_proposal"] == 0.0


def _turn(role: str, output=None, parse_error=None) -> RoleTurn:
    return RoleTurn(role=role, output=output, parse_error=parse_error)


def _state(answers, scores, quality=7.0):
    p = _turn("proposer", {"question": "What is 2 + 2?", "format": 1.0})
    solvers = [_turn("solver", a) for a in answers]
    state = {
        "questions": [{"text": "What is 2 + 2?", "format": 1.0, "source": "proposal", "turn_id": p.turn_id}],
        "solver_question": {s.turn_id: 0 for s in solvers},
        "answers": {s.turn_id: a for s, a in zip(solvers, answers)},
        "quality": {0: {"score": quality, "reason": f"judge score {quality}/10"}},
        "answer_scores": {s.turn_id: {"score": sc, "reason": "x"} for s, sc in zip(solvers, scores)},
        "judge_kind": {}, "admitted": [0], "pooled": [],
    }
    return p, solvers, state


def test_reward_arithmetic_on_known_states():
    recipe = psj.build(pool_reuse_prob=0.0)
    view = EpisodeView(turns=[], state={}, ctx=EpisodeContext(index=0, seed=0))
    p, solvers, state = _state(["4", "5", "4", None], [10.0, 0.0, None, None])
    rp = recipe.rewards["proposer"](p, state, view)
    # quality 0.7; two scored answers (1.0, 0.0) -> difficulty 0.5; format 1
    assert rp.value == pytest.approx(0.5 * 0.7 + 0.4 * 0.5 + 0.1)
    assert rp.components["difficulty"] == pytest.approx(0.5)
    rs = [recipe.rewards["solver"](s, state, view).value for s in solvers]
    assert rs == [1.0, 0.0, 0.0, 0.0]
    assert recipe.rewards["solver"](solvers[2], state, view).reason == "x"

    majority = psj.build(solver_reward="majority", pool_reuse_prob=0.0)
    rm = [majority.rewards["solver"](s, state, view) for s in solvers]
    assert [r.value for r in rm] == [1.0, 0.0, 1.0, 0.0]
    assert rm[0].components["agreement"] == 0.5
    # difficulty under majority: scores 1, 0, 1 (None answer unscored) -> 1 - 2/3
    assert majority.rewards["proposer"](p, state, view).components["difficulty"] == pytest.approx(1 / 3)


def test_repetition_penalty_and_pool():
    recipe = psj.build(repetition_weight=0.5, pool_reuse_prob=0.0)
    turns = [_turn("proposer", {"question": q, "format": 1.0}) for q in
             ("What is 12 times 3?", "what is 12 times 3", "Name a prime above 90.")]
    turns.append(_turn("proposer", parse_error="no question"))
    assert recipe.episode_rewards["proposer"](turns) == [-0.25, -0.25, 0.0, 0.0]
    pool = psj.QuestionPool(max_size=2)
    for q in ("a?", "a?", "b?", "c?"):
        pool.add(q, 8.0)
    assert [i["question"] for i in pool.items()] == ["b?", "c?"]
    assert pool.sample(random.Random(0))["question"] in {"b?", "c?"}
    assert psj.QuestionPool().sample(random.Random(0)) is None
    with pytest.raises(ValueError, match="quality_bar"):
        psj.build(quality_bar=11)
