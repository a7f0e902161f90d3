"""GRPO advantages on hand-built traces: exact values, per-role groups, drops, masks."""

from __future__ import annotations

import math

import pytest
import torch

from agentplay.traces import Episode, RewardRecord, RoleTurn
from agentplay.trainers import compute_advantages, make_micro_batches

EPS = 1e-4


def _turn(role: str, group: str | None, reward: float | None, *, n: int = 6, mask: list[int] | None = None,
          exact: bool = True) -> RoleTurn:
    return RoleTurn(
        role=role, group_id=group, prompt_token_ids=[1, 2, 3], token_ids=list(range(10, 10 + n)),
        mask=mask if mask is not None else [1] * n, logprobs=[-0.5] * n, token_exact=exact,
        reward=RewardRecord(value=reward) if reward is not None else None,
    )


def _episodes() -> list[Episode]:
    # Both roles use the group id "g1": they must still be normalised separately.
    return [
        Episode(episode_id="e0", turns=[_turn("proposer", "g1", 0.5), _turn("solver", "g1", 1.0), _turn("solver", "g1", 0.0)]),
        Episode(episode_id="e1", turns=[_turn("proposer", "g1", 0.25), _turn("solver", "g1", 0.0), _turn("solver", "g1", 1.0)]),
        Episode(episode_id="e2", turns=[_turn("solver", "g2", 1.0), _turn("solver", "g2", 1.0)]),  # zero variance
    ]


def _by_role(samples):
    out: dict[str, list[float]] = {}
    for s in samples:
        out.setdefault(s.turn.role, []).append(s.advantage)
    return out


def test_advantages_are_normalised_per_role_and_group_exactly():
    samples, stats = compute_advantages(_episodes())
    adv = _by_role(samples)
    solver_std = math.sqrt(1 / 3)  # rewards 1,0,0,1: mean .5, unbiased std
    proposer_std = math.sqrt(2 * 0.125**2)  # rewards .5,.25: mean .375
    assert adv["solver"] == pytest.approx([0.5 / (solver_std + EPS), -0.5 / (solver_std + EPS),
                                          -0.5 / (solver_std + EPS), 0.5 / (solver_std + EPS)], abs=1e-12)
    assert adv["proposer"] == pytest.approx([0.125 / (proposer_std + EPS), -0.125 / (proposer_std + EPS)], abs=1e-12)
    assert stats.groups == 3 and stats.dropped_groups == 1
    assert stats.dropped_group_fraction == pytest.approx(1 / 3)
    assert len(samples) == 6


def test_unscaled_advantages_and_role_weights():
    samples, _ = compute_advantages(_episodes(), scale_rewards=False, role_weights={"proposer": 2.0, "solver": 0.5})
    adv = _by_role(samples)
    assert adv["solver"] == pytest.approx([0.25, -0.25, -0.25, 0.25], abs=1e-12)
    assert adv["proposer"] == pytest.approx([0.25, -0.25], abs=1e-12)


def test_zero_variance_groups_can_be_kept_with_zero_advantage():
    samples, stats = compute_advantages(_episodes(), zero_variance="keep")
    kept = [s.advantage for s in samples if s.turn.group_id == "g2"]
    assert kept == [0.0, 0.0] and stats.dropped_groups == 0


def test_unusable_turns_are_counted_not_trained():
    eps = [Episode(turns=[
        _turn("solver", None, 1.0),                 # no group
        _turn("solver", "g", None),                 # no reward
        _turn("solver", "g", 1.0, exact=False),     # tokens not exact
        _turn("solver", "g", 0.0, mask=[0] * 6),    # nothing the model wrote
        _turn("judge", "g", 1.0), _turn("judge", "g", 0.0),
    ])]
    samples, stats = compute_advantages(eps, role_weights={"judge": 0.0})
    assert samples == []
    assert (stats.skipped_no_group, stats.skipped_no_reward, stats.skipped_no_tokens, stats.skipped_zero_weight) == (1, 1, 2, 2)


def test_tool_tokens_are_masked_in_the_batch():
    mask = [1, 1, 0, 0, 0, 1]  # two model tokens, three tool-output tokens, one model token
    eps = [Episode(turns=[_turn("solver", "g", 1.0, mask=mask), _turn("solver", "g", 0.0, n=4)])]
    samples, _ = compute_advantages(eps)
    (mb,) = make_micro_batches(samples, micro_batch_size=4, max_completion_length=64, pad_token_id=0)
    rows = {len(s.turn.token_ids): i for i, s in enumerate(sorted(samples, key=lambda s: len(s.turn.token_ids)))}
    long_row = rows[6]
    assert mb.inputs["tool_mask"][long_row].tolist() == mask
    assert mb.inputs["completion_mask"][long_row].tolist() == [1] * 6
    short = 1 - long_row
    assert mb.inputs["tool_mask"][short].tolist() == [1, 1, 1, 1, 0, 0]  # padding is masked too
    assert mb.inputs["prompt_mask"].tolist() == [[1, 1, 1], [1, 1, 1]]
    assert float(mb.inputs["num_items_in_batch"]) == 3 + 4
    assert torch.equal(mb.missing_old_logps, torch.tensor([False, False]))
