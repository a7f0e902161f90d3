"""The one model interface every backend implements.

Async first: a self-play run keeps dozens of episodes in flight, and batching
only pays off when the engine sees concurrent requests.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from ._types import ChatResult, Message, SamplingParams


class ChatModel(ABC):
    """A chat model: local engine, OpenAI-compatible API, or anything else."""

    spec: str
    """The spec string this model was built from (e.g. ``local:smollm2-135m-instruct``)."""

    @abstractmethod
    async def chat(
        self,
        messages: list[Message],
        *,
        tools: list[dict[str, Any]] | None = None,
        sampling: SamplingParams | None = None,
    ) -> ChatResult:
        """Complete one conversation. `tools` are OpenAI function schemas."""

    @property
    def weight_version(self) -> int | None:
        """Version of the weights currently served, when the backend knows it."""
        return None

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release engines, clients, pools."""

    async def __aenter__(self) -> "ChatModel":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class UpdatableModel(ABC):
    """A model whose served weights can be replaced in place (trainer -> server).

    The same calls work in-process and over HTTP (the server exposes vLLM's
    runtime LoRA endpoints), so one update path serves our engine and vLLM alike.
    """

    @abstractmethod
    async def load_lora_adapter(self, name: str, path: str) -> int:
        """Load (or replace) a PEFT adapter from a folder and serve it; returns the new weight version."""

    @abstractmethod
    async def unload_lora_adapter(self, name: str) -> int:
        """Stop serving the adapter; returns the new weight version."""

    @abstractmethod
    async def load_state_dict(self, state_dict: dict[str, Any]) -> int:
        """Replace full weights (tensors by parameter name); returns the new weight version."""
