"""Models that serve the agents: one async interface, local and API backends."""

from ._base import ChatModel, UpdatableModel
from ._types import (
    ChatResult,
    Choice,
    FinishReason,
    Message,
    SamplingParams,
    ToolCall,
    ToolCallParseFailure,
    TopLogprob,
    Usage,
)

__all__ = [
    "ChatModel",
    "ChatResult",
    "Choice",
    "FinishReason",
    "Message",
    "SamplingParams",
    "ToolCall",
    "ToolCallParseFailure",
    "TopLogprob",
    "UpdatableModel",
    "Usage",
]
