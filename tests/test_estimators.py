"""Advantage estimators per role and sample filters, on hand-built traces: exact values.

Every expected number below is worked out by hand from the estimator's formula
(see `agentplay.Advantage`), not read back from the code.
"""

from __future__ import annotations

import math

import pytest
from agentplay.trainers import compute_advantages
from pydantic import ValidationError

from agentplay import Advantage, SampleFilter
from agentplay.traces import Episode, RewardRecord, RoleTurn

EPS = 1e-4


def _turn(role: str, group: str, reward: float, **components: float) -> RoleTurn:
    return RoleTurn(role=role, group_id=group, prompt_token_ids=[1, 2], token_ids=[5, 6, 7], mask=[1, 1, 1],
                    logprobs=[-0.1] * 3, reward=RewardRecord(value=reward, components=dict(components)))


def _adv(samples, role: str) -> list[float]:
    return [s.advantage for s in samples if s.turn.role == role]


def _two_groups() -> list[Episode]:
    return [
        Episode(episode_id="a", index=0, turns=[_turn("s", "g1", 1.0), _turn("s", "g1", 0.0)]),
        Episode(episode_id="b", index=1, turns=[_turn("s", "g2", 1.0), _turn("s", "g2", 1.0)]),
    ]


def test_dr_grpo_centres_without_scaling_and_is_the_unscaled_default():
    chosen, _ = compute_advantages(_two_groups(), estimators={"s": Advantage.dr_grpo()})
    default, _ = compute_advantages(_two_groups(), scale_rewards=False)
    assert _adv(chosen, "s") == [0.5, -0.5]  # g2 has no variance: dropped
    assert _adv(default, "s") == [0.5, -0.5]


def test_reinforce_pp_normalises_over_the_role_batch():
    samples, stats = compute_advantages(_two_groups(), estimators={"s": Advantage.reinforce_pp()})
    # rewards 1,0,1,1: batch mean .75, unbiased std sqrt((3 * .25^2 + .75^2) / 3) = .5
    assert _adv(samples, "s") == pytest.approx([0.25 / (0.5 + EPS), -0.75 / (0.5 + EPS),
                                                0.25 / (0.5 + EPS), 0.25 / (0.5 + EPS)], abs=1e-12)
    assert stats.dropped_groups == 0  # without a group baseline, groups do not enter the formula


def test_reinforce_pp_with_group_baseline_divides_by_the_batch_std():
    samples, stats = compute_advantages(_two_groups(), estimators={"s": Advantage.reinforce_pp(group_baseline=True)})
    # g1 centred: +.5, -.5 (g2 centred is all zero: dropped); batch std of (.5, -.5) = sqrt(.5)
    std = math.sqrt(0.5)
    assert _adv(samples, "s") == pytest.approx([0.5 / (std + EPS), -0.5 / (std + EPS)], abs=1e-12)
    assert stats.dropped_groups == 1


def _game(index: int, env: str, r0: float, r1: float, turns0: int = 2) -> Episode:
    turns = [_turn("p0", f"e{index}/p0", r0) for _ in range(turns0)] + [_turn("p1", f"e{index}/p1", r1)]
    return Episode(episode_id=f"g{index}", run_id="run", index=index, metadata={"env": env}, turns=turns)


def test_rae_subtracts_the_role_baseline_per_environment_then_updates_it():
    # stored out of order on purpose: RAE walks episodes by index
    games = [_game(1, "ttt", -1.0, 1.0), _game(0, "ttt", 1.0, -1.0), _game(2, "kuhn", 1.0, -1.0)]
    rae = Advantage.rae(decay=0.9)
    samples, stats = compute_advantages(games, estimators={"p0": rae, "p1": rae})
    # p0 on ttt: b=0 -> game 0 adv +1 (both turns), b <- .9*0 + .1*1 = .1; game 1 adv -1 - .1 = -1.1,
    #            b <- .9*.1 + .1*(-1) = -.01. p0 on kuhn: b=0 -> adv +1, b <- .1
    assert _adv(samples, "p0") == pytest.approx([1.0, 1.0, -1.1, -1.1, 1.0, 1.0], abs=1e-12)
    # p1 on ttt: game 0 adv -1, b <- -.1; game 1 adv 1 + .1 = 1.1, b <- .9*(-.1) + .1 = .01; kuhn: -1, b <- -.1
    assert _adv(samples, "p1") == pytest.approx([-1.0, 1.1, -1.0], abs=1e-12)
    assert stats.rae_baselines["p0"] == pytest.approx({"ttt": -0.01, "kuhn": 0.1}, abs=1e-12)
    assert stats.rae_baselines["p1"] == pytest.approx({"ttt": 0.01, "kuhn": -0.1}, abs=1e-12)


