"""Weight updates on the served SmolLM2: LoRA load/unload, full state dicts, versions."""

from __future__ import annotations

import asyncio

import pytest
import torch

from agentplay.models import SamplingParams, load_model

PROMPT = [{"role": "user", "content": "What is two plus two?"}]
GREEDY = SamplingParams(temperature=0, max_tokens=4)


@pytest.fixture(scope="module")
def model():
    m = load_model("local:smollm2-135m-instruct")
    yield m
    m._engine.close()


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, model):
    """A real PEFT LoRA adapter with non-zero weights, trained on nothing."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model.model_dir)
    cfg = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, cfg)
    folder = tmp_path_factory.mktemp("lora") / "adapter"
    peft_model.save_pretrained(folder)
    return folder


async def _score(model):
    res = await model.chat(PROMPT, sampling=GREEDY)
    return res.choice.completion_token_ids, res.choice.logprobs, res.weight_version


async def test_lora_changes_logprobs_and_unloading_restores_them(model, adapter_dir):
    ids0, lp0, v0 = await _score(model)
    v1 = await model.load_lora_adapter("policy", str(adapter_dir))
    assert v1 == v0 + 1 and model.adapters == ["policy"]
    ids1, lp1, version = await _score(model)
    assert version == v1
    assert ids1 != ids0 or max(abs(a - b) for a, b in zip(lp0, lp1)) > 1e-3
    # Loading under the same name replaces the adapter (no stacking) and bumps again.
    v2 = await model.load_lora_adapter("policy", str(adapter_dir))
    assert v2 == v1 + 1 and model.adapters == ["policy"]
    assert (await _score(model))[:2] == (ids1, pytest.approx(lp1, abs=1e-5))
    v3 = await model.unload_lora_adapter("policy")
    ids3, lp3, version = await _score(model)
    assert v3 == v2 + 1 == version and model.adapters == []
    assert ids3 == ids0 and lp3 == pytest.approx(lp0, abs=1e-5)


async def test_bad_adapter_requests_name_the_field(model, tmp_path):
    with pytest.raises(ValueError, match="path: .* is not a PEFT adapter folder"):
        await model.load_lora_adapter("x", str(tmp_path))
    with pytest.raises(ValueError, match="name: no LoRA adapter 'nope' is loaded"):
        await model.unload_lora_adapter("nope")


async def test_state_dict_replaces_weights_in_place(model):
    norm = model.hf_model.model.norm.weight
    original = norm.detach().clone()
    ids0, lp0, v0 = await _score(model)
    v1 = await model.load_state_dict({"model.norm.weight": original * 0.25})
    assert v1 == v0 + 1 and torch.equal(model.hf_model.model.norm.weight, original * 0.25)
    ids1, lp1, version = await _score(model)
    assert version == v1 and (ids1 != ids0 or lp1 != pytest.approx(lp0, abs=1e-3))
    v2 = await model.load_state_dict({"model.norm.weight": original})
    assert v2 == v1 + 1
    ids2, lp2, _ = await _score(model)
    assert ids2 == ids0 and lp2 == pytest.approx(lp0, abs=1e-5)
    with pytest.raises(ValueError, match=r"state_dict: unknown parameter names \['nope.weight'\]"):
        await model.load_state_dict({"nope.weight": original})
    with pytest.raises(ValueError, match=r"state_dict\['model.norm.weight'\]: shape"):
        await model.load_state_dict({"model.norm.weight": original[:3]})
    assert model.weight_version == v2  # rejected updates change nothing


async def test_an_update_waits_for_the_batch_in_flight(model):
    norm = model.hf_model.model.norm.weight.detach().clone()
    v0 = model.weight_version
    in_flight = asyncio.create_task(model.chat(PROMPT, sampling=SamplingParams(max_tokens=16, temperature=0)))
    await asyncio.sleep(0.3)  # the batch is on the engine thread now
    v1 = await model.load_state_dict({"model.norm.weight": norm})
    res = await in_flight
    assert res.weight_version == v0 and v1 == v0 + 1
    assert (await model.chat(PROMPT, sampling=GREEDY)).weight_version == v1
