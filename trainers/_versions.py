"""The policy's weight-version history: which weights sampled each iteration, which it produced.

The weight version is the number of optimizer steps committed so far (0: the
initial weights). It belongs to the policy: every checkpoint carries it and the
full history, a resumed run hands it to the serving model with the checkpoint's
weights, and every stored turn carries the version that sampled it. So the
trainer, the engine, `agentplay serve` and the store agree on one number across
any number of kills, and off-policy lag (`trainer version - turn version`) means
what it says, which is what bounded-staleness (asynchronous) training needs.

Two ways to read the history: `checkpoint_history(output_dir)` (the latest
checkpoint's copy, complete up to it) and `version_history(store, run_id)` (the
store's per-iteration metrics, complete up to the last logged iteration).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

__all__ = ["IterationVersions", "checkpoint_history", "version_history"]


class IterationVersions(BaseModel):
    """One iteration's place in the version history."""

    iteration: int
    rollout_version: int
    """The policy's version when this iteration trained. Synchronous training: the weights that
    sampled every turn stored in `<run>/it<k>`; with `async_level=K` each turn's own version is
    between `rollout_version - K` and `rollout_version` (its lag is the difference)."""
    weight_version: int
    """Weights after this iteration: `rollout_version + 1` if it took an optimizer step, else equal."""

    @property
    def stepped(self) -> bool:
        return self.weight_version != self.rollout_version


def version_history(store: Any, run_id: str) -> list[IterationVersions]:
    """Per logged iteration of training run `run_id`, from the store's metrics (by iteration)."""
    rollout = {p.iteration: int(p.value) for p in store.metrics(run_id, name="rollout_weight_version")}
    after = {p.iteration: int(p.value) for p in store.metrics(run_id, name="weight_version")}
    return [IterationVersions(iteration=i, rollout_version=rollout[i], weight_version=after[i])
            for i in sorted(rollout.keys() & after.keys())]


def checkpoint_history(output_dir: Path) -> list[IterationVersions]:
    """The history stored in the latest checkpoint under `output_dir` (empty if there is none)."""
    from ._checkpoint import latest_checkpoint, read_checkpoint_state

    ckpt = latest_checkpoint(Path(output_dir))
    return list(read_checkpoint_state(ckpt).versions) if ckpt is not None else []
