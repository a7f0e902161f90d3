"""The local engine on the real SmolLM2: chat, n choices, seeds, batching, tools, multi-turn ids.

One model is shared by the module (loading costs seconds); each test uses few
tokens because the box has two shared cores.
"""

from __future__ import annotations

import asyncio

import pytest

from agentplay.models import LocalModel, SamplingParams, default_model_dir, load_model

SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the web.",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
    },
}


@pytest.fixture
def model(smollm2):
    """The session's SmolLM2 (conftest.py): these tests only sample from it."""
    assert isinstance(smollm2, LocalModel)
    return smollm2


def _decoded(model, choice) -> str:
    ids = choice.completion_token_ids
    if choice.finish_reason != "length" and ids and ids[-1] in model._engine.eos_ids:
        ids = ids[:-1]  # the end-of-turn token is sampled (and trained on) but not shown
    return model.tokenizer.decode(ids, skip_special_tokens=False)


async def test_smollm2_answers_a_chat_request(model):
    res = await model.chat(
        [{"role": "user", "content": "What is the capital of France?"}],
        sampling=SamplingParams(temperature=0, max_tokens=12),
    )
    choice = res.choice
    assert "Paris" in choice.text
    assert choice.content == choice.text
    assert res.weight_version == model.weight_version
    assert res.prompt_token_ids == model.tokenizer(
        model.tokenizer.apply_chat_template(
            [{"role": "user", "content": "What is the capital of France?"}],
            tokenize=False,
            add_generation_prompt=True,
        ),
        add_special_tokens=False,
    )["input_ids"]
    assert len(choice.logprobs) == len(choice.completion_token_ids) == res.usage.completion_tokens
    assert all(lp <= 0 for lp in choice.logprobs)


async def test_n4_returns_four_choices_whose_ids_decode_to_the_text(model):
    res = await model.chat(
        [{"role": "user", "content": "Write one word."}],
        sampling=SamplingParams(n=4, max_tokens=10, temperature=1.0, seed=1),
    )
    assert [c.index for c in res.choices] == [0, 1, 2, 3]
    for c in res.choices:
        assert c.completion_token_ids and _decoded(model, c) == c.text
        assert len(c.logprobs) == len(c.completion_token_ids)
        assert c.finish_reason in ("stop", "length")
    assert len({tuple(c.completion_token_ids) for c in res.choices}) > 1


async def test_seed_reproduces_a_request_even_when_batched_with_others(model):
    msgs = [{"role": "user", "content": "Name a colour."}]
    sp = SamplingParams(max_tokens=8, temperature=1.0, seed=1234)
    alone = await model.chat(msgs, sampling=sp)
    before = len(model._engine.batch_sizes)
    crowd = await asyncio.gather(
        model.chat([{"role": "user", "content": "Count to three."}], sampling=SamplingParams(max_tokens=8, seed=7)),
        model.chat(msgs, sampling=sp),
        model.chat([{"role": "user", "content": "Hello!"}], sampling=SamplingParams(max_tokens=4, temperature=0.5)),
    )
    assert crowd[1].choice.completion_token_ids == alone.choice.completion_token_ids
    assert crowd[1].choice.logprobs == pytest.approx(alone.choice.logprobs, abs=1e-4)
    # The three concurrent requests shared fewer batches than one each.
    assert len(model._engine.batch_sizes) - before < 3
    assert max(model._engine.batch_sizes[before:]) >= 2


async def test_stop_string_ends_the_choice(model):
    res = await model.chat(
        [{"role": "user", "content": "List three fruits, one per line."}],
        sampling=SamplingParams(temperature=0, max_tokens=40, stop=["\n"]),
    )
    c = res.choice
    assert c.finish_reason == "stop"
    assert "\n" in c.text and c.text.endswith("\n") and "\n" not in (c.content or "")
    assert _decoded(model, c) == c.text


async def test_multi_turn_prompt_reuses_the_sampled_ids(model):
    msgs = [{"role": "user", "content": "Search for the tallest mountain."}]
    first = await model.chat(msgs, tools=[SEARCH], sampling=SamplingParams(max_tokens=24, seed=3))
    choice = first.choice
    msgs2 = msgs + [
        choice.assistant_message(),
        {"role": "tool", "tool_call_id": "call_0", "content": "Mount Everest, 8849 m"},
    ]
    second = await model.chat(msgs2, tools=[SEARCH], sampling=SamplingParams(max_tokens=4, seed=3))
    earlier = first.prompt_token_ids + choice.completion_token_ids
    assert second.prompt_token_ids[: len(earlier)] == earlier
    assert len(second.prompt_token_ids) > len(earlier)
    assert "Mount Everest, 8849 m" in model.tokenizer.decode(second.prompt_token_ids[len(earlier) :])