def test_rae_continues_from_given_baselines_without_changing_them():
    given = {"p0": {"ttt": 0.5}}
    samples, stats = compute_advantages([_game(0, "ttt", 1.0, -1.0)], estimators={"p0": Advantage.rae(decay=0.5)},
                                        rae_baselines=given)
    assert _adv(samples, "p0") == [0.5, 0.5]  # 1 - .5
    assert stats.rae_baselines["p0"]["ttt"] == 0.75  # .5 * .5 + .5 * 1
    assert given == {"p0": {"ttt": 0.5}}  # the caller's copy is untouched (a failed step must not move it)
    # split across two calls == one call over both episodes: what makes resume exact
    first, s1 = compute_advantages([_game(0, "ttt", 1.0, -1.0)], estimators={"p0": Advantage.rae()})
    second, s2 = compute_advantages([_game(1, "ttt", -1.0, 1.0)], estimators={"p0": Advantage.rae()},
                                    rae_baselines=s1.rae_baselines)
    both, s12 = compute_advantages([_game(0, "ttt", 1.0, -1.0), _game(1, "ttt", -1.0, 1.0)],
                                   estimators={"p0": Advantage.rae()})
    assert _adv(first, "p0") + _adv(second, "p0") == _adv(both, "p0")
    assert s2.rae_baselines == s12.rae_baselines


def test_rae_drops_exact_zero_advantages_and_keeps_them_on_request():
    games = [_game(0, "ttt", 0.0, 0.0)]  # a draw against a zero baseline: nothing to learn
    dropped, stats = compute_advantages(games, estimators={"p0": Advantage.rae()})
    kept, _ = compute_advantages(games, estimators={"p0": Advantage.rae(drop_zero=False)})
    assert _adv(dropped, "p0") == [] and stats.dropped_zero_advantage == 2
    assert _adv(kept, "p0") == [0.0, 0.0]


def test_scale_component_multiplies_the_advantage():
    episodes = [Episode(episode_id="a", turns=[_turn("x", "g", 1.0, ambiguity=0.5), _turn("x", "g", 0.0, ambiguity=0.5)])]
    samples, _ = compute_advantages(episodes, estimators={"x": Advantage.grpo(scale_component="ambiguity")})
    std = math.sqrt(0.5)
    assert _adv(samples, "x") == pytest.approx([0.5 * 0.5 / (std + EPS), -0.5 * 0.5 / (std + EPS)], abs=1e-12)
    with pytest.raises(ValueError, match="reward component 'missing'"):
        compute_advantages(episodes, estimators={"x": Advantage.grpo(scale_component="missing")})


def test_clip_high_component_gives_each_sample_its_bonus():
    episodes = [Episode(episode_id="a", turns=[_turn("x", "g", 1.0, bonus=0.1), _turn("x", "g", 0.0, bonus=0.04)]),
                Episode(episode_id="b", turns=[_turn("y", "h", 1.0, bonus=0.1), _turn("y", "h", 0.0, bonus=0.1)])]
    samples, _ = compute_advantages(episodes, estimators={"x": Advantage.grpo(clip_high_component="bonus")})
    assert {(s.turn.role, s.reward): s.clip_high_bonus for s in samples} == {
        ("x", 1.0): 0.1, ("x", 0.0): 0.04, ("y", 1.0): 0.0, ("y", 0.0): 0.0}  # y declared none: the batch bound
    bad = [Episode(episode_id="c", turns=[_turn("x", "g", 1.0, bonus=-0.1), _turn("x", "g", 0.0, bonus=0.1)])]
    with pytest.raises(ValueError, match="reward component 'bonus', which must be a finite number >= 0"):
        compute_advantages(bad, estimators={"x": Advantage.grpo(clip_high_component="bonus")})
    with pytest.raises(ValueError, match="reward component 'missing'"):
        compute_advantages(episodes, estimators={"x": Advantage.dr_grpo(clip_high_component="missing")})


def test_band_filter_keeps_turns_inside_and_counts_the_rest_per_role():
    episodes = [
        Episode(episode_id="a", index=0, turns=[_turn("sol", "q1", 1.0, agreement=0.5), _turn("sol", "q1", 0.0, agreement=0.5)]),
        Episode(episode_id="b", index=1, turns=[_turn("sol", "q2", 1.0, agreement=0.9), _turn("sol", "q2", 0.0, agreement=0.9)]),
        Episode(episode_id="c", index=2, turns=[_turn("sol", "q3", 1.0), _turn("pro", "p", 1.0, agreement=0.0),
                                                _turn("pro", "p", 0.0, agreement=0.0)]),
    ]
    band = SampleFilter.band("agreement", 0.3, 0.8)
    samples, stats = compute_advantages(episodes, filters={"sol": band})
    std = math.sqrt(0.5)
    assert _adv(samples, "sol") == pytest.approx([0.5 / (std + EPS), -0.5 / (std + EPS)], abs=1e-12)
    assert stats.filtered == {"sol": 3}  # two outside the band, one without the component
    assert len(_adv(samples, "pro")) == 2  # other roles are not filtered
    assert band.keeps({"agreement": 0.3}) and band.keeps({"agreement": 0.8}) and not band.keeps({})


def test_bad_declarations_name_the_field():
    with pytest.raises(ValidationError, match="low .* must not exceed high"):
        SampleFilter.band("agreement", 0.8, 0.3)
    with pytest.raises(ValidationError, match="decay"):
        Advantage.rae(decay=1.0)
