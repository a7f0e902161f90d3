"""One GRPO step on a fixed batch, run as one process or under torchrun as several;
the main process writes the loss and the updated trainable weights to argv[1].
Used by test_trainer_data_parallel.py (it compares one process with two)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch


def batch(tok):
    from agentplay.traces import RewardRecord, RoleTurn
    from agentplay.trainers import TrainSample

    samples = []
    for g, question in enumerate(["Name a colour.", "Name a fruit."]):
        prompt = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                         return_dict=False)
        for k, answer in enumerate(["Red", "Blue is nice", "Green, I think", "Yellow!"]):
            ids = tok.encode(answer, add_special_tokens=False) + [tok.eos_token_id]
            reward = float(k % 2)
            turn = RoleTurn(role="r", group_id=f"g{g}", prompt_token_ids=prompt, token_ids=ids, mask=[1] * len(ids),
                            logprobs=[-1.0 - 0.1 * j for j in range(len(ids))], reward=RewardRecord(value=reward))
            samples.append(TrainSample(turn=turn, episode_id=f"e{g}", advantage=reward - 0.5, reward=reward))
    return samples


def main(out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from agentplay.models import default_model_dir
    from agentplay.trainers import GRPOLearner, TrainConfig
    from agentplay.trainers._distributed import data_parallel

    torch.manual_seed(0)
    folder = default_model_dir()
    tok = AutoTokenizer.from_pretrained(folder)
    cfg = TrainConfig(output_dir=out.parent / f"trl-{os.environ.get('RANK', 'single')}", lora=True, lora_r=4,
                      learning_rate=1e-3, micro_batch_size=2, report_to=[], loss_type="dapo")
    learner = GRPOLearner(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), tok, cfg)
    dp = data_parallel()
    dp.broadcast_parameters(learner.model)
    before = {n: p.detach().clone() for n, p in learner.model.named_parameters() if p.requires_grad}
    metrics = learner.step(batch(tok))
    if dp.is_main:
        after = {n: p.detach().clone() for n, p in learner.model.named_parameters() if p.requires_grad}
        torch.save({"metrics": metrics, "before": before, "after": after, "world": dp.world}, out)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
