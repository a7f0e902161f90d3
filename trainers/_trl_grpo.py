"""Every use of TRL internals, in one `GRPOTrainer` subclass.

We build a real `GRPOTrainer` and call its loss (`compute_loss`) on micro-batches we
make; we never run its `train()` loop (see `_learner`). That needs a few things TRL
does not offer as public API, all of them here and nowhere else:

- our own per-token scoring, overriding `_get_per_token_logps_and_entropies`, which
  TRL's loss, and our old/reference logprobs, call: every row at the temperature it
  was sampled with (roles sample at their own), and a group's shared prompt encoded
  once (`_shared_prompt`). Scoring ourselves also keeps TRL 1.15+'s chunked LM head,
  slow on CPU, out of the loss;
- the logprobs the loss computed, captured on the way (the rollout/trainer mismatch is
  measured on them, at no extra forward pass), and the rollout-correction weights
  (TIS/MIS) derived from them and handed to the loss as TRL's own
  `importance_sampling_ratio` input;
- per-row clip bounds (Agent0's ADPO widens the upper bound of uncertain tasks): TRL
  clips with `1 - self.epsilon_low` and `1 + self.epsilon_high`, scalars set once; for a
  micro-batch with per-row bounds they are (B, 1) tensors for the duration of its loss
  (`torch.clamp` broadcasts them over the tokens), then put back;
- `current_gradient_accumulation_steps` (one optimizer step per batch of any size),
  `_metrics` (TRL's loss metrics), `_entropy_bonus_enabled`;
- a placeholder dataset and a reward function that raises: TRL's constructor wants
  both, our rewards come from the recipe.

`check_trl_hooks` verifies these still have the shape we rely on and fails naming
the installed TRL version when one does not (tests/test_trl_hooks.py runs it).
"""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import selective_log_softmax, selective_log_softmax_and_entropy

from agentplay.errors import AgentplayError

from ._rollout_correction import CorrectionConfig, correction_weights
from ._shared_prompt import PackedRows, shared_prompt_length

__all__ = ["AgentplayGRPOTrainer", "RowScoring", "TRLCompatibilityError", "check_trl_hooks", "trl_version"]

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

TESTED_TRL = "1.14 and 1.16"
"""TRL versions these hooks were written against (pyproject pins the range)."""


class TRLCompatibilityError(AgentplayError, RuntimeError):
    """The installed TRL changed an internal this module relies on."""


def trl_version() -> str:
    import trl

    return str(trl.__version__)


def _incompatible(what: str) -> TRLCompatibilityError:
    return TRLCompatibilityError(
        f"TRL {trl_version()}: {what}. agentplay's GRPO hooks (trainers/_trl_grpo.py) were written for "
        f"TRL {TESTED_TRL}; install one (pip install 'trl>=0.25,<1.17') or update the hooks")


def _never_called_reward(completions: list[Any], **_: Any) -> list[float | None]:
    """GRPOTrainer requires a reward function; ours come from the recipe, already in the traces."""
    raise RuntimeError("agentplay computes rewards in the recipe; TRL's reward path is not used")


