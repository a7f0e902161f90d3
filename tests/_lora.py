"""A LoRA adapter with random (non-zero) B matrices, saved where a model can load it: the
fixture the engine tests use to show a weight change reaches the decode path."""

from __future__ import annotations

from pathlib import Path

import torch


def save_random_lora(model_dir: str | Path, folder: Path) -> Path:
    """Adapter over attention and MLP projections, seeded (same weights every call); returns `folder`."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                                LoraConfig(r=4, lora_alpha=16, init_lora_weights=False,
                                           target_modules=["q_proj", "v_proj", "gate_proj", "down_proj"]))
    peft_model.save_pretrained(folder)
    return folder
