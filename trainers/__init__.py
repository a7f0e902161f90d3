"""GRPO training on self-play traces, with the serving model updated after each step."""

from ._advantages import AdvantageStats, TrainSample, compute_advantages
from ._batch import MicroBatch, make_micro_batches
from ._checkpoint import CheckpointState, latest_checkpoint
from ._config import LossType, TrainConfig
from ._learner import GRPOLearner
from ._loop import NothingToTrainError, SelfPlayTrainer, TrainError, TrainSummary, rollout_run_id, train
from ._versions import IterationVersions, checkpoint_history, version_history
from ._weights_sync import WeightSyncError, save_adapter, sync_weights

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
    "checkpoint_history",
    "compute_advantages",
    "latest_checkpoint",
    "make_micro_batches",
    "rollout_run_id",
    "save_adapter",
    "sync_weights",
    "train",
    "version_history",
]
