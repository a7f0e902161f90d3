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
Every TRL internal that needs (scoring hook, accumulation count, metrics) lives in
`_trl_grpo`; this module only calls that subclass's methods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ._advantages import TrainSample
from ._batch import MicroBatch, make_micro_batches
from ._config import TrainConfig
from ._distributed import data_parallel
from ._rollout_correction import CorrectionConfig, MismatchStats

__all__ = ["GRPOLearner", "resolve_device"]


def resolve_device(cfg: TrainConfig) -> tuple[str, bool]:
    """(torch device, bf16 mixed precision) from `cfg.device` / `cfg.dtype`: `auto` is CUDA with
    bf16 when present, else CPU in float32."""
    cuda = torch.cuda.is_available()
    device = ("cuda" if cuda else "cpu") if cfg.device == "auto" else cfg.device
    on_cuda = device.startswith("cuda")
    if on_cuda and not cuda:
        raise ValueError(f"device: {cfg.device!r} asked for CUDA, but torch sees no CUDA device")
    if cfg.dtype == "bfloat16" and not on_cuda:
        raise ValueError("dtype: bfloat16 training needs a CUDA device (on CPU use float32 or auto)")
    bf16 = cfg.dtype == "bfloat16" or (cfg.dtype == "auto" and on_cuda and torch.cuda.is_bf16_supported())
    return device, bf16


def _no_loss(mb: MicroBatch) -> MicroBatch:
    """A micro-batch that runs the loss (and its cross-process metric gathers) but trains on
    nothing: a data-parallel rank with fewer micro-batches than the others gets these."""
    inputs = dict(mb.inputs)
    inputs["tool_mask"] = torch.zeros_like(inputs["tool_mask"])
    inputs["advantages"] = torch.zeros_like(inputs["advantages"])
    return MicroBatch(inputs=inputs, missing_old_logps=torch.zeros_like(mb.missing_old_logps), size=mb.size,
                      temperatures=mb.temperatures, roles=mb.roles)


