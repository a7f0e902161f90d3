"""The GRPO trainer on the real SmolLM2: masked gradients, one real iteration in process
(full fine-tuning) and through `agentplay serve` over HTTP (LoRA)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

from agentplay.models import SamplingParams, default_model_dir, load_model
from agentplay.traces import RewardRecord, RoleTurn, TraceStore
from agentplay.trainers import GRPOLearner, SelfPlayTrainer, TrainConfig, TrainSample, rollout_run_id, sync_weights

sys.path.insert(0, str(Path(__file__).parent))
from _recipes import short_answers as build_recipe

FIXED = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = SamplingParams(max_tokens=6, temperature=0.0, logprobs=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_tool_token_positions_get_exactly_zero_gradient(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = default_model_dir()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    prompt = tok.apply_chat_template(FIXED, add_generation_prompt=True, return_dict=False)
    with torch.no_grad():
        gen = model.generate(torch.tensor([prompt]), max_new_tokens=5, do_sample=False)[0, len(prompt):].tolist()
    tool = tok.encode("<tool_response>Paris, 2.1M people</tool_response>", add_special_tokens=False)
    ids = gen + tool + gen
    mask = [1] * len(gen) + [0] * len(tool) + [1] * len(gen)
    cfg = TrainConfig(output_dir=tmp_path, learning_rate=1e-6, loss_type="grpo", report_to=[])
    learner = GRPOLearner(model, tok, cfg)
    captured = {}

    def keep(_module, _inp, out):
        if out.requires_grad:  # the loss forward, not the no-grad scoring of old logprobs
            out.retain_grad()
            captured["hidden"] = out

    learner.model.model.norm.register_forward_hook(keep)
    turn = RoleTurn(role="solver", group_id="g", prompt_token_ids=prompt, token_ids=ids, mask=mask,
                    logprobs=None, reward=RewardRecord(value=1.0))  # scored on-policy: ratio 1, no clipping
    out = learner.step([TrainSample(turn=turn, episode_id="e", advantage=1.0, reward=1.0)])
    assert out["grad_norm"] > 0
    grad = captured["hidden"].grad[0]  # (prompt + completion, hidden)
    # hidden state at position p scores token p+1: completion token j is scored at len(prompt)-1+j
    per_token = [float(grad[len(prompt) - 1 + j].abs().max()) for j in range(len(ids))]
    tool_grads = per_token[len(gen): len(gen) + len(tool)]
    model_grads = per_token[: len(gen)] + per_token[len(gen) + len(tool):]
    assert tool_grads == [0.0] * len(tool)
    assert all(g > 0 for g in model_grads)


async def test_one_iteration_in_process_updates_served_weights(tmp_path):
    served = load_model("local:smollm2-135m-instruct")
    try:
        before = await served.chat(FIXED, sampling=GREEDY)
        v0 = served.weight_version
        store = TraceStore(tmp_path / "traces.db")
        cfg = TrainConfig(recipe="unused", iterations=1, episodes_per_iteration=2, concurrency=2,
                          store=tmp_path / "traces.db", output_dir=tmp_path / "out", run_name="t",
                          learning_rate=1e-5, loss_type="dapo", micro_batch_size=8)
        summary = await SelfPlayTrainer(cfg, recipe=build_recipe(), served=served, store=store).run()
        after = await served.chat(FIXED, sampling=GREEDY)
        assert served.weight_version == v0 + 1 == summary.weight_version
        assert after.weight_version == v0 + 1
        diff = max(abs(a - b) for a, b in zip(before.choice.logprobs, after.choice.logprobs))
        assert diff > 1e-5, "the served model's logprobs did not move after a full fine-tuning step"
        episodes = list(store.episodes(rollout_run_id("t", 0)))
        assert len(episodes) == 2
        assert {t.weight_version for ep in episodes for t in ep.turns} == {v0}
        m = {p.name: p.value for p in store.metrics("t")}
        assert m["optimizer_step"] == 1 and m["samples"] > 0 and m["off_policy_lag/max"] == 0
        assert {"reward/answerer", "entropy", "dropped_group_fraction", "time/rollout_s", "time/train_s",
                "time/update_s"} <= set(m)
        assert (tmp_path / "out" / "checkpoint-00000" / "optimizer.pt").exists()
        assert list((tmp_path / "out" / "tensorboard").glob("events.out.tfevents.*"))
        # resuming a finished run on a fresh engine (a restarted process: base weights, version 0)
        # loads the full-weight checkpoint and publishes it under the checkpoint's version (the
        # policy's, not a count of this process's updates): the served model is exactly the one
        # that answered at checkpoint time, and nothing more runs
        await served.aclose()
        served = load_model("local:smollm2-135m-instruct")
        assert served.weight_version == 0
        again = await SelfPlayTrainer(cfg, recipe=build_recipe(), served=served, store=store).run(resume=True)
        assert (again.first_iteration, again.last_iteration) == (1, 0)
        assert served.weight_version == v0 + 1 == again.weight_version
        resumed = await served.chat(FIXED, sampling=GREEDY)
        assert resumed.weight_version == v0 + 1
        assert resumed.choice.completion_token_ids == after.choice.completion_token_ids
        assert resumed.choice.logprobs == after.choice.logprobs
    finally:
        await served.aclose()


async def test_optimizer_step_and_weight_version_count_real_steps_only(tmp_path):
    """Iterations with nothing to learn (one sample per group: no GRPO signal) take no step:
    `optimizer_step` and the weight version stay put, `skipped_step` says why; the first
    real step (after a resume with groups of four) moves both by one."""
    served = load_model("local:smollm2-135m-instruct")
    try:
        v0 = served.weight_version
        store = TraceStore(tmp_path / "traces.db")
        cfg = TrainConfig(recipe="unused", iterations=2, episodes_per_iteration=2, concurrency=2,
                          store=tmp_path / "traces.db", output_dir=tmp_path / "out", run_name="s", lora=True,
                          learning_rate=1e-3, micro_batch_size=8)
        idle = await SelfPlayTrainer(cfg, recipe=build_recipe(n=1), served=served, store=store).run()
        assert idle.weight_version == 0 and served.weight_version == v0  # nothing published
        more = cfg.model_copy(update={"iterations": 5})
        await SelfPlayTrainer(more, recipe=build_recipe(n=4), served=served, store=store).run(resume=True)

        def per_iteration(name: str) -> list[float]:
            return [p.value for p in store.metrics("s", name=name)]

        stepped = [s > 0 for s in per_iteration("samples")]
        assert stepped[:2] == [False, False] and any(stepped), "no iteration had a reward spread to learn from"
        steps_so_far = [float(sum(stepped[: i + 1])) for i in range(5)]
        assert per_iteration("skipped_step") == [0.0 if s else 1.0 for s in stepped]
        assert per_iteration("optimizer_step") == steps_so_far == per_iteration("weight_version")
        assert served.weight_version == steps_so_far[-1]
        first = stepped.index(True)
        turns = [t for ep in store.episodes(rollout_run_id("s", first)) for t in ep.turns]
        assert turns and {t.weight_version for t in turns} == {0}  # the steps before it were skipped
    finally:
        await served.aclose()


async def test_one_iteration_over_http_loads_the_adapter(tmp_path):
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "AGENTPLAY_TORCH_THREADS": "1"}
    server = subprocess.Popen(  # noqa: ASYNC220 - started once, waited for over HTTP
        [sys.executable, "-m", "agentplay.cli", "serve", "--model", "local:smollm2-135m-instruct",
         "--port", str(port), "--log-level", "warning"], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                async with httpx.AsyncClient() as client:
                    if (await client.get(f"{base}/health", timeout=2)).status_code == 200:
                        break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, "agentplay serve exited"
            assert time.time() < deadline, "agentplay serve did not come up"
            await asyncio.sleep(0.5)
        served = load_model("openai:smollm2-135m-instruct", base_url=f"{base}/v1")
        before = await served.chat(FIXED, sampling=GREEDY)
        v0 = before.weight_version
        store = TraceStore(tmp_path / "traces.db")
        cfg = TrainConfig(recipe="unused", iterations=1, episodes_per_iteration=2, concurrency=2,
                          store=tmp_path / "traces.db", output_dir=tmp_path / "out", run_name="h",
                          lora=True, lora_r=8, learning_rate=2e-3, loss_type="grpo", micro_batch_size=8)
        summary = await SelfPlayTrainer(cfg, recipe=build_recipe(), served=served, store=store).run()
        after = await served.chat(FIXED, sampling=GREEDY)
        assert after.weight_version == v0 + 1 == summary.weight_version
        diff = max(abs(a - b) for a, b in zip(before.choice.logprobs, after.choice.logprobs))
        assert diff > 1e-5, "the served model's logprobs did not move after the adapter was loaded"
        assert (tmp_path / "out" / "adapters" / "it00000" / "adapter_config.json").exists()
        turns = [t for ep in store.episodes(rollout_run_id("h", 0)) for t in ep.turns]
        assert turns and all(t.weight_version == v0 for t in turns)
        await served.aclose()
    finally:
        server.terminate()
        server.wait(timeout=30)


def _sequence_logps(model, prompt: list[int], completions: list[list[int]], temperature: float) -> list[torch.Tensor]:
    """Per-token logprobs of each completion under `model`, at the sampling temperature."""
    out = []
    with torch.no_grad():
        for ids in completions:
            logits = model(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1: -1].float() / temperature
            out.append(torch.log_softmax(logits, -1).gather(1, torch.tensor(ids).unsqueeze(1)).squeeze(1))
    return out


async def test_a_step_moves_the_served_model_toward_rewarded_samples(tmp_path):
    """The property everything else rests on: the served model's own samples, scored on
    policy, rewarded +1/-1, become more/less likely *in the served model* after one LoRA step."""
    from transformers import AutoModelForCausalLM

    temperature = 0.7
    served = load_model("local:smollm2-135m-instruct")
    try:
        res = await served.chat([{"role": "user", "content": "Name a colour and a number."}],
                                sampling=SamplingParams(max_tokens=10, temperature=temperature, n=8, seed=3))
        distinct = list({tuple(c.completion_token_ids): c for c in res.choices}.values())
        assert len(distinct) >= 4
        prompt, completions = res.prompt_token_ids, [c.completion_token_ids for c in distinct]
        cfg = TrainConfig(output_dir=tmp_path, lora=True, learning_rate=2e-4, loss_type="dapo",
                          temperature=temperature, micro_batch_size=4, report_to=[])
        learner = GRPOLearner(AutoModelForCausalLM.from_pretrained(served.model_dir, dtype=torch.float32),
                              served.tokenizer, cfg)
        # on policy: the trainer scores the samples as the engine did when it drew them
        # (temperature-scaled logprobs; raw ones would make every ratio != 1 and clip tokens)
        scored = _sequence_logps(learner.model, prompt, completions, temperature)
        assert max(float((s - torch.tensor(c.logprobs)).abs().max()) for s, c in zip(scored, distinct)) < 1e-3
        advantages = [1.0 if i % 2 == 0 else -1.0 for i in range(len(distinct))]
        samples = [TrainSample(turn=RoleTurn(role="r", group_id="g", prompt_token_ids=prompt, token_ids=c.completion_token_ids,
                                             mask=[1] * len(c.completion_token_ids), logprobs=c.logprobs,
                                             reward=RewardRecord(value=a)),
                               episode_id="e", advantage=a, reward=a) for a, c in zip(advantages, distinct)]
        before = _sequence_logps(served.hf_model, prompt, completions, temperature)
        out = learner.step(samples)
        assert out["clip_ratio/region_mean"] == 0.0
        await sync_weights(served, learner.model, lora=True, adapter_name="policy", adapter_dir=tmp_path / "adapter")
        after = _sequence_logps(served.hf_model, prompt, completions, temperature)
        trained = _sequence_logps(learner.model, prompt, completions, temperature)
        assert max(float((a - t).abs().max()) for a, t in zip(after, trained)) < 1e-4  # served == trainer
        change = [float(a.sum() - b.sum()) for a, b in zip(after, before)]
        up = [c for c, a in zip(change, advantages) if a > 0]
        down = [c for c, a in zip(change, advantages) if a < 0]
        assert sum(up) / len(up) > 0.05 and sum(down) / len(down) < -0.05, change
    finally:
        await served.aclose()
