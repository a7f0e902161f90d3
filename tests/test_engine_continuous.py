"""The continuous-batching engine on the real SmolLM2: exact against a reference `generate`,
seeded samples independent of what shares the batch, requests admitted mid-decode, shared
prefill exact, and a weight update mid-run that only later requests see."""

from __future__ import annotations

import asyncio

import pytest
import torch
from _lora import save_random_lora

from agentplay.models import SamplingParams, load_model
from agentplay.models._continuous import ContinuousEngine

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
STORY = [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]


@pytest.fixture(scope="module")
def model():
    m = load_model("local:smollm2-135m-instruct", scheduler="continuous")
    assert isinstance(m._engine, ContinuousEngine)
    yield m
    m._engine.close()


def _reference(model, prompt: list[int], max_tokens: int) -> tuple[list[int], list[float]]:
    """Greedy HF `generate` on the prompt alone: tokens and their raw logprobs."""
    ids = torch.tensor([prompt])
    with torch.inference_mode():
        out = model.hf_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                      do_sample=False, temperature=None, top_p=None, top_k=None,
                                      output_logits=True, return_dict_in_generate=True,
                                      pad_token_id=model.tokenizer.pad_token_id,
                                      eos_token_id=sorted(model._engine.eos_ids))
    tokens = out.sequences[0, ids.shape[1]:].tolist()
    logps = [float(torch.log_softmax(step[0].float(), -1)[t]) for step, t in zip(out.logits, tokens)]
    return tokens, logps


async def test_greedy_equals_reference_generate_alone_and_in_a_crowd(model):
    sp = SamplingParams(max_tokens=16, temperature=0, logprobs=True)
    alone = await model.chat(FRANCE, sampling=sp)
    tokens, logps = _reference(model, alone.prompt_token_ids, 16)
    assert alone.choice.completion_token_ids == tokens
    assert alone.choice.logprobs == pytest.approx(logps, abs=1e-5)
    # the same request left-padded beside longer and shorter ones, admitted at different steps
    crowd = [asyncio.create_task(model.chat(STORY, sampling=SamplingParams(max_tokens=24, seed=1)))]
    await asyncio.sleep(0.05)
    crowd.append(asyncio.create_task(model.chat(FRANCE, sampling=sp)))
    crowd.append(asyncio.create_task(model.chat([{"role": "user", "content": "Hi"}],
                                                sampling=SamplingParams(max_tokens=3, n=2, seed=2))))
    done = await asyncio.gather(*crowd)
    assert done[1].choice.completion_token_ids == tokens
    assert done[1].choice.logprobs == pytest.approx(logps, abs=1e-4)


async def test_seeded_samples_are_reproducible_whatever_shares_the_batch(model):
    sp = SamplingParams(max_tokens=10, temperature=1.0, seed=4321, n=3)
    colour = [{"role": "user", "content": "Name a colour."}]
    alone = await model.chat(colour, sampling=sp)
    again = await model.chat(colour, sampling=sp)
    first = asyncio.create_task(model.chat(STORY, sampling=SamplingParams(max_tokens=20, temperature=0.7, seed=9)))
    await asyncio.sleep(0.05)
    crowded = await model.chat(colour, sampling=sp)
    await first
    ids = [[c.completion_token_ids for c in r.choices] for r in (alone, again, crowded)]
    assert ids[0] == ids[1] == ids[2] and len({tuple(x) for x in ids[0]}) > 1
    for a, b in zip(alone.choices, crowded.choices):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


async def test_a_request_arriving_mid_decode_joins_the_running_batch(model):
    """A static batch makes a late request wait for the whole batch; here it is admitted at
    the next decode step and, being short, finishes while the long one is still decoding."""
    finished: list[str] = []

    async def timed(name: str, messages, sp):
        res = await model.chat(messages, sampling=sp)
        finished.append(name)
        return res

    engine = model._engine
    before = len(engine.batch_sizes)
    long = asyncio.create_task(timed("long", STORY, SamplingParams(max_tokens=48, temperature=0.0)))
    while len(engine.batch_sizes) == before:  # the long request is prefilled and decoding
        await asyncio.sleep(0.01)
    short = await timed("short", FRANCE, SamplingParams(max_tokens=2, temperature=0.0))
    res = await long
    assert res.choice.finish_reason == "length" and len(res.choice.completion_token_ids) == 48
    assert finished == ["short", "long"]
    assert engine.batch_sizes[before:] == [1, 1]  # two admissions into one running batch
    assert short.choice.completion_token_ids == _reference(model, short.prompt_token_ids, 2)[0]


async def test_weight_update_mid_run_changes_later_samples_only(model):
    """The update waits for the rows in flight (all sampled by the old weights, same tokens as
    without any update); requests sent after it see the new version and the new weights."""
    engine = model._engine
    v0 = model.weight_version
    sp = SamplingParams(max_tokens=24, temperature=0.0, logprobs=True)
    reference = await model.chat(STORY, sampling=sp)
    name = "model.norm.weight"
    original = dict(model.hf_model.named_parameters())[name].detach().clone()
    before = len(engine.batch_sizes)
    in_flight = asyncio.create_task(model.chat(STORY, sampling=sp))
    while len(engine.batch_sizes) == before:
        await asyncio.sleep(0.01)
    update = asyncio.create_task(model.load_state_dict({name: original * 1.5}))
    await asyncio.sleep(0.05)
    later = asyncio.create_task(model.chat(STORY, sampling=sp))
    old = await in_flight
    updated_at = await update
    new = await later
    try:
        assert updated_at == v0 + 1
        assert old.weight_version == v0 and new.weight_version == v0 + 1
        assert old.choice.completion_token_ids == reference.choice.completion_token_ids
        assert old.choice.logprobs == reference.choice.logprobs
        assert new.choice.logprobs[0] != pytest.approx(reference.choice.logprobs[0], abs=1e-4)
    finally:
        await model.load_state_dict({name: original}, version=v0)


