"""Episode traces and the store that keeps them."""

from ._types import Episode, EpisodeStatus, Generation, RewardRecord, RoleTurn, ToolCallRecord, new_id

__all__ = ["Episode", "EpisodeStatus", "Generation", "RewardRecord", "RoleTurn", "ToolCallRecord", "new_id"]
