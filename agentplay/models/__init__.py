"""Models that serve the agents: one async interface, local and API backends."""

from ._base import ChatModel, UpdatableModel
from ._config import DEFAULT_MODEL_SPEC, ModelConfig, ModelSpecError, parse_model_spec
from ._load import load_model
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
from ._weights import MissingModelPackageError, default_model_dir


def __getattr__(name: str):
    # LocalModel pulls in torch and transformers; API-only users should not pay for that.
    if name == "LocalModel":
        from ._local import LocalModel

        return LocalModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_MODEL_SPEC",
    "ChatModel",
    "ChatResult",
    "Choice",
    "FinishReason",
    "LocalModel",
    "Message",
    "MissingModelPackageError",
    "ModelConfig",
    "ModelSpecError",
    "SamplingParams",
    "ToolCall",
    "ToolCallParseFailure",
    "TopLogprob",
    "UpdatableModel",
    "Usage",
    "default_model_dir",
    "load_model",
    "parse_model_spec",
]
