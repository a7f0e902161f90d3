"""SPIRAL: outcome rewards and RAE advantages on hand-built games (exact numbers from the
formulas), the graph on SmolLM2 (self-play with one training iteration, and against a fixed
policy), and RAE baselines that survive `agentplay train` being killed and resumed."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _trace_checks import check_token_exact
from agentplay.graphs import spiral
from agentplay.trainers import SelfPlayTrainer, TrainConfig, compute_advantages, rollout_run_id

from agentplay import RunConfig, resolve_model, run_recipe
from agentplay.games import KuhnPoker, KuhnState, Match, TicTacToe
from agentplay.models import DEFAULT_MODEL_SPEC, load_model
from agentplay.traces import Episode, RewardRecord, RoleTurn, TraceStore

CFG = spiral.SpiralConfig()


def _rewards(match: Match, cfg: spiral.SpiralConfig = CFG) -> tuple[float, float]:
    state = {"match": match}
    return tuple(spiral.seat_reward(RoleTurn(role=f"player_{s}"), state, None, cfg=cfg).value for s in (0, 1))


def _ttt(*cells: int) -> Match:
    m = Match.start(TicTacToe(), random.Random(0))
    for i, c in enumerate(cells):
        m.play(i % 2, f"[{c}]")
    return m


def test_outcome_rewards_per_seat():
    assert _rewards(_ttt(0, 3, 1, 4, 2)) == (1.0, -1.0)  # X takes the top row
    assert _rewards(_ttt(4, 0, 8, 2, 1, 7, 6, 3, 5)) == (0.0, 0.0)  # full board, no line
    illegal = _ttt(4, 4)  # O plays the taken centre
    assert _rewards(illegal) == (0.0, -1.0)
    assert _rewards(illegal, CFG.model_copy(update={"illegal_opponent_reward": 1.0})) == (1.0, -1.0)
    silent = Match.start(KuhnPoker(), random.Random(0))
    silent.play(0, "I would rather not say anything at all today")  # names no move: illegal
    assert _rewards(silent) == (-1.0, 0.0)
    kuhn = Match(game=KuhnPoker(), state=KuhnState(cards=("J", "K")))
    kuhn.play(0, "[bet]")
    kuhn.play(1, "[fold]")
    assert _rewards(kuhn) == (1.0, -1.0)  # the J bluffed the K off the pot: +1 chip, a win
    r = spiral.seat_reward(RoleTurn(role="player_1"), {"match": kuhn}, None, cfg=CFG)
    assert r.components == {"payoff": -1.0, "illegal": 0.0} and "loss" in r.reason


def _episode(index: int, env: str, r0: float, r1: float) -> Episode:
    turns = [RoleTurn(role=f"player_{s}", group_id=f"e{index}/{s}", prompt_token_ids=[1], token_ids=[2, 3],
                      mask=[1, 1], logprobs=[-0.5, -0.5], reward=RewardRecord(value=r))
             for s, r in ((0, r0), (1, r1), (0, r0))]
    return Episode(episode_id=f"e{index}", run_id="r", index=index, metadata={"env": env}, turns=turns)


def test_rae_advantages_of_the_recipe_on_hand_built_games():
    recipe = spiral.build()
    games = [_episode(0, "tic_tac_toe", 1.0, -1.0), _episode(1, "tic_tac_toe", -1.0, 1.0),
             _episode(2, "kuhn_poker", 1.0, 0.0)]
    samples, stats = compute_advantages(games, estimators=recipe.advantages)
    adv = {(s.episode_id, s.turn.role): s.advantage for s in samples}
    # α = .95. player_0, tic-tac-toe: A = 1 - 0 = 1; b = .05; then A = -1 - .05 = -1.05; b = .95*.05 - .05 = -.0025
    assert adv[("e0", "player_0")] == 1.0 and adv[("e1", "player_0")] == pytest.approx(-1.05, abs=1e-12)
    # player_1: A = -1; b = -.05; A = 1 + .05 = 1.05; b = .95*(-.05) + .05 = .0025
    assert adv[("e0", "player_1")] == -1.0 and adv[("e1", "player_1")] == pytest.approx(1.05, abs=1e-12)
    # Kuhn poker has baselines of its own, starting at 0; player_1's 0 - 0 is dropped
    assert adv[("e2", "player_0")] == 1.0 and ("e2", "player_1") not in adv
    assert stats.rae_baselines["player_0"] == pytest.approx({"tic_tac_toe": -0.0025, "kuhn_poker": 0.05}, abs=1e-12)
    assert stats.rae_baselines["player_1"] == pytest.approx({"tic_tac_toe": 0.0025, "kuhn_poker": 0.0}, abs=1e-12)
    assert len(samples) == 3 + 3 + 2  # every turn of a seat carries its game's advantage (two of player_0's each)


def _check_game_episode(ep: Episode, tokenizer) -> None:
    assert ep.status == "ok", ep.error
    moves, outcome = ep.metadata["moves"], ep.metadata["outcome"]
    assert ep.metadata["env"] in ("tic_tac_toe", "kuhn_poker") and len(moves) == ep.metrics["moves"]
    for t in ep.turns:
        check_token_exact(t, tokenizer)
        seat = int(t.role[-1])
        expected = {"win": 1.0, "loss": -1.0, "draw": 0.0, "illegal": -1.0, "opponent_illegal": 0.0}[outcome[seat]]
        assert t.reward.value == expected and t.group_id.endswith(f"/{t.role}")


async def test_self_play_runs_into_a_store_and_trains_one_iteration_with_rae(tmp_path):
    served = load_model(DEFAULT_MODEL_SPEC)
    try:
        store = TraceStore(tmp_path / "t.db")
        recipe = spiral.build(games=["tic_tac_toe", "kuhn_poker"], max_tokens=24)
        cfg = TrainConfig(recipe="spiral", iterations=1, episodes_per_iteration=4, concurrency=4,
                          store=tmp_path / "t.db", output_dir=tmp_path / "out", run_name="sp", report_to=[],
                          learning_rate=1e-5, micro_batch_size=8)
        summary = await SelfPlayTrainer(cfg, recipe=recipe, served=served, store=store).run()
        tokenizer = (await resolve_model(DEFAULT_MODEL_SPEC)).tokenizer
        episodes = sorted(store.episodes(rollout_run_id("sp", 0)), key=lambda e: e.index)
        assert [e.metadata["env"] for e in episodes] == ["tic_tac_toe", "kuhn_poker"] * 2
        for ep in episodes:
            _check_game_episode(ep, tokenizer)
            # one turn per model move, seats alternating from seat 0; the game ended on the last one
            assert [t.role for t in ep.turns] == [f"player_{i % 2}" for i in range(len(ep.metadata["moves"]))]
        m = {p.name: p.value for p in store.metrics("sp")}
        assert summary.last_iteration == 0 and m["optimizer_step"] == 1 and m["samples"] > 0
        _, stats = compute_advantages(episodes, estimators=recipe.advantages)
        for role, envs in stats.rae_baselines.items():
            for env, b in envs.items():
                assert m[f"rae_baseline/{role}/{env}"] == pytest.approx(b, abs=1e-12)
        state = json.loads((tmp_path / "out" / "checkpoint-00000" / "state.json").read_text())
        assert state["rae_baselines"] == stats.rae_baselines  # saved with the weights
        store.close()
    finally:
        await served.aclose()


async def test_a_fixed_policy_plays_one_seat_for_evaluation(tmp_path):
    recipe = spiral.build(games=["tic_tac_toe"], opponent="fixed", max_tokens=24)
    with TraceStore(tmp_path / "t.db") as store:
        summary = await run_recipe(recipe, RunConfig(episodes=2, concurrency=2, progress=False, run_id="ev"),
                                   store=store)
        episodes = sorted(store.episodes("ev"), key=lambda e: e.index)
    assert summary.completed == 2
    for ep in episodes:  # the model plays seat i % 2; the policy's moves have no turns
        model_seat = ep.index % 2
        assert {t.role for t in ep.turns} == {f"player_{model_seat}"}
        assert len(ep.turns) == sum(1 for i in range(len(ep.metadata["moves"])) if i % 2 == model_seat)
        assert ep.metrics["win"] + ep.metrics["loss"] + ep.metrics["draw"] == 1.0
        if model_seat == 1:  # the fixed strategy opens in the centre
            assert ep.metadata["moves"][0] == "[4]"


RESUME_ITERATIONS = 3


def _train_cmd(tmp: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "agentplay.cli", "train", "spiral", "--iterations", str(RESUME_ITERATIONS),
            "--episodes-per-iteration", "4", "--concurrency", "4", "--store", str(tmp / "t.db"),
            "--output-dir", str(tmp / "out"), "--run-name", "r", "--lora", "--learning-rate", "1e-3",
            "--set", 'games=["kuhn_poker", "tic_tac_toe"]', "--set", "max_tokens=12", *extra]


def test_rae_baselines_survive_a_kill_and_resume_exactly(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "AGENTPLAY_TORCH_THREADS": "1"}
    first = subprocess.Popen(_train_cmd(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 400
    state0 = tmp_path / "out" / "checkpoint-00000" / "state.json"
    while not state0.exists():
        assert first.poll() is None, f"train exited early: {first.communicate()[1].decode()[-2000:]}"
        assert time.time() < deadline, "no checkpoint within the time limit"
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    saved = json.loads(state0.read_text())["rae_baselines"]
    assert any(b != 0.0 for envs in saved.values() for b in envs.values())  # something to lose on resume

    done = subprocess.run(_train_cmd(tmp_path, "--resume"), env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert 1 <= summary["first_iteration"] <= RESUME_ITERATIONS - 1  # resumed after a checkpoint, not from 0
    assert summary["last_iteration"] == RESUME_ITERATIONS - 1

    # the baselines a never-killed run would hold: RAE folded over every iteration's stored games
    recipe = spiral.build(games=["kuhn_poker", "tic_tac_toe"])
    with TraceStore(tmp_path / "t.db") as store:
        baselines: dict = {}
        for it in range(RESUME_ITERATIONS):
            episodes = list(store.episodes(rollout_run_id("r", it)))
            assert len(episodes) == 4
            _, stats = compute_advantages(episodes, estimators=recipe.advantages, rae_baselines=baselines)
            baselines = stats.rae_baselines
            if it == 0:
                assert baselines == saved
    final = json.loads((tmp_path / "out" / f"checkpoint-{RESUME_ITERATIONS - 1:05d}" / "state.json").read_text())
    assert final["rae_baselines"] == baselines
