"""Episode traces and the store that keeps them."""

from ._errors import DuplicateEpisode, StoreError
from ._export import turn_rows
from ._schema import SCHEMA_VERSION
from ._store import TraceStore
from ._types import (
    Episode,
    EpisodeStatus,
    Generation,
    MetricPoint,
    RewardRecord,
    RoleTurn,
    RunInfo,
    RunStatus,
    ToolCallRecord,
    new_id,
)

__all__ = [
    "DuplicateEpisode",
    "Episode",
    "EpisodeStatus",
    "Generation",
    "MetricPoint",
    "RewardRecord",
    "RoleTurn",
    "RunInfo",
    "RunStatus",
    "SCHEMA_VERSION",
    "StoreError",
    "ToolCallRecord",
    "TraceStore",
    "new_id",
    "turn_rows",
]
