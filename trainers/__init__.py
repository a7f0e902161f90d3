"""GRPO training on self-play traces, with the serving model updated after each step.

Only the configuration is imported eagerly: the CLI builds its flags from `TrainConfig`
at startup, and the rest pulls in torch, transformers and TRL (seconds) on first use.
"""

from typing import Any

from ._config import LossType, TrainConfig

_LAZY = {
    "AdvantageStats": "._advantages",
    "TrainSample": "._advantages",
    "compute_advantages": "._advantages",
    "MicroBatch": "._batch",
    "make_micro_batches": "._batch",
    "CheckpointState": "._checkpoint",
    "latest_checkpoint": "._checkpoint",
    "GRPOLearner": "._learner",
    "NothingToTrainError": "._loop",
    "SelfPlayTrainer": "._loop",
    "TrainError": "._loop",
    "TrainSummary": "._loop",
    "rollout_run_id": "._loop",
    "train": "._loop",
    "IterationVersions": "._versions",
    "checkpoint_history": "._versions",
    "version_history": "._versions",
    "WeightSyncError": "._weights_sync",
    "save_adapter": "._weights_sync",
    "sync_weights": "._weights_sync",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AdvantageStats",
    "CheckpointState",
    "GRPOLearner",
    "IterationVersions",
    "LossType",
    "MicroBatch",
    "NothingToTrainError",
    "SelfPlayTrainer",
    "TrainConfig",
    "TrainError",
    "TrainSample",
    "TrainSummary",
    "WeightSyncError",
    "compute_advantages",
    "checkpoint_history",
    "latest_checkpoint",
    "make_micro_batches",
    "rollout_run_id",
    "save_adapter",
    "sync_weights",
    "train",
    "version_history",
]