class GRPOLearner:
    """A trainable copy of the policy plus TRL's GRPO loss, optimizer and loggers."""

    def __init__(self, model: Any, tokenizer: Any, cfg: TrainConfig, *, tensorboard_dir: Path | None = None):
        from transformers import PrinterCallback, ProgressCallback
        from transformers.integrations import TensorBoardCallback
        from trl import GRPOConfig

        from ._trl_grpo import AgentplayGRPOTrainer

        self.cfg = cfg
        self.tokenizer = tokenizer
        device, bf16 = resolve_device(cfg)
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
            use_cpu=device == "cpu",
            bf16=bf16,
            save_strategy="no",
            logging_steps=1,
            activation_checkpointing=False,  # memory is not the limit on CPU; recomputation is pure cost
            seed=cfg.seed,
        )
        self.trainer = AgentplayGRPOTrainer(model=model, args=args, processing_class=tokenizer,
                                            peft_config=peft_config, share_prompts=cfg.share_prompts)
        self.correction = CorrectionConfig(tis_cap=cfg.tis_cap, mis_bound=cfg.mis_bound)
        self.trainer.enable_rollout_correction(self.correction.active)
        self.trainer.create_optimizer_and_scheduler(num_training_steps=cfg.iterations)
        for noisy in (ProgressCallback, PrinterCallback):  # our CLI prints its own progress
            self.trainer.remove_callback(noisy)
        for cb in self.trainer.callback_handler.callbacks:
            if isinstance(cb, TensorBoardCallback) and tensorboard_dir is not None:
                cb.logging_dir = str(tensorboard_dir)
        t = self.trainer
        t.callback_handler.on_train_begin(t.args, t.state, t.control)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_token_id = int(pad)

    @property
    def model(self) -> Any:
        return self.trainer.model

    @property
    def device(self) -> torch.device:
        return self.trainer.accelerator.device

    @property
    def global_step(self) -> int:
        return int(self.trainer.state.global_step)

    @torch.no_grad()
    def _complete_inputs(self, mb: MicroBatch) -> dict[str, torch.Tensor]:
        """Move a micro-batch to the device, fill the logprobs of rows the engine did not record
        (scored on-policy) and add the reference logprobs for KL."""
        t = self.trainer
        inputs = {k: v.to(self.device) for k, v in mb.inputs.items()}
        missing = mb.missing_old_logps.to(self.device)
        if bool(missing.any()):
            current = t.score(t.model, inputs)
            old = inputs["old_per_token_logps"].clone()
            old[missing] = current[missing]
            inputs["old_per_token_logps"] = old
        if self.cfg.beta != 0.0:
            if t.ref_model is not None:
                ref = t.score(t.ref_model, inputs)
            else:  # PEFT: the base model is the adapter disabled
                with t.accelerator.unwrap_model(t.model).disable_adapter():
                    ref = t.score(t.model, inputs)
            inputs["ref_per_token_logps"] = ref
        return inputs

    def step(self, samples: list[TrainSample]) -> dict[str, float]:
        """One optimizer step over all samples; returns TRL's loss metrics, the rollout/trainer
        mismatch per role (measured by the loss's own scoring, before the update) and what the
        rollout correction touched."""
        from ._trl_grpo import RowScoring

        t = self.trainer
        model, optimizer, scheduler = t.model, t.optimizer, t.lr_scheduler
        assert model is not None and optimizer is not None and scheduler is not None, "set up in __init__"
        model.train()
        mbs = make_micro_batches(
            samples,
            micro_batch_size=self.cfg.micro_batch_size,
            max_completion_length=self.cfg.max_completion_length,
            pad_token_id=self.pad_token_id,
            share_prompts=self.cfg.share_prompts,
            default_temperature=self.cfg.temperature,
        )
        if self.cfg.loss_type == "sapo" and any(mb.clip_high_bonus is not None for mb in mbs):
            raise ValueError("loss_type: 'sapo' has no clip bound to widen, but a role's estimator declares "
                             "clip_high_component (Agent0's ADPO); use a clipped loss: grpo, bnpo, dr_grpo, "
                             "dapo or cispo")
        # TRL divides per-micro-batch losses by the accumulation count (grpo, bnpo,
        # dr_grpo) or by num_items * accumulation / steps_per_generation (dapo,
        # cispo); with one optimizer step per batch both must mean "the whole batch".
        dp = data_parallel()
        mbs = dp.shard(mbs, empty=_no_loss)  # data-parallel: this process's share of the batch
        accum = len(mbs)
        t.set_accumulation(accum)
        steps_per_generation = t.args.steps_per_generation
        assert steps_per_generation is not None, "GRPOConfig.__post_init__ fills it in"
        scale = steps_per_generation / accum
        eps_high = self.cfg.epsilon_high if self.cfg.epsilon_high is not None else self.cfg.epsilon
        mismatch = MismatchStats(self.cfg.epsilon, eps_high)
        touched: dict[str, float] = {}
        total_loss = 0.0
        for mb in mbs:
            assert mb.temperatures is not None and mb.roles is not None
            t.rows = RowScoring(temperatures=mb.temperatures)  # the old/ref logprobs are per-row too
            inputs = self._complete_inputs(mb)
            known = ~mb.missing_old_logps.to(self.device)
            rollout = inputs["old_per_token_logps"]
            clip_high = None if mb.clip_high_bonus is None else float(t.epsilon_high) + mb.clip_high_bonus
            t.rows = RowScoring(temperatures=mb.temperatures, rollout_logps=rollout, rollout_known=known,
                                correction=self.correction, clip_high=clip_high)
            if self.correction.active:  # the clipped ratio is against the trainer's own logprobs
                del inputs["old_per_token_logps"]
            inputs["num_items_in_batch"] = inputs["num_items_in_batch"] * scale
            try:
                loss = t.compute_loss(t.model, inputs)
            finally:
                rows, t.rows = t.rows, None
            t.accelerator.backward(loss)
            total_loss += float(loss.detach())
            assert rows.trainer_logps is not None
            trained = (inputs["completion_mask"] * inputs["tool_mask"]).bool()
            mismatch.add(mb.roles, rows.trainer_logps, rollout, trained & known[:, None])
            for key, value in (rows.correction_counts or {}).items():
                touched[key] = touched.get(key, 0.0) + value
        dp.average_gradients([p for p in model.parameters() if p.requires_grad])
        total_loss = dp.sum(total_loss) / dp.world  # each process's loss is scaled for averaged gradients
        grad_norm = t.accelerator.clip_grad_norm_(model.parameters(), self.cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        t.state.global_step += 1
        out = {"loss": total_loss, "grad_norm": float(grad_norm), "micro_batches": float(accum)}
        out.update(t.pop_metrics())
        if dp.world > 1:  # every process measured its own share
            mismatch.merge(dp.gather(mismatch.state()))
            touched = {k: sum(d.get(k, 0.0) for d in dp.gather(touched)) for k in touched}
        out.update(mismatch.metrics())
        if touched:
            tokens, seqs = max(touched["tokens"], 1.0), max(touched["sequences"], 1.0)
            out["correction/tis_truncated_fraction"] = touched["tis_truncated_tokens"] / tokens
            out["correction/mis_rejected_sequence_fraction"] = touched["mis_rejected_sequences"] / seqs
            out["correction/mis_rejected_token_fraction"] = touched["mis_rejected_tokens"] / tokens
        return out

    def report(self, metrics: dict[str, float], *, step: int | None = None) -> None:
        """Send one iteration's metrics through TRL/transformers' `report_to` (TensorBoard),
        at x = `step` (the iteration: iterations without an optimizer step log too)."""
        import dataclasses

        t = self.trainer
        state = t.state if step is None else dataclasses.replace(t.state, global_step=step)
        t.callback_handler.on_log(t.args, state, t.control, logs=dict(metrics))

    def close(self) -> None:
        t = self.trainer
        t.callback_handler.on_train_end(t.args, t.state, t.control)
