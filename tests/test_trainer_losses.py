"""TRL's loss types on our batches: the token normalisation of grpo, dapo and dr_grpo,
exact, across several micro-batches (gradient accumulation) on the real SmolLM2."""

from __future__ import annotations

import pytest
import torch

from agentplay.models import default_model_dir
from agentplay.traces import RewardRecord, RoleTurn
from agentplay.trainers import GRPOLearner, TrainConfig, TrainSample

MAX_LEN = 32


@pytest.fixture(scope="module")
def model_and_tokenizer():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = default_model_dir()
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), AutoTokenizer.from_pretrained(folder)


def _samples(tok) -> list[TrainSample]:
    prompt = tok.apply_chat_template([{"role": "user", "content": "Count."}], add_generation_prompt=True,
                                     return_dict=False)
    # (advantage, model-written tokens, tool tokens)
    spec = [(1.5, 3, 2), (-0.5, 6, 0), (-1.0, 2, 4)]
    out = []
    for adv, written, tool in spec:
        ids = tok.encode(" one two three four five six seven eight", add_special_tokens=False)[: written + tool]
        mask = [1] * written + [0] * tool
        turn = RoleTurn(role="r", group_id="g", prompt_token_ids=prompt, token_ids=ids, mask=mask,
                        logprobs=None, reward=RewardRecord(value=adv))
        out.append(TrainSample(turn=turn, episode_id="e", advantage=adv, reward=adv))
    return out


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_loss_normalisation_matches_each_loss_type(tmp_path, model_and_tokenizer, loss_type):
    model, tok = model_and_tokenizer
    cfg = TrainConfig(output_dir=tmp_path, loss_type=loss_type, learning_rate=1e-9, micro_batch_size=1,
                      max_completion_length=MAX_LEN, report_to=[])
    learner = GRPOLearner(model, tok, cfg)
    samples = _samples(tok)
    out = learner.step(samples)  # on-policy (no sampling logprobs): every ratio is 1, token loss = -A
    adv = [s.advantage for s in samples]
    n = [sum(s.turn.mask) for s in samples]
    expected = {
        "grpo": -sum(adv) / len(adv),                                         # mean over sequences
        "dapo": -sum(a * k for a, k in zip(adv, n)) / sum(n),                 # mean over all trained tokens
        "dr_grpo": -sum(a * k for a, k in zip(adv, n)) / (len(adv) * MAX_LEN),  # constant length
    }[loss_type]
    assert out["micro_batches"] == 3
    assert out["loss"] == pytest.approx(expected, abs=1e-5)


def test_each_sample_is_clipped_at_its_own_upper_bound(tmp_path, model_and_tokenizer):
    """Agent0's ADPO: a sample's ratio is clipped at 1 + epsilon_high + its `clip_high_bonus`.
    Sampling logprobs 0.25 below the model's make every token's ratio e^0.25 = 1.284, above
    1 + 0.2 but below 1 + 0.2 + 0.1: the loss says which bound each row was clipped at."""
    import dataclasses
    import math

    model, tok = model_and_tokenizer
    cfg = TrainConfig(output_dir=tmp_path, loss_type="grpo", learning_rate=1e-9, micro_batch_size=2, epsilon=0.2,
                      max_completion_length=MAX_LEN, report_to=[])
    learner = GRPOLearner(model, tok, cfg)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Count."}], add_generation_prompt=True,
                                     return_dict=False)
    ids = tok.encode(" one two three four", add_special_tokens=False)
    with torch.no_grad():
        logits = model(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1 : -1].float()
        current = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids)[:, None])[:, 0]
    sampled = [float(x) - 0.25 for x in current]
    turn = RoleTurn(role="r", group_id="g", prompt_token_ids=prompt, token_ids=ids, mask=[1] * len(ids),
                    logprobs=sampled, reward=RewardRecord(value=1.0))
    wide, plain = (TrainSample(turn=turn, episode_id="e", advantage=1.0, reward=1.0, clip_high_bonus=b)
                   for b in (0.1, 0.0))
    r = math.exp(0.25)
    out = learner.step([wide, plain])
    assert out["loss"] == pytest.approx(-(min(r, 1.3) + min(r, 1.2)) / 2, abs=1e-4)  # -(1.284 + 1.2) / 2
    assert out["clip_ratio/high_mean"] == pytest.approx(0.5)  # only the plain row's tokens were clipped
    # the next step is back on the batch's bound: both rows clipped at 1.2
    again = learner.step([dataclasses.replace(wide, clip_high_bonus=0.0), plain])
    assert again["loss"] == pytest.approx(-1.2, abs=1e-4) and again["clip_ratio/high_mean"] == pytest.approx(1.0)
    assert learner.trainer.epsilon_high == 0.2 and learner.trainer.epsilon_low == 0.2
    sapo = GRPOLearner(model, tok, cfg.model_copy(update={"loss_type": "sapo"}))
    with pytest.raises(ValueError, match="'sapo' has no clip bound to widen"):  # not silently ignored
        sapo.step([wide, plain])
    sapo.step([plain])  # without a bonus the loss is as it was


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_kl_is_measured_against_the_initial_model(tmp_path, lora):
    """beta > 0: the first step's policy is the reference (KL 0 and the loss is the pure
    policy loss); after an update KL is positive and adds to the loss. With
    LoRA the reference is the adapter disabled; with full fine-tuning, a frozen copy."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = default_model_dir()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(folder)
    name = "model.layers.0.self_attn.q_proj.weight"
    initial = model.get_parameter(name).detach().clone()
    beta = 0.5
    cfg = TrainConfig(output_dir=tmp_path, loss_type="grpo", beta=beta, lora=lora,
                      learning_rate=1e-2 if lora else 1e-4, micro_batch_size=4,
                      max_completion_length=MAX_LEN, report_to=[])
    learner = GRPOLearner(model, tok, cfg)
    samples = _samples(tok)
    policy_loss = -sum(s.advantage for s in samples) / len(samples)  # on-policy: every ratio is 1
    first = learner.step(samples)
    assert first["kl"] == pytest.approx(0.0, abs=1e-7)
    assert first["loss"] == pytest.approx(policy_loss, abs=1e-5)
    second = learner.step(samples)
    assert second["kl"] > 1e-4
    assert second["loss"] - policy_loss > beta * 1e-5  # the (non-negative) KL term is in the loss
    if not lora:  # the reference is a separate module that kept the initial weights
        ref = learner.trainer.ref_model
        assert ref is not None and ref is not learner.model
        assert torch.equal(ref.get_parameter(name), initial)
        assert not torch.equal(learner.model.get_parameter(name), initial)
