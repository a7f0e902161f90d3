"""Every knob of the GRPO trainer in one pydantic object (the CLI fills it)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

LossType = Literal["grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo"]
"""TRL's loss types that work on token-level ratios without extra state (luspo and vespo
need sequence-level importance sampling or vLLM-side ratios we do not have)."""


class TrainConfig(BaseModel):
    """One self-play training run: rollouts, batches, loss, optimizer, checkpoints."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    recipe: str = "code-selfplay"
    """Name in `agentplay.graphs.RECIPES`, or `path/to/file.py:attr`."""
    model: str = "local:smollm2-135m-instruct"
    """Spec of the model serving every role (`local:...` in process, `openai:...@URL` over HTTP)."""
    base_model_path: str | None = None
    """HF folder of the trainable weights; default: the folder the served model was loaded
    from (`LocalModel.model_dir`), else the dequantized SmolLM2 folder (for HTTP-served models)."""
    store: Path = Path("traces.db")
    """SQLite trace store: rollouts, metrics and the trainer's cursor live there."""
    output_dir: Path = Path("runs/train")
    """Checkpoints (`checkpoint-<iteration>/`), adapters and TensorBoard logs go here."""
    run_name: str = "train"
    """Run id of the training run in the store; rollouts of iteration k use `<run_name>/it<k>`."""
    iterations: int = Field(10, ge=1)
    """Rollout-then-train rounds; each ends with one optimizer step, a weight sync and a checkpoint."""
    episodes_per_iteration: int = Field(8, ge=1)
    """Episodes rolled out per iteration (use a multiple of the recipe's `GroupBy.seed(k)`)."""
    concurrency: int = Field(8, ge=1)
    """Episodes in flight at once during rollouts (the engine batches their requests)."""
    seed: int = 0
    """Run seed: every rollout's episode seeds derive from it and the iteration."""
    time_budget_s: float | None = Field(None, gt=0)
    """Stop before an iteration that would end past this many seconds of self-play and training
    (None: no limit). Time spent in `on_iteration` callbacks, e.g. evaluation, is not counted."""
    recipe_options: dict[str, object] = Field(default_factory=dict)
    """Keyword options passed to the recipe's build function."""
    async_level: int = Field(0, ge=0)
    """Bounded staleness of asynchronous self-play: rollouts of iterations it+1..it+K keep running
    on the serving model while iteration it trains, so a trained sample is at most K weight versions
    behind the policy (`off_policy_lag/max` <= K; TIS/MIS, `tis_cap` / `mis_bound`, correct for it).
    0: the synchronous loop (roll out, train, publish, then roll out the next iteration)."""
    train_threads: int | None = Field(None, ge=1)
    """Torch intra-op threads of the optimizer step when it overlaps rollouts (async_level > 0),
    set on the trainer's own thread; the in-process engine's thread keeps the model's
    `torch_threads`. None: torch's current setting. On 2 cores: 1 each side."""
    max_error_fraction: float = Field(0.5, ge=0.0, le=1.0)
    """Stop training (non-zero exit) when more than this fraction of an iteration's episodes
    ended in error, or all of them did; also the share of failed turns (errors, reward failures,
    missing token ids) above which an iteration with nothing to train on stops the run."""
    episode_retries: int = Field(1, ge=0, le=100)
    """Reruns of an episode that failed for infrastructure reasons, same seeds (see RunConfig)."""
    strict_rewards: bool = False
    """Stop at the first reward fn that raises instead of leaving that turn out of training."""
    reward_failed_groups: Literal["drop", "shrink"] = "drop"
    """A GRPO group with a member whose reward fn raised: drop it whole (its mean would be taken
    over the members that did not crash the reward fn, a biased baseline) or shrink it to the
    members with a reward."""

    loss_type: LossType = "dapo"
    """TRL loss aggregation: grpo (per-sequence mean), dr_grpo (fixed length), dapo (per-token)..."""
    beta: float = Field(0.0, ge=0.0)
    """KL coefficient against the initial model; 0 skips the reference forward pass."""
    epsilon: float = Field(0.2, gt=0.0)
    """Lower clipping bound of the importance ratio (1 - epsilon)."""
    epsilon_high: float | None = None
    """Upper clipping bound (1 + epsilon_high); None means the same as `epsilon`."""
    scale_rewards: bool | None = None
    """Divide advantages by the group's std; None means True except for dr_grpo (which drops it)."""
    zero_variance: Literal["drop", "keep"] = "drop"
    """Groups whose rewards are all equal carry no GRPO signal: drop them (counted) or keep
    them in the batch with advantage 0 (they still dilute the token normaliser)."""
    role_weights: dict[str, float] = Field(default_factory=dict)
    """Loss multiplier per role (default 1.0); 0 freezes a role's samples out of training."""
    max_completion_length: int = Field(1024, ge=1)
    """dr_grpo's constant normaliser, and the cap on trained tokens per sample (longer ones are cut)."""
    temperature: float = Field(1.0, gt=0.0)
    """Temperature at which to score tokens whose trace does not record how they were sampled
    (traces from before the record, LangChain models other than ours). Every other row is
    scored at the temperature it was sampled at (`Generation.sampling`)."""
    tis_cap: float | None = Field(None, gt=0.0)
    """Truncated importance sampling: weight each token's loss by min(pi_trainer / pi_rollout, tis_cap)
    for rollouts from another policy than the trainer's (quantized or other engine, stale weights).
    None: off. With TIS or MIS on, the clipped ratio is taken against the trainer's own logprobs."""
    mis_bound: float | None = Field(None, gt=1.0)
    """Masked importance sampling: drop (weight 0) sequences whose geometric-mean ratio
    pi_trainer / pi_rollout is outside [1/mis_bound, mis_bound]. None: off."""

    learning_rate: float = Field(1e-5, gt=0.0)
    """AdamW learning rate (constant)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = Field(1.0, gt=0.0)
    """Gradients are clipped to this global norm before the step."""
    micro_batch_size: int = Field(8, ge=1)
    """Sequences per forward pass; gradients accumulate over the whole batch (one optimizer step)."""
    share_prompts: bool = True
    """Encode a prompt once for all its completions in a micro-batch (one packed forward with a
    block mask, same logprobs and gradients); False scores every row with its own copy."""
    lora: bool = False
    """Train a PEFT LoRA adapter instead of all weights (required for HTTP-served models)."""
    lora_r: int = Field(16, ge=1)
    """LoRA rank."""
    lora_alpha: int = Field(32, ge=1)
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    lora_target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Module names that get adapters."""
    adapter_name: str = "agentplay"
    """Name the adapter is served under (vLLM's `lora_name`)."""
    processes: int = Field(1, ge=1)
    """Data-parallel trainer processes (`agentplay train` launches them with torchrun; gloo on CPU,
    NCCL on GPUs). The main one rolls out, checkpoints and syncs the server; every one trains on
    its share of the batch and the gradients are averaged."""
    device: str = "auto"
    """Where the trainer's copy of the weights lives: `auto` (CUDA when present, else CPU), `cpu`,
    `cuda`, `cuda:1`..."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """Training precision: `auto` is bf16 mixed precision on a CUDA device that supports it, else
    float32 (CPU bf16 matmuls are slow and lose the small updates)."""
    report_to: list[str] = Field(default_factory=lambda: ["tensorboard"])
    """TRL/transformers reporting backends."""
    keep_checkpoints: int = Field(2, ge=1)
    """How many most recent checkpoints to keep on disk."""

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        for role, w in self.role_weights.items():
            if w < 0:
                raise ValueError(f"role_weights[{role!r}]: weight must be >= 0, got {w}")
        return self

    @property
    def scale(self) -> bool:
        return self.scale_rewards if self.scale_rewards is not None else self.loss_type != "dr_grpo"
