"""R-Zero: the paper's reward formulas on hand-built states, then a real run on SmolLM2 into a
store with one training iteration (groups, token ids, the group-level repetition penalty)."""

from __future__ import annotations

import pytest
from _trace_checks import check_token_exact
from agentplay.graphs import r_zero
from agentplay.trainers import SelfPlayTrainer, TrainConfig, rollout_run_id

from agentplay import RewardGroup, resolve_model
from agentplay.models import DEFAULT_MODEL_SPEC, load_model
from agentplay.rewards import bleu_cluster_penalty, bleu_clusters, bleu_distance
from agentplay.traces import Episode, RewardRecord, RoleTurn, TraceStore


def test_bleu_distance_and_clusters_follow_the_formulas():
    # 5 words, one differs at the end: n-gram precisions 4/5, 3/4, 2/3, 1/2, no brevity penalty
    assert bleu_distance("What is two plus two", "what is two PLUS three") == pytest.approx(
        1 - (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25)
    assert bleu_distance("a b c", "A b c") == 0.0 and bleu_distance("", "a") == 1.0
    batch = ["What is two plus two", "what is two plus three", "Name the largest planet of the solar system",
             "How many legs does a spider have"]
    labels = bleu_clusters(batch)
    assert labels[0] == labels[1] and len({labels[0], labels[2], labels[3]}) == 3
    assert bleu_cluster_penalty(batch) == [2 / 4, 2 / 4, 1 / 4, 1 / 4]  # |C(x_i)| / B
    assert bleu_cluster_penalty(batch, threshold=0.3) == [1 / 4] * 4  # d = .33 no longer merges


def _state(answers: list[str | None]) -> dict:
    from agentplay.rewards import majority_vote

    ids = {f"s{i}": a for i, a in enumerate(answers)}
    label, p = majority_vote(list(ids.values()))
    return {"question": "q", "formatted": True, "answers": ids, "label": label, "agreement": p}


def test_solver_reward_is_agreement_with_the_majority_answer():
    state = _state(["12", "12", "13", None])
    rewards = [r_zero.solver_reward(RoleTurn(role="solver", turn_id=f"s{i}"), state, None) for i in range(4)]
    assert [r.value for r in rewards] == [1.0, 1.0, 0.0, 0.0]  # None counts in p, never agrees
    assert {r.components["agreement"] for r in rewards} == {0.5}
    assert r_zero.parse_boxed("so \\boxed{3} or \\boxed{ 12 }") == "12"


@pytest.mark.parametrize(("answers", "formatted", "expected"), [
    (["1", "1", "2", "3"], True, 1.0),   # p = 1/2: 1 - 2|1/2 - 1/2| = 1
    (["1", "1", "1", "3"], True, 0.5),   # p = 3/4: 1 - 2 * 1/4
    (["1", "1", "1", "1"], True, 0.0),   # p = 1
    (["1", "1", "2", "3"], False, 0.0),  # format check failed
])
def test_challenger_uncertainty_reward(answers, formatted, expected):
    state = {**_state(answers), "formatted": formatted}
    assert r_zero.challenger_reward(RoleTurn(role="challenger"), state, None).value == expected


def _challenger(question: str | None, unc: float, fmt: float = 1.0) -> RoleTurn:
    if question is None:
        return RoleTurn(role="challenger", parse_error="no question",
                        reward=RewardRecord(value=0.0, reason="parse error: no question"))
    return RoleTurn(role="challenger", output={"question": question, "format": fmt},
                    reward=RewardRecord(value=unc * fmt, components={"uncertainty": unc, "format": fmt}))


def test_challenger_group_reward_is_max_of_zero_and_uncertainty_minus_cluster_share():
    turns = [_challenger("What is two plus two", 1.0), _challenger("what is two plus three", 0.5),
             _challenger("Name the largest planet of the solar system", 1.0, fmt=0.0), _challenger(None, 0.0)]
    group = RewardGroup(role="challenger", group_id="g", turns=turns, episodes=[Episode()] * 4)
    cfg = r_zero.RZeroConfig()
    deltas = r_zero.challenger_group_reward(group, cfg=cfg)
    # B = 4: the two sums share a cluster (r_rep = 2/4), the planet is alone (1/4) but failed the format
    finals = [t.reward.value + d.value for t, d in zip(turns, deltas)]
    assert finals == [pytest.approx(0.5), 0.0, 0.0, 0.0]  # max(0, 1 - .5), max(0, .5 - .5), 0, 0
    assert [d.components.get("repetition") for d in deltas] == [0.5, 0.5, 0.25, None]
    half = r_zero.challenger_group_reward(group, cfg=cfg.model_copy(update={"repetition_weight": 0.5}))
    assert turns[0].reward.value + half[0].value == pytest.approx(0.75)  # λ = 1/2


async def test_r_zero_runs_into_a_store_and_trains_one_iteration(tmp_path):
    served = load_model(DEFAULT_MODEL_SPEC)
    try:
        store = TraceStore(tmp_path / "t.db")
        recipe = r_zero.build(group_size=2, n_solvers=3, challenger_max_tokens=48, solver_max_tokens=24)
        cfg = TrainConfig(recipe="r-zero", iterations=1, episodes_per_iteration=4, concurrency=4,
                          store=tmp_path / "t.db", output_dir=tmp_path / "out", run_name="rz", report_to=[],
                          learning_rate=1e-5, micro_batch_size=8, zero_variance="keep")
        summary = await SelfPlayTrainer(cfg, recipe=recipe, served=served, store=store).run()
        tokenizer = (await resolve_model(DEFAULT_MODEL_SPEC)).tokenizer
        episodes = sorted(store.episodes(rollout_run_id("rz", 0)), key=lambda e: e.index)
        assert [e.index for e in episodes] == [0, 1, 2, 3] and all(e.status == "ok" for e in episodes)
        challenger_groups, outside_band = [], 0
        for ep in episodes:
            roles = [t.role for t in ep.turns]
            (ch,) = [t for t in ep.turns if t.role == "challenger"]
            challenger_groups.append(ch.group_id)
            assert roles.count("solver") == (0 if ch.parse_error else 3)
            for t in ep.turns:
                check_token_exact(t, tokenizer)
                assert t.reward is not None and t.reward.reason
                if t.role == "solver":
                    assert t.group_id.endswith("/solver") and t.reward.components["agreement"] == ep.metrics["agreement"]
                    outside_band += not 0.25 <= ep.metrics["agreement"] <= 0.75
            if not ch.parse_error:  # the stored reward is final: the group fn has run
                c = ch.reward.components
                assert "repetition" in c and c["repetition"] >= 1 / 2  # B = 2
                assert ch.reward.value == pytest.approx(max(0.0, c["uncertainty"] - c["repetition"]) * c["format"])
        # GroupBy.seed(2): episodes 0,1 and 2,3 are the challenger's two groups
        assert challenger_groups[0] == challenger_groups[1] != challenger_groups[2] == challenger_groups[3]
        m = {p.name: p.value for p in store.metrics("rz")}
        assert summary.last_iteration == 0 and m["optimizer_step"] == 1 and m["samples"] > 0
        assert "reward/challenger" in m
        assert m.get("filtered/solver", 0.0) == outside_band  # the solver trains only inside [1/2 - δ, 1/2 + δ]
        store.close()
    finally:
        await served.aclose()
