"""`load_model`: from a spec string or config to a ready ChatModel."""

from __future__ import annotations

from typing import Any

from ._base import ChatModel
from ._config import ModelConfig, parse_model_spec

__all__ = ["load_model"]


def load_model(spec: str | ModelConfig | dict[str, Any], **overrides: Any) -> ChatModel:
    """`local:`/`hf:` -> in-process LocalModel; `openai:` -> an OpenAI-compatible API client.

    `overrides` are ModelConfig fields, e.g. `load_model("openai:qwen", base_url=..., api_key=...)`.
    """
    config = parse_model_spec(spec, **overrides)
    if config.backend == "openai" and config.base_url and "," in config.base_url:
        from ._endpoints import EndpointPool  # several servers: spread episodes, fail over

        return EndpointPool(config)
    if config.backend == "openai":
        from ._openai import OpenAIModel  # the API backend; imported lazily (no torch needed)

        return OpenAIModel(config)
    from ._local import LocalModel

    return LocalModel(config)