def test_hf_spec_for_a_missing_folder_names_the_field(tmp_path):
    from agentplay.models import ModelSpecError

    with pytest.raises(ModelSpecError, match=r"name: cannot load a Hugging Face model from .*nowhere"):
        load_model(f"hf:{tmp_path / 'nowhere'}")


async def test_hf_folder_spec_serves_the_cached_smollm2():
    m = load_model(f"hf:{default_model_dir()}")
    try:
        res = await m.chat([{"role": "user", "content": "Say hi."}], sampling=SamplingParams(max_tokens=3, temperature=0))
        assert res.model == f"hf:{default_model_dir()}" and res.choice.completion_token_ids
    finally:
        await m.aclose()


async def test_logprobs_are_the_temperature_scaled_model_distribution(model):
    """The default logprobs_mode matches what TRL recomputes: log_softmax(logits / T)."""
    import torch

    temperature = 0.7
    res = await model.chat(
        [{"role": "user", "content": "Describe the sea."}],
        sampling=SamplingParams(max_tokens=6, temperature=temperature, seed=5, top_logprobs=2),
    )
    choice = res.choice
    ids = torch.tensor([res.prompt_token_ids + choice.completion_token_ids])
    with torch.inference_mode():
        logits = model.hf_model(ids).logits[0, len(res.prompt_token_ids) - 1 : -1].float()
    expected = torch.log_softmax(logits / temperature, dim=-1)
    expected = expected.gather(1, torch.tensor(choice.completion_token_ids).unsqueeze(1)).squeeze(1)
    assert choice.logprobs == pytest.approx(expected.tolist(), abs=1e-3)
    assert len(choice.top_logprobs) == len(choice.completion_token_ids)
    for step, sampled in zip(choice.top_logprobs, choice.logprobs):
        assert len(step) == 2 and step[0].logprob >= step[1].logprob and step[0].logprob >= sampled - 1e-6
        assert step[0].token == model.tokenizer.convert_ids_to_tokens(step[0].token_id)


async def test_batches_never_exceed_max_batch_size(model):
    before = len(model._engine.batch_sizes)
    sp = SamplingParams(n=6, max_tokens=2, seed=0)
    results = await asyncio.gather(*(model.chat([{"role": "user", "content": f"Hi {i}"}], sampling=sp) for i in range(4)))
    assert [len(r.choices) for r in results] == [6, 6, 6, 6]
    sizes = model._engine.batch_sizes[before:]
    assert sum(sizes) == 24 and max(sizes) <= model.config.max_batch_size == 16
    assert len(sizes) < 4  # requests were batched together, not one by one


async def test_shared_prefill_samples_what_one_prefill_per_row_samples(model):
    """Rows sampling from one prompt share its KV cache (each distinct prompt encoded
    once); seeded and greedy rows get the same tokens and logprobs as with one prefill per
    row, for prompts of different lengths in one batch."""
    engine = model._engine
    requests = [
        ([{"role": "user", "content": "Give an input x so that len(x) == 3. Answer in one line."}],
         SamplingParams(n=3, max_tokens=10, temperature=0.8, seed=11)),
        ([{"role": "user", "content": "Hi"}], SamplingParams(n=2, max_tokens=10, temperature=1.0, seed=5)),
        ([{"role": "user", "content": "What is the capital of France?"}], SamplingParams(max_tokens=10, temperature=0)),
    ]
    encoded: list[int] = []  # prompt lengths of each prefill
    prefill = engine.decoder.prefill

    def counted(ids, extra):
        encoded.append(len(ids))
        return prefill(ids, extra)

    async def one_batch():
        before = len(engine.batch_sizes)
        out = await asyncio.gather(*(model.chat(m, sampling=s) for m, s in requests))
        assert engine.batch_sizes[before:] == [6]
        return out

    engine.decoder.prefill = counted
    try:
        shared = await one_batch()
        in_shared = list(encoded)
        engine._share_prefill = False
        per_row = await one_batch()
    finally:
        engine._share_prefill = True
        del engine.decoder.prefill
    # the shared run encoded each of the 3 distinct prompts once for its 6 rows, the other run 6 times
    assert sorted(in_shared) == sorted(len(r.prompt_token_ids) for r in shared)
    assert len(encoded) == 3 + 6
    for a, b in zip(shared, per_row):
        assert [c.completion_token_ids for c in a.choices] == [c.completion_token_ids for c in b.choices]
        for ca, cb in zip(a.choices, b.choices):
            assert ca.logprobs == pytest.approx(cb.logprobs, abs=1e-4)
    assert len({tuple(c.completion_token_ids) for c in shared[0].choices}) > 1  # real samples, not one row copied
