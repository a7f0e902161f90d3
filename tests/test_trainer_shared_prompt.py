"""Shared-prompt packing: a group's completions scored in one forward with the prompt
encoded once give the same logprobs, entropies, loss, KL and gradients as TRL's
row-by-row scoring, on the real SmolLM2."""

from __future__ import annotations

import pytest
import torch
from agentplay.trainers import GRPOLearner, TrainConfig, TrainSample, make_micro_batches
from agentplay.trainers._shared_prompt import shared_prompt_length

from agentplay.models import default_model_dir
from agentplay.traces import RewardRecord, RoleTurn

MAX_LEN = 48


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_dir())


def _model():
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(default_model_dir(), dtype=torch.float32)


def _prompt(tok, text: str) -> list[int]:
    return tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                   return_dict=False)


def _sample(tok, prompt: list[int], text: str, advantage: float, tool: str = "") -> TrainSample:
    written = tok.encode(text, add_special_tokens=False)
    tool_ids = tok.encode(tool, add_special_tokens=False) if tool else []
    ids = written + tool_ids + written[:2] if tool else written
    mask = [1] * len(written) + [0] * len(tool_ids) + [1] * 2 if tool else [1] * len(written)
    turn = RoleTurn(role="solver", group_id="g", prompt_token_ids=prompt, token_ids=ids, mask=mask,
                    logprobs=None, reward=RewardRecord(value=advantage))
    return TrainSample(turn=turn, episode_id="e", advantage=advantage, reward=advantage)


def _group(tok) -> list[TrainSample]:
    """Two prompts of different lengths, completions of different lengths, one with tool tokens."""
    a = _prompt(tok, "Give an input x such that f(x) == 6 for def f(x): return len(x). " * 3)
    b = _prompt(tok, "What is 2 + 2?")
    return [
        _sample(tok, a, "```input\n[1, 2, 3, 4, 5, 6]\n```", 1.2),
        _sample(tok, a, "```input\n6\n```", -0.8),
        _sample(tok, a, "x = 'abcdef'", 0.5, tool="<tool_response>ok</tool_response>"),
        _sample(tok, a, "I think the answer is [0] * 6 because len counts items", -0.9),
        _sample(tok, a, "6", 0.0),
        _sample(tok, b, "4", 0.7),
        _sample(tok, b, "The sum is four.", -0.7),
        _sample(tok, _prompt(tok, "Say hi."), "hi", 0.3),
    ]


def test_rows_of_one_prompt_share_a_micro_batch(tokenizer):
    samples = _group(tokenizer)
    mbs = make_micro_batches(samples, micro_batch_size=4, max_completion_length=MAX_LEN, pad_token_id=0,
                             share_prompts=True)
    # prompt a: 4 rows packed + 1 left over; prompt b: 2 rows packed; the leftover and "Say hi." by length
    assert [mb.size for mb in mbs] == [4, 2, 2]
    seen = sorted(float(a) for mb in mbs for a in mb.inputs["advantages"])
    assert seen == pytest.approx(sorted(s.advantage for s in samples))
    lengths = [shared_prompt_length(torch.cat([mb.inputs["prompt_ids"], mb.inputs["completion_ids"]], 1),
                                    torch.cat([mb.inputs["prompt_mask"], mb.inputs["completion_mask"]], 1),
                                    mb.inputs["completion_ids"].size(1)) for mb in mbs]
    assert lengths[0] == len(samples[0].turn.prompt_token_ids)
    assert lengths[1] == len(samples[5].turn.prompt_token_ids)
    assert lengths[2] is None  # two different prompts: TRL's row-by-row path
    total = sum(sum(s.turn.mask) for s in samples)
    assert all(float(mb.inputs["num_items_in_batch"]) == total for mb in mbs)
    unshared = make_micro_batches(samples, micro_batch_size=4, max_completion_length=MAX_LEN, pad_token_id=0)
    assert [mb.size for mb in unshared] == [4, 4]


