"""One GRPO optimizer step on our batches, with TRL doing the math.

Why TRL's loss and not `GRPOTrainer.train()` with a `rollout_func`: TRL's loop
owns the prompts (a dataset), groups `num_generations` consecutive completions of
one prompt and normalises their rewards itself. Our rollouts are multi-role graph
episodes whose groups the recipe declares (any size, per role), produced by a
serving engine that lives outside the trainer and is updated between steps. So we
keep TRL for what it is good at -- the loss types (grpo, dr_grpo, dapo, bnpo,
cispo, sapo), clipping, KL against the reference, entropy, optimizer/scheduler
construction, PEFT wrapping and `report_to` logging -- by building a real
`GRPOTrainer` and calling its `compute_loss` on inputs we build, and we own the
20-line step around it (micro-batches -> backward -> clip -> optimizer step).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch

from ._advantages import TrainSample
from ._batch import MicroBatch, make_micro_batches
from ._config import TrainConfig
from ._shared_prompt import install_shared_prompt_scoring

__all__ = ["GRPOLearner"]

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def _never_called_reward(completions: list[Any], **_: Any) -> list[float]:
    """GRPOTrainer requires a reward function; ours come from the recipe, already in the traces."""
    raise RuntimeError("agentplay computes rewards in the recipe; TRL's reward path is not used")


class GRPOLearner:
    """A trainable copy of the policy plus TRL's GRPO loss, optimizer and loggers."""

    def __init__(self, model: Any, tokenizer: Any, cfg: TrainConfig, *, tensorboard_dir: Path | None = None):
        from datasets import Dataset
        from transformers import PrinterCallback, ProgressCallback
        from transformers.integrations import TensorBoardCallback
        from trl import GRPOConfig, GRPOTrainer

        self.cfg = cfg
        self.tokenizer = tokenizer
        peft_config = None
        if cfg.lora:
            from peft import LoraConfig

            peft_config = LoraConfig(
                r=cfg.lora_r,
                lora_alpha=cfg.lora_alpha,
                target_modules=cfg.lora_target_modules,
                lora_dropout=0.0,
                task_type="CAUSAL_LM",
            )
        args = GRPOConfig(
            output_dir=str(cfg.output_dir / "trl"),
            report_to=cfg.report_to,
            loss_type=cfg.loss_type,
            beta=cfg.beta,
            epsilon=cfg.epsilon,
            epsilon_high=cfg.epsilon_high,
            scale_rewards="group" if cfg.scale else "none",
            learning_rate=cfg.learning_rate,
            lr_scheduler_type="constant",
            weight_decay=cfg.weight_decay,
            max_grad_norm=cfg.max_grad_norm,
            max_completion_length=cfg.max_completion_length,
            temperature=cfg.temperature,
            num_generations=2,
            per_device_train_batch_size=2,
            use_cpu=True,
            bf16=False,
            save_strategy="no",
            logging_steps=1,
            activation_checkpointing=False,  # memory is not the limit on CPU; recomputation is pure cost
            seed=cfg.seed,
        )
        self.trainer = GRPOTrainer(
            model=model,
            reward_funcs=_never_called_reward,
            args=args,
            train_dataset=Dataset.from_dict({"prompt": ["unused"] * 2}),
            processing_class=tokenizer,
            peft_config=peft_config,
        )
        self.trainer.create_optimizer_and_scheduler(num_training_steps=cfg.iterations)
        for noisy in (ProgressCallback, PrinterCallback):  # our CLI prints its own progress
            self.trainer.remove_callback(noisy)
        for cb in self.trainer.callback_handler.callbacks:
            if isinstance(cb, TensorBoardCallback) and tensorboard_dir is not None:
                cb.logging_dir = str(tensorboard_dir)
        t = self.trainer
        if cfg.share_prompts:
            install_shared_prompt_scoring(t)
        t.callback_handler.on_train_begin(t.args, t.state, t.control)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_token_id = int(pad)

    @property
    def model(self) -> Any:
        return self.trainer.model

    @property
    def global_step(self) -> int:
        return int(self.trainer.state.global_step)

    def _logps(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        t = self.trainer
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        att = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        logps, _, _ = t._get_per_token_logps_and_entropies(t.model, ids, att, inputs["completion_ids"].size(1))
        return logps

    @torch.no_grad()
    def _complete_inputs(self, mb: MicroBatch) -> dict[str, torch.Tensor]:
        """Score rows without sampling logprobs on-policy, and add the reference logprobs for KL."""
        inputs = dict(mb.inputs)
        if bool(mb.missing_old_logps.any()):
            current = self._logps(inputs)
            old = inputs["old_per_token_logps"].clone()
            old[mb.missing_old_logps] = current[mb.missing_old_logps]
            inputs["old_per_token_logps"] = old
        if self.cfg.beta != 0.0:
            t = self.trainer
            if t.ref_model is not None:
                ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
                att = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
                ref, _, _ = t._get_per_token_logps_and_entropies(t.ref_model, ids, att, inputs["completion_ids"].size(1))
            else:  # PEFT: the base model is the adapter disabled
                with t.accelerator.unwrap_model(t.model).disable_adapter():
                    ref = self._logps(inputs)
            inputs["ref_per_token_logps"] = ref
        return inputs

    def step(self, samples: list[TrainSample]) -> dict[str, float]:
        """One optimizer step over all samples; returns TRL's loss metrics for this step."""
        t = self.trainer
        t.model.train()
        mbs = make_micro_batches(
            samples,
            micro_batch_size=self.cfg.micro_batch_size,
            max_completion_length=self.cfg.max_completion_length,
            pad_token_id=self.pad_token_id,
            share_prompts=self.cfg.share_prompts,
        )
        # TRL divides per-micro-batch losses by the accumulation count (grpo, bnpo,
        # dr_grpo) or by num_items * accumulation / steps_per_generation (dapo,
        # cispo); with one optimizer step per batch both must mean "the whole batch".
        accum = len(mbs)
        t.current_gradient_accumulation_steps = accum
        scale = t.args.steps_per_generation / accum
        total_loss = 0.0
        for mb in mbs:
            inputs = self._complete_inputs(mb)
            inputs["num_items_in_batch"] = inputs["num_items_in_batch"] * scale
            loss = t.compute_loss(t.model, inputs)
            t.accelerator.backward(loss)
            total_loss += float(loss.detach())
        grad_norm = t.accelerator.clip_grad_norm_(t.model.parameters(), self.cfg.max_grad_norm)
        t.optimizer.step()
        t.lr_scheduler.step()
        t.optimizer.zero_grad(set_to_none=True)
        t.state.global_step += 1
        out = {"loss": total_loss, "grad_norm": float(grad_norm), "micro_batches": float(accum)}
        for key, values in t._metrics["train"].items():
            finite = [v for v in values if v is not None and math.isfinite(v)]
            if finite:
                out[key] = sum(finite) / len(finite)
        t._metrics["train"].clear()
        return out

    def report(self, metrics: dict[str, float]) -> None:
        """Send one iteration's metrics through TRL/transformers' `report_to` (TensorBoard)."""
        t = self.trainer
        t.callback_handler.on_log(t.args, t.state, t.control, logs=dict(metrics))

    def close(self) -> None:
        t = self.trainer
        t.callback_handler.on_train_end(t.args, t.state, t.control)
