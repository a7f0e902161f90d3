"""Every row scored under the policy that sampled it: sampling settings recorded per
generation, rollout/trainer mismatch measured per role, and the TIS/MIS corrections.

The end-to-end tests sample two roles at different temperatures (0.5 and 1.4) with the
real SmolLM2, through the in-process engine and through `agentplay serve`, and train one
step: on a fresh step with the same weights the mismatch must be float noise. Scoring
every row at one `TrainConfig.temperature` (the old behaviour) fails them.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, TypedDict

import pytest
import torch
from langgraph.graph import END, START, StateGraph

from agentplay import EpisodeContext, EpisodeView, GroupBy, Recipe, Role
from agentplay._role_loop import sampling_record
from agentplay.models import DEFAULT_MODEL_SPEC, ChatResult, Choice, SamplingParams, SamplingRecord, load_model
from agentplay.traces import RewardRecord, RoleTurn, TraceStore
from agentplay.trainers import SelfPlayTrainer, TrainConfig, TrainSample, rollout_run_id
from agentplay.trainers._batch import scoring_temperature
from agentplay.trainers._rollout_correction import CorrectionConfig, MismatchStats, correction_weights

sys.path.insert(0, str(Path(__file__).parent))
from _servers import SERVED, start_server, stop_server

TEMPERATURES = {"cold": 0.5, "hot": 1.4}
MAX_TOKENS = 8


class State(TypedDict, total=False):
    question: str


def two_temperature_recipe(model: str = DEFAULT_MODEL_SPEC) -> Recipe:
    """Two trained roles answering the same question, one sampling cold and one hot."""
    roles = {name: Role(name=name, model=model, system_prompt="Answer in a few words.",
                        sampling=SamplingParams(max_tokens=MAX_TOKENS, temperature=t))
             for name, t in TEMPERATURES.items()}

    def node(role: Role) -> Any:
        async def answer(state: State) -> dict[str, Any]:
            await role.run_n(state["question"], n=3)
            return {}

        return answer

    def reward(turn: RoleTurn, state: dict[str, Any], episode: EpisodeView) -> RewardRecord:
        written = sum(turn.mask or [])
        return RewardRecord(value=1.0 - written / (MAX_TOKENS + 1), reason=f"{written} tokens")

    graph = StateGraph(State)
    graph.add_node("cold", node(roles["cold"]))
    graph.add_node("hot", node(roles["hot"]))
    graph.add_edge(START, "cold")
    graph.add_edge("cold", "hot")
    graph.add_edge("hot", END)
    return Recipe(name="two-temperatures", graph=graph, roles={"cold": "cold", "hot": "hot"},
                  rewards={name: reward for name in roles}, groups={name: GroupBy.episode() for name in roles},
                  initial_state=lambda ctx: {"question": ["Name a colour.", "Name a city."][ctx.index % 2]})


async def _one_iteration(tmp_path: Path, served: Any, *, lora: bool,
                         **train: Any) -> tuple[dict[str, float], TraceStore]:
    store = TraceStore(tmp_path / "traces.db")
    cfg = TrainConfig(recipe="unused", iterations=1, episodes_per_iteration=2, concurrency=2,
                      store=tmp_path / "traces.db", output_dir=tmp_path / "out", run_name="m", lora=lora, lora_r=4,
                      learning_rate=1e-5, loss_type="dapo", micro_batch_size=8, zero_variance="keep",
                      temperature=1.0, report_to=[], **train)
    summary = await SelfPlayTrainer(cfg, recipe=two_temperature_recipe(), served=served, store=store).run()
    return summary.metrics[0], store


def _assert_no_mismatch(m: dict[str, float]) -> None:
    for role in TEMPERATURES:
        assert m[f"mismatch/{role}/tokens"] > 0, m
        assert m[f"mismatch/{role}/ratio_dev_mean"] < 2e-3, (role, m)
        assert m[f"mismatch/{role}/ratio_dev_max"] < 2e-2, (role, m)
        assert m[f"mismatch/{role}/clip_fraction"] == 0.0, (role, m)
        assert abs(m[f"mismatch/{role}/kl"]) < 1e-4, (role, m)


async def test_two_roles_at_two_temperatures_have_no_mismatch_with_the_local_engine(tmp_path):
    served = load_model(DEFAULT_MODEL_SPEC)
    try:
        m, store = await _one_iteration(tmp_path, served, lora=True)
    finally:
        await served.aclose()
    _assert_no_mismatch(m)
    turns = [t for ep in store.episodes(rollout_run_id("m", 0)) for t in ep.turns]
    records: dict[str, set[str]] = {}
    for t in turns:
        records.setdefault(t.role, set()).update(g.sampling.model_dump_json() for g in t.generations)
    for role, temperature in TEMPERATURES.items():
        (record,) = records[role]  # stored and read back, one setting per role
        assert SamplingRecord.model_validate_json(record) == SamplingRecord(temperature=temperature, top_p=1.0, logprobs_mode="temperature",
                                        engine="agentplay-local", decode_dtype="float32", reported=True)
    assert {p.name for p in store.metrics("m")} >= {"mismatch/cold/kl", "mismatch/hot/kl", "mismatch/all/kl"}


async def test_two_roles_at_two_temperatures_have_no_mismatch_through_agentplay_serve(tmp_path):
    proc, url = start_server()
    try:
        served = load_model(SERVED, base_url=url)
        try:
            m, store = await _one_iteration(tmp_path, served, lora=True)
        finally:
            await served.aclose()
    finally:
        stop_server(proc)
    _assert_no_mismatch(m)
    turns = [t for ep in store.episodes(rollout_run_id("m", 0)) for t in ep.turns]
    assert {(t.role, g.sampling.temperature, g.sampling.reported, g.sampling.logprobs_mode)
            for t in turns for g in t.generations} == {("cold", 0.5, True, "temperature"),
                                                       ("hot", 1.4, True, "temperature")}


async def test_bf16_rollouts_are_recorded_measured_and_corrected(tmp_path):
    """Rollouts decoded in bf16 (`decode_dtype`, issue #21) against the fp32 trainer: every
    generation says so in the store, the mismatch metrics see the gap (well above the fp32
    engine's float noise that `_assert_no_mismatch` bounds), and TIS reaches the loss."""
    served = load_model(DEFAULT_MODEL_SPEC, decode_dtype="bfloat16")
    try:
        m, store = await _one_iteration(tmp_path, served, lora=True, tis_cap=2.0)
    finally:
        await served.aclose()
    turns = [t for ep in store.episodes(rollout_run_id("m", 0)) for t in ep.turns]
    assert {g.sampling.decode_dtype for t in turns for g in t.generations if g.sampling} == {"bfloat16"}
    assert m["mismatch/all/tokens"] > 0, m
    assert m["mismatch/all/ratio_dev_mean"] > 2e-3, m
    assert m["mismatch/all/ratio_dev_max"] > 2e-2, m
    assert m["mismatch/all/ratio_dev_mean"] < 0.1, m  # a bounded gap, not another policy
    assert "correction/tis_truncated_fraction" in m, m


def test_a_server_that_cannot_say_is_scored_at_the_declared_parameters():
    declared = SamplingParams(temperature=0.7, top_p=0.9)
    silent = ChatResult(model="some-vllm-model", choices=[Choice(text="x")])  # no `sampled_with`
    record = sampling_record(silent, declared)
    assert record == SamplingRecord(temperature=0.7, top_p=0.9, logprobs_mode=None, engine="some-vllm-model",
                                    reported=False)
    from agentplay.traces import Generation

    turn = RoleTurn(role="r", generations=[Generation(sampling=record)])
    sample = TrainSample(turn=turn, episode_id="e", advantage=1.0, reward=1.0)
    assert scoring_temperature(sample, default=1.0) == 0.7
    # raw logprobs are of T = 1 whatever the sampling temperature; a turn without a record uses the default
    raw = RoleTurn(role="r", generations=[Generation(sampling=record.model_copy(update={"logprobs_mode": "raw"}))])
    assert scoring_temperature(TrainSample(turn=raw, episode_id="e", advantage=1.0, reward=1.0), default=0.3) == 1.0
    old = RoleTurn(role="r", generations=[Generation()])
    assert scoring_temperature(TrainSample(turn=old, episode_id="e", advantage=1.0, reward=1.0), default=0.3) == 0.3


def _hand_built() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # log ratios trainer - rollout per token: row 0 [ln 3, ln 0.5, -], row 1 [ln 1.1, ln 1.2, ln 0.9]
    rollout = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.4, -0.6]])
    log_r = torch.tensor([[math.log(3.0), math.log(0.5), 0.0], [math.log(1.1), math.log(1.2), math.log(0.9)]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    return rollout + log_r, rollout, mask


def test_tis_truncates_token_weights_at_the_cap():
    trainer, rollout, mask = _hand_built()
    w, counts = correction_weights(trainer, rollout, mask, CorrectionConfig(tis_cap=2.0))
    expected = torch.tensor([[2.0, 0.5, 1.0], [1.1, 1.2, 0.9]], dtype=torch.float64)
    assert torch.allclose(w, expected, atol=1e-12)
    assert counts == {"tokens": 5.0, "sequences": 2.0, "tis_truncated_tokens": 1.0,
                      "mis_rejected_sequences": 0.0, "mis_rejected_tokens": 0.0}


def test_mis_rejects_sequences_beyond_the_bound():
    trainer, rollout, mask = _hand_built()
    # row 0: geometric mean sqrt(3 * 0.5) = 1.2247 > 1.2 -> rejected; row 1: (1.1*1.2*0.9)^(1/3) = 1.0583 kept
    w, counts = correction_weights(trainer, rollout, mask, CorrectionConfig(mis_bound=1.2))
    assert torch.equal(w, torch.tensor([[0.0, 0.0, 1.0], [1.0, 1.0, 1.0]], dtype=torch.float64))
    assert counts["mis_rejected_sequences"] == 1.0 and counts["mis_rejected_tokens"] == 2.0
    w, counts = correction_weights(trainer, rollout, mask, CorrectionConfig(tis_cap=1.15, mis_bound=1.25))
    assert torch.allclose(w, torch.tensor([[1.15, 0.5, 1.0], [1.1, 1.15, 0.9]], dtype=torch.float64), atol=1e-12)
    assert counts["tis_truncated_tokens"] == 2.0 and counts["mis_rejected_sequences"] == 0.0


def test_mismatch_stats_exact_values():
    trainer, rollout, mask = _hand_built()
    stats = MismatchStats(clip_low=0.2, clip_high=0.28)
    stats.add(["a", "b"], trainer, rollout, mask)
    m = stats.metrics()
    assert m["mismatch/a/ratio_dev_mean"] == pytest.approx((2.0 + 0.5) / 2)
    assert m["mismatch/a/ratio_dev_max"] == pytest.approx(2.0)
    assert m["mismatch/a/clip_fraction"] == pytest.approx(1.0)  # 3 > 1.28 and 0.5 < 0.8
    k3 = lambda r: r - 1 - math.log(r)  # noqa: E731
    assert m["mismatch/a/kl"] == pytest.approx((k3(3.0) + k3(0.5)) / 2)
    assert m["mismatch/b/ratio_dev_mean"] == pytest.approx((0.1 + 0.2 + 0.1) / 3)
    assert m["mismatch/b/clip_fraction"] == 0.0
    assert m["mismatch/all/tokens"] == 5.0
    assert m["mismatch/all/clip_fraction"] == pytest.approx(2 / 5)
    assert m["mismatch/b/kl"] == pytest.approx((k3(1.1) + k3(1.2) + k3(0.9)) / 3)


def _learner_and_samples(tmp_path, log_ratio: float, **cfg: Any):
    """A learner and two rows whose recorded (rollout) logprobs are the trainer's minus `log_ratio`:
    every trained token has pi_trainer / pi_rollout = exp(log_ratio)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentplay.models import default_model_dir
    from agentplay.trainers import GRPOLearner, make_micro_batches

    folder = default_model_dir()
    tok = AutoTokenizer.from_pretrained(folder)
    learner = GRPOLearner(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), tok,
                          TrainConfig(output_dir=tmp_path, learning_rate=1e-9, report_to=[], **cfg))
    prompt = tok.apply_chat_template([{"role": "user", "content": "Name a colour."}], add_generation_prompt=True,
                                     return_dict=False)
    turns = [RoleTurn(role="r", group_id="g", prompt_token_ids=prompt, token_ids=tok.encode(t, add_special_tokens=False),
                      mask=[1] * len(tok.encode(t, add_special_tokens=False))) for t in ("Red", "Deep blue")]
    samples = [TrainSample(turn=t, episode_id="e", advantage=1.0, reward=1.0) for t in turns]
    (mb,) = make_micro_batches(samples, micro_batch_size=8, max_completion_length=16,
                               pad_token_id=learner.pad_token_id, share_prompts=True)
    with torch.no_grad():
        current = learner.trainer.score(learner.model, mb.inputs)
    for r, s in enumerate(samples):
        n = len(s.turn.token_ids)
        s.turn.logprobs = [float(x) - log_ratio for x in current[r, :n]]
    return learner, samples


def test_tis_and_mis_reach_the_loss(tmp_path):
    """Through TRL's loss: with the ratio against the trainer's own logprobs (1) and advantage 1,
    the dapo loss is -mean(weight): TIS weights every token min(3, cap), MIS rejects both rows."""
    losses = {}
    for name, options in {"cap1": {"tis_cap": 1.0}, "cap2": {"tis_cap": 2.0}, "mis": {"mis_bound": 2.0}}.items():
        learner, samples = _learner_and_samples(tmp_path / name, math.log(3.0), **options)
        out = learner.step(samples)
        losses[name] = out["loss"]
        assert out["mismatch/all/ratio_dev_mean"] == pytest.approx(2.0, abs=1e-3)  # measured before correcting
        if name == "mis":
            assert out["correction/mis_rejected_sequence_fraction"] == 1.0
            assert out["correction/mis_rejected_token_fraction"] == 1.0
        else:
            assert out["correction/tis_truncated_fraction"] == 1.0
    assert losses["cap1"] == pytest.approx(-1.0, abs=1e-5)
    assert losses["cap2"] == pytest.approx(-2.0, abs=1e-5)
    assert losses["mis"] == pytest.approx(0.0, abs=1e-7)