def check_trl_hooks(trainer: Any | None = None) -> None:
    """Raise `TRLCompatibilityError` (naming the TRL version) if a TRL internal we use changed
    shape: the class-level hooks always, the instance attributes when `trainer` is given."""
    from trl import GRPOTrainer

    score = getattr(GRPOTrainer, "_get_per_token_logps_and_entropies", None)
    if score is None:
        raise _incompatible("GRPOTrainer._get_per_token_logps_and_entropies no longer exists")
    params = list(inspect.signature(score).parameters)
    if params[:2] != ["self", "model"]:
        raise _incompatible(f"GRPOTrainer._get_per_token_logps_and_entropies takes {params}, "
                            "expected (self, model, input_ids, attention_mask, logits_to_keep, ...)")
    loss = getattr(GRPOTrainer, "_compute_loss", None)
    if loss is None or list(inspect.signature(loss).parameters) != ["self", "model", "inputs"]:
        raise _incompatible("GRPOTrainer._compute_loss(self, model, inputs) changed or is gone")
    source = inspect.getsource(loss)
    for needle, meaning in (
        ("self._get_per_token_logps_and_entropies(", "the loss no longer scores tokens through the hook"),
        ('inputs["importance_sampling_ratio"]', "the loss no longer reads importance_sampling_ratio"),
        ("self.vllm_importance_sampling_correction", "the importance-sampling gate changed"),
        ("current_gradient_accumulation_steps", "the loss no longer normalises by "
                                                "current_gradient_accumulation_steps"),
        ('inputs.get("old_per_token_logps")', "the loss no longer reads old_per_token_logps"),
        ('inputs["tool_mask"]', "the loss no longer reads tool_mask"),
        ("1 + self.epsilon_high", "the loss no longer clips at 1 + self.epsilon_high (per-row clip bounds)"),
        ("1 - self.epsilon_low", "the loss no longer clips at 1 - self.epsilon_low (per-row clip bounds)"),
    ):
        if needle not in source:
            raise _incompatible(f"GRPOTrainer._compute_loss: {meaning} ({needle!r} not found)")
    if trainer is not None:
        metrics = getattr(trainer, "_metrics", None)
        if not isinstance(metrics, dict) or "train" not in metrics:
            raise _incompatible(f"GRPOTrainer._metrics is {type(metrics).__name__}, expected a dict with 'train'")
        for name, kind in (("_entropy_bonus_enabled", bool), ("temperature", float | int), ("use_vllm", bool),
                           ("vllm_importance_sampling_correction", bool), ("epsilon_low", float | int),
                           ("epsilon_high", float | int)):
            if not isinstance(getattr(trainer, name, None), kind):
                raise _incompatible(f"GRPOTrainer.{name} is missing or not a {kind}")


@dataclass
class RowScoring:
    """What the scoring hook needs to know about the rows of the micro-batch being scored."""

    temperatures: torch.Tensor
    """(B,) the temperature each row's tokens are scored at: the one they were sampled at."""
    rollout_logps: torch.Tensor | None = None
    """(B, T) the engine's logprobs; with a correction on, the weights are derived from them."""
    rollout_known: torch.Tensor | None = None
    """(B,) bool: rows whose rollout logprobs were recorded (others get weight 1)."""
    correction: CorrectionConfig | None = None
    trainer_logps: torch.Tensor | None = None
    """Filled by the loss's scoring pass: the trainer's logprobs (detached) before any update."""
    correction_counts: dict[str, float] | None = None
    clip_high: torch.Tensor | None = None
    """(B,) each row's upper clip bound epsilon_high (the ratio is clipped at 1 + it); None: TRL's
    one bound for every row."""


