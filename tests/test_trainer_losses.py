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
