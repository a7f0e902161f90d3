"""Models that serve the agents: one async interface, local and API backends."""

from typing import Any

from ._base import ChatModel, UpdatableModel
from ._config import DEFAULT_MODEL_SPEC, ModelConfig, ModelSpecError, parse_model_spec
from ._load import load_model
from ._types import (
    ChatResult,
    Choice,
    FinishReason,
    Message,
    SamplingParams,
    SamplingRecord,
    ToolCall,
    ToolCallParseFailure,
    TopLogprob,
    Usage,
)
from ._weights import MissingModelPackageError, default_model_dir, local_model_dir

_LAZY = {
    "AgentplayChatModel": "._langchain",
    "EndpointPool": "._endpoints",
    "NoLiveEndpointError": "._resilience",
    "ModelServerError": "._openai",
    "OpenAIModel": "._openai",
    "TextDelta": "._openai",
    "create_app": "._server",
}


def __getattr__(name: str) -> Any:
    # LocalModel pulls in torch and transformers; API-only users should not pay for that.
    if name == "LocalModel":
        from ._local import LocalModel

        return LocalModel
    if name in _LAZY:  # API backend, server and LangChain adapter: imported on first use
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_MODEL_SPEC",
    "AgentplayChatModel",
    "ChatModel",
    "ChatResult",
    "Choice",
    "EndpointPool",
    "FinishReason",
    "LocalModel",
    "Message",
    "MissingModelPackageError",
    "ModelConfig",
    "ModelServerError",
    "ModelSpecError",
    "NoLiveEndpointError",
    "OpenAIModel",
    "SamplingParams",
    "SamplingRecord",
    "TextDelta",
    "ToolCall",
    "ToolCallParseFailure",
    "TopLogprob",
    "UpdatableModel",
    "Usage",
    "create_app",
    "default_model_dir",
    "load_model",
    "local_model_dir",
    "parse_model_spec",
]
