"""`load_model`: from a spec string or config to a ready ChatModel."""

from __future__ import annotations

from typing import Any

from ._base import ChatModel
from ._config import ModelConfig, parse_model_spec

__all__ = ["load_model"]


def load_model(spec: str | ModelConfig | dict[str, Any], **overrides: Any) -> ChatModel:
    """`local:`/`hf:` -> in-process LocalModel; `openai:` -> an EndpointPool over its server(s).

    `overrides` are ModelConfig fields, e.g. `load_model("openai:qwen", base_url=..., api_key=...)`.
    """
    config = parse_model_spec(spec, **overrides)
    if config.backend == "openai":
        # The API backend, imported lazily (no torch needed): a pool even over one server, so
        # an outage is waited out (within retry_deadline_s) instead of failing every call.
        from ._endpoints import EndpointPool

        return EndpointPool(config)  # ModelSpecError at once when there is no URL to call
    from ._local import LocalModel

    return LocalModel(config)