async def test_shared_prefill_samples_what_one_prefill_per_row_samples(model):
    """Rows of one prompt share one prefill (n > 1, or the same prompt twice): the same tokens and
    logprobs as one prefill per row, for prompts of different lengths in one left-padded batch."""
    engine = model._engine
    requests = [
        ([{"role": "user", "content": "Give an input x so that len(x) == 3. Answer in one line."}],
         SamplingParams(n=3, max_tokens=10, temperature=0.8, seed=11)),
        ([{"role": "user", "content": "Hi"}], SamplingParams(n=2, max_tokens=10, temperature=1.0, seed=5)),
        (FRANCE, SamplingParams(max_tokens=10, temperature=0)),
    ]

    async def once():
        return await asyncio.gather(*(model.chat(m, sampling=s) for m, s in requests))

    shared = await once()
    engine._share_prefill = False
    try:
        per_row = await once()
    finally:
        engine._share_prefill = True
    for a, b in zip(shared, per_row):
        assert [c.completion_token_ids for c in a.choices] == [c.completion_token_ids for c in b.choices]
        for ca, cb in zip(a.choices, b.choices):
            assert ca.logprobs == pytest.approx(cb.logprobs, abs=1e-4)
    assert len({tuple(c.completion_token_ids) for c in shared[0].choices}) > 1  # real samples, not one row copied


async def test_static_scheduler_admits_only_between_batches():
    """`scheduler="static"` runs the same lean decode path but a request arriving mid-decode
    waits for the running batch to end: two batches, the short request finishing last."""
    m = load_model("local:smollm2-135m-instruct", scheduler="static")
    engine = m._engine
    assert isinstance(engine, ContinuousEngine) and not engine.continuous
    finished: list[str] = []

    async def timed(name: str, messages, sp):
        res = await m.chat(messages, sampling=sp)
        finished.append(name)
        return res

    try:
        long = asyncio.create_task(timed("long", STORY, SamplingParams(max_tokens=24, temperature=0.0)))
        while not engine.batch_sizes:
            await asyncio.sleep(0.01)
        short = await timed("short", FRANCE, SamplingParams(max_tokens=2, temperature=0.0, logprobs=True))
        await long
        assert finished == ["long", "short"] and engine.batch_sizes == [1, 1]
        tokens, logps = _reference(m, short.prompt_token_ids, 2)
        assert short.choice.completion_token_ids == tokens
        assert short.choice.logprobs == pytest.approx(logps, abs=1e-5)
    finally:
        engine.close()


async def test_lora_adapter_is_folded_into_the_lean_decoder(model, tmp_path):
    """The decoder's fused weights are rebuilt with the adapter's delta on load and without it on
    unload: greedy ids and logprobs match `generate` of the model with PEFT's LoRA layers."""
    save_random_lora(model.model_dir, tmp_path / "adapter")
    sp = SamplingParams(max_tokens=12, temperature=0, logprobs=True)
    before = await model.chat(STORY, sampling=sp)
    await model.load_lora_adapter("policy", str(tmp_path / "adapter"))
    try:
        after = await model.chat(STORY, sampling=sp)
        tokens, logps = _reference(model, after.prompt_token_ids, 12)  # generate through the LoRA layers
        assert after.choice.completion_token_ids == tokens
        assert after.choice.logprobs == pytest.approx(logps, abs=1e-4)
        assert after.choice.logprobs != pytest.approx(before.choice.logprobs, abs=1e-3)
    finally:
        await model.unload_lora_adapter("policy")
    restored = await model.chat(STORY, sampling=sp)
    assert restored.choice.completion_token_ids == before.choice.completion_token_ids
    assert restored.choice.logprobs == before.choice.logprobs


async def test_one_thread_rows_are_bit_identical_whatever_shares_the_batch():
    """With one intra-op thread a row's logprobs do not depend on its batch down to the last bit:
    alone (1 row, padded to 2 for the matmuls), beside 17 other rows (products split into chunks
    of <= 15 rows), and admitted mid-decode while rows leave. This is what keeps continuous
    admission exact for the kill/resume trials."""
    m = load_model("local:smollm2-135m-instruct", scheduler="continuous", torch_threads=1, max_batch_size=32)
    greedy = SamplingParams(max_tokens=12, temperature=0, logprobs=True)
    seeded = SamplingParams(max_tokens=12, temperature=0.9, seed=77, n=2, logprobs=True)
    try:
        alone = [await m.chat(FRANCE, sampling=greedy), await m.chat(STORY, sampling=seeded)]
        crowd = [asyncio.create_task(m.chat(STORY, sampling=SamplingParams(max_tokens=20, n=16, seed=3)))]
        await asyncio.sleep(0.2)
        crowd += [asyncio.create_task(m.chat(FRANCE, sampling=greedy)),
                  asyncio.create_task(m.chat(STORY, sampling=seeded))]
        crowded = (await asyncio.gather(*crowd))[1:]
        assert m._engine.decoder.batch_invariant  # set by the engine thread: it runs one intra-op thread
        assert max(m._engine.batch_sizes) >= 16 or len(m._engine.batch_sizes) > 3
        for a, b in zip(alone, crowded):
            assert [c.completion_token_ids for c in a.choices] == [c.completion_token_ids for c in b.choices]
            assert [c.logprobs for c in a.choices] == [c.logprobs for c in b.choices]  # exact, not approx
    finally:
        m._engine.close()
