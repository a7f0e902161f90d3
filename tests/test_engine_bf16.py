"""The opt-in bf16 decode path (`ModelConfig.decode_dtype`, issue #21) on the real SmolLM2: its
logprobs stay within the measured distance of the fp32 policy's, it says so in every result,
seeded samples reproduce, and weight updates (in place, LoRA) reach its bf16 weight copies."""

from __future__ import annotations

import asyncio

import pytest
import torch
from _lora import save_random_lora

from agentplay.models import ModelSpecError, SamplingParams, load_model, parse_model_spec
from agentplay.models._decoder import LeanDecoder
from agentplay.models._prompt import render_chat

STORY = [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
TOPICS = ["the history of the bicycle", "how bread is baked", "why the sky is blue", "the water cycle"]


@pytest.fixture(scope="module")
def bf16():
    m = load_model("local:smollm2-135m-instruct", decode_dtype="bfloat16", torch_threads=1, max_batch_size=48)
    yield m
    m._engine.close()


def _forced(decoder: LeanDecoder, prompts: list[list[int]], steps: int,
            forced: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decode all prompts as one batch, greedy (or feeding `forced` tokens): tokens fed, their raw
    logprobs, and each step's argmax."""
    outs = [decoder.prefill(p, steps + 1) for p in prompts]
    logits, caches = torch.cat([o[0] for o in outs]), [o[1] for o in outs]
    tokens, logps, greedy = [], [], []
    for step in range(steps):
        lp = torch.log_softmax(logits.float(), -1)
        top = lp.argmax(-1)
        fed = top if forced is None else forced[:, step]
        tokens.append(fed)
        logps.append(lp.gather(1, fed[:, None])[:, 0])
        greedy.append(top)
        if step < steps - 1:
            logits = decoder.decode(fed, caches)
    return torch.stack(tokens, 1), torch.stack(logps, 1), torch.stack(greedy, 1)


def test_bf16_logprobs_stay_within_the_measured_distance_of_fp32(smollm2):
    """Teacher-forced on fp32's greedy continuations of 4 prompts x 24 tokens, decoded as one
    batch: measured here mean |dlogprob| 0.010, max 0.07, greedy agreement 0.99 (all-bf16 logits
    without the fp32 recompute of the top tokens: 0.016 / 0.10 / 0.98). The lower bound checks
    that the bf16 weights are really used."""
    tok = smollm2.tokenizer
    prompts = [tok(render_chat(tok, [{"role": "user", "content": f"Explain {t}."}], None),
                   add_special_tokens=False)["input_ids"] for t in TOPICS]
    fp32 = LeanDecoder(smollm2.hf_model)
    low = LeanDecoder(smollm2.hf_model, low_dtype=torch.bfloat16)
    assert low._layers[0].low is not None and low._layers[0].low.wgu.dtype == torch.bfloat16
    with torch.inference_mode():
        tokens, ref, _ = _forced(fp32, prompts, 24)
        _, got, greedy = _forced(low, prompts, 24, forced=tokens)
    diff = (got - ref).abs()
    assert 1e-4 < float(diff.mean()) < 0.03, float(diff.mean())
    assert float(diff.max()) < 0.3
    assert float((greedy == tokens).float().mean()) >= 0.95


async def test_results_record_the_decode_dtype(bf16, smollm2):
    sp = SamplingParams(max_tokens=4, temperature=0, logprobs=True)
    low, exact = await bf16.chat(FRANCE, sampling=sp), await smollm2.chat(FRANCE, sampling=sp)
    assert low.sampled_with is not None and low.sampled_with.decode_dtype == "bfloat16"
    assert exact.sampled_with is not None and exact.sampled_with.decode_dtype == "float32"


async def test_seeded_bf16_samples_reproduce_whatever_shares_the_batch(bf16):
    """With one thread the bf16 products are row-invariant up to 32 rows and split above (see
    `_decoder.py`), so seeded requests reproduce alone and beside 36 other rows."""
    greedy = SamplingParams(max_tokens=12, temperature=0, logprobs=True)
    seeded = SamplingParams(max_tokens=12, temperature=0.9, seed=77, n=2, logprobs=True)
    alone = [await bf16.chat(FRANCE, sampling=greedy), await bf16.chat(STORY, sampling=seeded)]
    crowd = [asyncio.create_task(bf16.chat(STORY, sampling=SamplingParams(max_tokens=20, n=36, seed=3)))]
    await asyncio.sleep(0.2)
    crowd += [asyncio.create_task(bf16.chat(FRANCE, sampling=greedy)),
              asyncio.create_task(bf16.chat(STORY, sampling=seeded))]
    crowded = (await asyncio.gather(*crowd))[1:]
    assert bf16._engine.decoder.batch_invariant and max(bf16._engine.batch_sizes) >= 36
    assert len({tuple(c.completion_token_ids) for c in alone[1].choices}) == 2
    for a, b in zip(alone, crowded, strict=True):
        assert [c.completion_token_ids for c in a.choices] == [c.completion_token_ids for c in b.choices]
        assert [c.logprobs for c in a.choices] == [c.logprobs for c in b.choices]


async def test_weight_update_mid_run_reaches_the_bf16_copies_for_later_samples_only(bf16):
    engine = bf16._engine
    v0 = bf16.weight_version
    sp = SamplingParams(max_tokens=24, temperature=0.0, logprobs=True)
    reference = await bf16.chat(STORY, sampling=sp)
    name = "model.norm.weight"  # read by the decoder straight from the model, in fp32
    layer = "model.layers.3.mlp.down_proj.weight"  # fused into a bf16 copy
    params = dict(bf16.hf_model.named_parameters())
    originals = {k: params[k].detach().clone() for k in (name, layer)}
    before = len(engine.batch_sizes)
    in_flight = asyncio.create_task(bf16.chat(STORY, sampling=sp))
    while len(engine.batch_sizes) == before:
        await asyncio.sleep(0.01)
    update = asyncio.create_task(bf16.load_state_dict({layer: originals[layer] * 3.0}))
    await asyncio.sleep(0.05)
    later = asyncio.create_task(bf16.chat(STORY, sampling=sp))
    old, updated_at, new = await in_flight, await update, await later
    try:
        assert updated_at == v0 + 1 and old.weight_version == v0 and new.weight_version == v0 + 1
        assert old.choice.completion_token_ids == reference.choice.completion_token_ids
        assert old.choice.logprobs == reference.choice.logprobs
        assert new.choice.logprobs[0] != pytest.approx(reference.choice.logprobs[0], abs=1e-3)
        assert engine.decoder._layers[3].low is not None
        assert torch.equal(engine.decoder._layers[3].low.wd, (originals[layer] * 3.0).to(torch.bfloat16))
    finally:
        await bf16.load_state_dict({layer: originals[layer]})
    restored = await bf16.chat(STORY, sampling=sp)
    assert restored.choice.logprobs == reference.choice.logprobs


async def test_lora_adapter_changes_bf16_outputs_and_unloading_restores_them(bf16, tmp_path):
    save_random_lora(bf16.model_dir, tmp_path / "adapter")
    sp = SamplingParams(max_tokens=12, temperature=0, logprobs=True)
    before = await bf16.chat(STORY, sampling=sp)
    await bf16.load_lora_adapter("policy", str(tmp_path / "adapter"))
    try:
        after = await bf16.chat(STORY, sampling=sp)
        assert after.choice.logprobs != pytest.approx(before.choice.logprobs, abs=1e-2)
        assert after.sampled_with is not None and after.sampled_with.decode_dtype == "bfloat16"
    finally:
        await bf16.unload_lora_adapter("policy")
    restored = await bf16.chat(STORY, sampling=sp)
    assert restored.choice.completion_token_ids == before.choice.completion_token_ids
    assert restored.choice.logprobs == before.choice.logprobs


def test_decode_dtype_is_checked_up_front(monkeypatch):
    with pytest.raises(ModelSpecError, match="decode_dtype"):
        parse_model_spec("local:smollm2-135m-instruct", decode_dtype="int4")
    with pytest.raises(ModelSpecError, match="decode_dtype: only used by in-process"):
        parse_model_spec("openai:m", base_url="http://127.0.0.1:1/v1", decode_dtype="bfloat16")
    assert parse_model_spec("local:smollm2-135m-instruct").decode_dtype == "float32"
    monkeypatch.setenv("AGENTPLAY_DECODE_DTYPE", "bfloat16")
    assert parse_model_spec("local:smollm2-135m-instruct").decode_dtype == "bfloat16"
    assert parse_model_spec("openai:m", base_url="http://127.0.0.1:1/v1").backend == "openai"  # env: local only
    monkeypatch.setenv("AGENTPLAY_DECODE_DTYPE", "fp8")
    with pytest.raises(ModelSpecError, match="decode_dtype: AGENTPLAY_DECODE_DTYPE='fp8'"):
        parse_model_spec("local:smollm2-135m-instruct")


async def test_serve_flag_decodes_in_bf16_and_says_so_over_http():
    """`agentplay serve --decode-dtype bfloat16`: the openai client reads the record back."""
    from _servers import SERVED, start_server, stop_server

    proc, url = start_server(args=("--decode-dtype", "bfloat16"))
    served = load_model(SERVED, base_url=url)
    try:
        res = await served.chat(FRANCE, sampling=SamplingParams(max_tokens=4, temperature=0))
        assert res.sampled_with is not None and res.sampled_with.decode_dtype == "bfloat16"
        assert res.choice.completion_token_ids
    finally:
        await served.aclose()
        stop_server(proc)


def test_run_flag_decodes_the_recipe_in_bf16_and_the_store_says_so(tmp_path):
    """`agentplay run --decode-dtype bfloat16` reaches the model the recipe loads in process."""
    import subprocess

    from _servers import AGENTPLAY, agentplay_env

    from agentplay.traces import TraceStore

    store = tmp_path / "t.db"
    done = subprocess.run([*AGENTPLAY, "run", "examples/my_recipe.py:build", "--episodes", "1", "--store", str(store),
                           "--run-id", "bf", "--set", "max_tokens=6", "--decode-dtype", "bfloat16"],
                          env=agentplay_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    records = {g.sampling.decode_dtype for ep in TraceStore(store).episodes("bf") for t in ep.turns
               for g in t.generations if g.sampling}
    assert records == {"bfloat16"}


def test_decode_dtype_flag_is_refused_for_a_served_model():
    from typer.testing import CliRunner

    from agentplay.cli import app

    result = CliRunner().invoke(app, ["run", "examples/my_recipe.py:build", "--model", "openai:m", "--base-url",
                                      "http://127.0.0.1:9/v1", "--decode-dtype", "bfloat16"])
    assert result.exit_code == 2 and "--decode-dtype" in result.output and "agentplay serve" in result.output


def test_bf16_on_a_cpu_without_native_bf16_says_it_will_be_slower(monkeypatch, caplog):
    """Emulated bf16 is slower than fp32: the model still loads (the answers are right), and says why it is slow."""
    import logging

    from agentplay.models import _local

    monkeypatch.setattr(_local, "native_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger="agentplay.models._local"):
        m = load_model("local:smollm2-135m-instruct", decode_dtype="bfloat16", torch_threads=1)
    m._engine.close()
    assert any("without bf16 matmul instructions" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="agentplay.models._local"):
        m = load_model("local:smollm2-135m-instruct", torch_threads=1)
    m._engine.close()
    assert not any("bf16" in r.getMessage() for r in caplog.records)


def test_bf16_on_a_model_without_the_lean_path_is_refused_naming_the_field(tmp_path, smollm2):
    """Only the lean decoder has bf16 weight copies: another architecture fails at load, not silently in fp32."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained(smollm2.model_dir)
    GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_layer=1, n_embd=32, n_head=2, n_positions=128)).save_pretrained(
        tmp_path / "gpt2")
    tok.save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ModelSpecError, match="decode_dtype: bfloat16 decoding needs the lean decode path"):
        load_model(f"hf:{tmp_path / 'gpt2'}", decode_dtype="bfloat16", torch_threads=1)
