"""Checkpoints that resume exactly: weights, optimizer, scheduler, RNG and position.

A checkpoint is a folder written under a temporary name and renamed into place,
so a kill at any moment leaves either the previous checkpoint or the new one,
never half of one. The highest-numbered complete folder is the one to resume.
It is the commit point of an iteration: the trainer publishes weights to the
serving model only after they are in a checkpoint, so a server never holds
weights (or a weight version) that a resumed run would not reproduce.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field

from ._versions import IterationVersions

__all__ = ["CheckpointState", "latest_checkpoint", "load_checkpoint", "read_checkpoint_state", "save_checkpoint"]

_NAME = re.compile(r"^checkpoint-(\d+)$")


class CheckpointState(BaseModel):
    """The trainer's position, saved beside the weights."""

    iteration: int
    """The last iteration whose optimizer step is inside this checkpoint."""
    global_step: int
    """Optimizer steps taken so far (iterations with nothing to train take none)."""
    weight_version: int | None = None
    """Version of the weights in this checkpoint: the count of committed optimizer steps
    (None in checkpoints written before versions belonged to the policy)."""
    lora: bool = False
    metrics: dict[str, float] = Field(default_factory=dict)
    """This iteration's metrics, re-logged on resume if the store missed them."""
    rae_baselines: dict[str, dict[str, float]] = Field(default_factory=dict)
    """SPIRAL RAE baselines (role -> environment -> moving-average reward) after this
    iteration: state of the advantage estimator that a resumed run must continue from."""
    versions: list[IterationVersions] = Field(default_factory=list)
    """The version history of every iteration up to this one (see `checkpoint_history`)."""


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = [(int(m.group(1)), p) for p in output_dir.glob("checkpoint-*") if (m := _NAME.match(p.name))]
    found = [(i, p) for i, p in found if (p / "state.json").exists()]
    return max(found)[1] if found else None


def _unwrap(model: Any) -> Any:
    return model.module if hasattr(model, "module") else model


def save_checkpoint(output_dir: Path, state: CheckpointState, model: Any, optimizer: Any, scheduler: Any, *, keep: int) -> Path:
    final = output_dir / f"checkpoint-{state.iteration:05d}"
    tmp = output_dir / f".checkpoint-{state.iteration:05d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _unwrap(model).save_pretrained(str(tmp / "weights"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    torch.save(rng, tmp / "rng.pt")
    (tmp / "state.json").write_text(state.model_dump_json(indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    olds = sorted(p for p in output_dir.glob("checkpoint-*") if _NAME.match(p.name))
    for old in olds[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_checkpoint_state(path: Path) -> CheckpointState:
    """The position and version history saved in checkpoint folder `path` (no tensors read)."""
    return CheckpointState.model_validate_json((path / "state.json").read_text())


def load_checkpoint(path: Path, model: Any, optimizer: Any, scheduler: Any) -> CheckpointState:
    """Restore weights (full or adapter), optimizer, scheduler and RNG from `path`."""
    from safetensors.torch import load_file

    state = read_checkpoint_state(path)
    inner = _unwrap(model)
    weights = path / "weights"
    if state.lora:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(inner, load_file(str(weights / "adapter_model.safetensors")))
    else:
        tensors: dict[str, torch.Tensor] = {}
        for f in sorted(weights.glob("*.safetensors")):
            tensors.update(load_file(str(f)))
        missing, unexpected = inner.load_state_dict(tensors, strict=False)
        # tied embeddings are saved once; anything else missing is a real mismatch
        missing = [k for k in missing if k != "lm_head.weight"]
        if missing or unexpected:
            raise RuntimeError(f"checkpoint {path}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    rng = torch.load(path / "rng.pt", weights_only=False)
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    return state
