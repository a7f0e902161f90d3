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

    Every call takes the weight version the new weights carry. The version belongs
    to the policy, not to the server process: a trainer numbers its committed
    optimizer steps, keeps the number in its checkpoints and, after a restart,
    hands the checkpoint's weights to the server together with that number, so the
    trainer, the server and every stored turn agree on it across any number of
    kills. Without `version` the server counts updates itself (current + 1).
    """

    @abstractmethod
    async def load_lora_adapter(self, name: str, path: str, *, version: int | None = None) -> int:
        """Load (or replace) a PEFT adapter from a folder and serve it; returns the new weight version."""

    @abstractmethod
    async def unload_lora_adapter(self, name: str, *, version: int | None = None) -> int:
        """Stop serving the adapter; returns the new weight version."""

    @abstractmethod
    async def load_state_dict(self, state_dict: dict[str, Any], *, version: int | None = None) -> int:
        """Replace full weights (tensors by parameter name); returns the new weight version."""


def check_version(version: int | None) -> int | None:
    """A weight version given to an update call: None or an int >= 0 (bools are not versions)."""
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 0):
        raise ValueError(f"version: a weight version is an int >= 0, got {version!r}")
    return version
