"""Push the trainer's weights into the model that serves the agents.

Two paths, both through `UpdatableModel`, so the same code updates our in-process
engine, `agentplay serve` and vLLM: a LoRA adapter saved to a folder and loaded by
name (vLLM's runtime LoRA API over HTTP), or the full state dict (in process only).
Each update carries the weight version the trainer assigns (its count of committed
optimizer steps), so the served model reports the policy's version, not a count of
the updates its process happened to see.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentplay.errors import AgentplayError
from agentplay.models import UpdatableModel

__all__ = ["WeightSyncError", "save_adapter", "sync_weights"]


class WeightSyncError(AgentplayError, RuntimeError):
    """The serving model cannot take the trainer's weights (names the fix)."""


def save_adapter(model: Any, folder: Path) -> Path:
    """Save the PEFT adapter into `folder` atomically: a server never reads half a file."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    shutil.rmtree(folder, ignore_errors=True)
    os.rename(tmp, folder)
    return folder


async def sync_weights(
    served: Any, model: Any, *, lora: bool, adapter_name: str, adapter_dir: Path, version: int | None = None,
    before_load: Callable[[], None] | None = None,
) -> int:
    """Update `served` from the trainable `model` as weight `version`; returns the served
    weight version (equal to `version` when one is given: a server that reports another
    number is an error). `before_load` runs once the weights are ready to send (the
    adapter saved), before the served model takes them: a crash test's kill point."""
    if not isinstance(served, UpdatableModel):
        raise WeightSyncError(
            f"model: {getattr(served, 'spec', type(served).__name__)!r} cannot be updated in place;"
            " serve it with `agentplay serve` or a local: spec (both implement UpdatableModel)"
        )
    if lora:
        path = save_adapter(model, adapter_dir)
        if before_load is not None:
            before_load()
        served_version = int(await served.load_lora_adapter(adapter_name, str(path.resolve()), version=version))
    else:
        # parameters, not state_dict(): tied weights (lm_head = embed_tokens) appear once
        state = {k: v.detach() for k, v in model.named_parameters()}
        if before_load is not None:
            before_load()
        try:
            served_version = int(await served.load_state_dict(state, version=version))
        except NotImplementedError as exc:
            raise WeightSyncError(f"{exc}; pass --lora to train an adapter the server can load") from exc
    if version is not None and served_version != version:
        raise WeightSyncError(
            f"model: the served model reports weight version {served_version} after being given version {version}"
        )
    return served_version