def test_packed_scoring_equals_row_by_row_scoring(tmp_path, tokenizer):
    samples = _group(tokenizer)[:5]
    cfg = TrainConfig(output_dir=tmp_path, micro_batch_size=8, max_completion_length=MAX_LEN, report_to=[])
    learner = GRPOLearner(_model(), tokenizer, cfg)
    (mb,) = make_micro_batches(samples, micro_batch_size=8, max_completion_length=MAX_LEN,
                               pad_token_id=learner.pad_token_id, share_prompts=True)
    t = learner.trainer
    inputs = mb.inputs
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    att = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    keep = inputs["completion_ids"].size(1)
    shapes = []
    hook = learner.model.register_forward_pre_hook(lambda _m, _a, kw: shapes.append(tuple(kw["input_ids"].shape)),
                                                   with_kwargs=True)
    with torch.no_grad():
        packed, packed_entropy, _ = t._get_per_token_logps_and_entropies(t.model, ids, att, keep, compute_entropy=True)
        t.share_prompts = False  # the same hook, one padded row per completion
        rows, rows_entropy, _ = t._get_per_token_logps_and_entropies(t.model, ids, att, keep, compute_entropy=True)
    hook.remove()
    prompt_len = len(samples[0].turn.prompt_token_ids)
    # one sequence with the prompt once, then the row-by-row batch
    assert shapes == [(1, prompt_len + int(inputs["completion_mask"].sum())), tuple(ids.shape)]
    real = inputs["completion_mask"].bool()
    assert float((packed - rows)[real].abs().max()) < 1e-4
    assert float((packed_entropy - rows_entropy)[real].abs().max()) < 1e-4
    assert float(packed[~real].abs().max()) == 0.0
    assert float(rows[real].min()) < -1.0  # real, unequal scores were compared, not zeros


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_a_step_with_shared_prompts_has_the_same_loss_kl_and_gradient(tmp_path, tokenizer, lora):
    """From the same weights after one update (beta > 0, so KL is non-zero and the
    reference logprobs -- the adapter disabled, or the frozen copy -- go through the packed
    path too), a step's loss, KL, entropy and gradient agree with row-by-row scoring. One
    prompt's rows, one micro-batch both ways: TRL logs KL and entropy per micro-batch."""
    samples = _group(tokenizer)[:4]

    def learner(share: bool) -> GRPOLearner:
        cfg = TrainConfig(output_dir=tmp_path / str(share), loss_type="dapo", beta=0.5, lora=lora,
                          learning_rate=1e-3 if lora else 2e-5, micro_batch_size=4,
                          max_completion_length=MAX_LEN, report_to=[], share_prompts=share)
        return GRPOLearner(_model(), tokenizer, cfg)

    rows, packed = learner(False), learner(True)
    rows.step(samples)
    with torch.no_grad():  # the packed learner starts from the row learner's updated weights
        moved = dict(rows.model.named_parameters())
        for name, p in packed.model.named_parameters():
            if p.requires_grad:
                p.copy_(moved[name])
    # lora_B: its gradient is non-zero from the first step (lora_A's is zero while B is)
    name = next(n for n, p in rows.model.named_parameters()
                if p.requires_grad and "q_proj" in n and ("lora_B" in n or not lora))
    results = {}
    for key, ln in (("rows", rows), ("packed", packed)):
        grads: list[torch.Tensor] = []
        ln.model.get_parameter(name).register_hook(lambda g, grads=grads: grads.append(g.clone()))
        results[key] = (ln.step(samples), sum(grads))
    (r, gr), (p, gp) = results["rows"], results["packed"]
    assert r["micro_batches"] == p["micro_batches"] == 1
    assert r["kl"] > 1e-4  # the first step moved the policy away from the reference
    for key in ("loss", "kl", "entropy", "grad_norm"):
        assert p[key] == pytest.approx(r[key], rel=1e-4, abs=1e-7), key
    assert float((gp - gr).norm() / gr.norm()) < 1e-4