class AgentplayGRPOTrainer(GRPOTrainer):
    """GRPOTrainer with our scoring hook, row settings and accumulation count."""

    args: GRPOConfig  # Trainer declares TrainingArguments; GRPOTrainer is always given a GRPOConfig

    def __init__(self, *, model: Any, args: Any, processing_class: Any, peft_config: Any = None,
                 share_prompts: bool = True):
        super().__init__(model=model, reward_funcs=_never_called_reward, args=args,
                         train_dataset=Dataset.from_dict({"prompt": ["unused"] * 2}),
                         processing_class=processing_class, peft_config=peft_config)
        self.share_prompts = share_prompts
        self.rows: RowScoring | None = None
        """Set by the learner around each micro-batch; None scores at TRL's one temperature."""
        self._loss_inputs: dict[str, Any] | None = None
        check_trl_hooks(self)

    # -- what the learner calls ------------------------------------------------------------

    def set_accumulation(self, micro_batches: int) -> None:
        """One optimizer step over `micro_batches` micro-batches (TRL divides losses by it)."""
        self.current_gradient_accumulation_steps = micro_batches

    def enable_rollout_correction(self, on: bool) -> None:
        """Route our TIS/MIS weights through TRL's `importance_sampling_ratio` input. TRL gates
        it behind vLLM; we never call TRL's generation, so the flag only opens the gate."""
        self.use_vllm = on
        self.vllm_importance_sampling_correction = on

    def pop_metrics(self) -> dict[str, float]:
        """TRL's loss metrics since the last call, averaged over micro-batches."""
        out: dict[str, float] = {}
        for key, values in self._metrics["train"].items():
            finite = [v for v in values if v is not None and math.isfinite(v)]
            if finite:
                out[key] = sum(finite) / len(finite)
        self._metrics["train"].clear()
        return out

    def score(self, model: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-token logprobs of the completions of `inputs` under `model`."""
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        att = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        logps, _, _ = self._get_per_token_logps_and_entropies(model, ids, att, inputs["completion_ids"].size(1))
        return logps

    # -- TRL hooks ---------------------------------------------------------------------------

    def _compute_loss(self, model: Any, inputs: dict[str, Any]) -> torch.Tensor:
        self._loss_inputs = inputs
        low, high = self.epsilon_low, self.epsilon_high
        if self.rows is not None and self.rows.clip_high is not None:
            rows = self.rows.clip_high.to(inputs["advantages"].device, torch.float32)[:, None]
            # ignore: TRL declares float bounds but only feeds them to torch.clamp, which takes per-row tensors
            self.epsilon_low, self.epsilon_high = torch.full_like(rows, float(low)), rows  # type: ignore[assignment]
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._loss_inputs = None
            self.epsilon_low, self.epsilon_high = low, high

    def _get_per_token_logps_and_entropies(
        self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int,
        *args: Any, batch_size: int | None = None, compute_entropy: bool = False,
        compute_aux_loss: bool = False, **extra: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        if args or compute_aux_loss or any(v is not None for v in extra.values()):
            raise _incompatible("the scoring hook was called with arguments for multimodal or MoE models, "
                                "which agentplay's trainer does not handle")
        temps = self._row_temperatures(input_ids.size(0), input_ids.device)
        if self.share_prompts and shared_prompt_length(input_ids, attention_mask, logits_to_keep) is not None:
            logps, entropies = self._packed(model, input_ids, attention_mask, logits_to_keep, temps, compute_entropy)
        else:
            logps, entropies = self._padded(model, input_ids, attention_mask, logits_to_keep, temps, compute_entropy)
        if self._loss_inputs is not None and self.rows is not None:
            self._after_loss_scoring(logps.detach())
        return logps, entropies, None

    # -- internals ---------------------------------------------------------------------------

    def _row_temperatures(self, rows: int, device: torch.device) -> torch.Tensor:
        if self.rows is None:
            return torch.full((rows,), float(self.temperature), device=device)
        if self.rows.temperatures.numel() != rows:
            raise RuntimeError(f"scoring {rows} rows with {self.rows.temperatures.numel()} row temperatures")
        return self.rows.temperatures.to(device)

    def _tokens(self, logits: torch.Tensor, labels: torch.Tensor, temps: torch.Tensor, compute_entropy: bool,
                mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = logits / temps  # temps broadcast over (..., vocab); TRL's kernels take one float
        row_mask = {"row_mask": mask} if mask is not None else {}
        if compute_entropy:
            return selective_log_softmax_and_entropy(
                logits, labels, entropy_requires_grad=self._entropy_bonus_enabled, temperature=1.0, **row_mask)
        return selective_log_softmax(logits, labels, temperature=1.0, **row_mask), None

    def _packed(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: int,
                temps: torch.Tensor, compute_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
        packed = PackedRows(input_ids, attention_mask, keep, dtype)
        logits = model(input_ids=packed.input_ids, attention_mask=packed.attention_mask,
                       position_ids=packed.position_ids, logits_to_keep=packed.score_positions,
                       use_cache=False).logits
        per_token = temps[packed.rows][None, :, None]
        logps, ent = self._tokens(logits, packed.labels[None], per_token, compute_entropy, None)
        return packed.unpack(logps[0]), None if ent is None else packed.unpack(ent[0])

    def _padded(self, model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: int,
                temps: torch.Tensor, compute_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep + 1,
                       use_cache=False).logits[:, :-1, :][:, -keep:, :]
        completion, mask = input_ids[:, -keep:], attention_mask[:, -keep:]
        return self._tokens(logits, completion, temps[:, None, None], compute_entropy, mask)

    def _after_loss_scoring(self, trainer_logps: torch.Tensor) -> None:
        """The loss just scored the micro-batch with this step's weights (no update yet):
        keep the logprobs for the mismatch metrics and, with a correction on, give the loss
        its per-token weights."""
        rows, inputs = self.rows, self._loss_inputs
        assert rows is not None and inputs is not None
        rows.trainer_logps = trainer_logps
        if rows.correction is None or not rows.correction.active:
            return
        assert rows.rollout_logps is not None and rows.rollout_known is not None
        mask = (inputs["completion_mask"] * inputs["tool_mask"]).bool() & rows.rollout_known[:, None]
        weights, counts = correction_weights(trainer_logps, rows.rollout_logps, mask, rows.correction)
        inputs["importance_sampling_ratio"] = weights.to(trainer_logps.dtype)
        rows.correction_counts = counts

