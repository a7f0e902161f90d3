"""One engine per model spec per process.

Roles name their model by spec (``local:smollm2-135m-instruct``); loading the
same weights once per role would multiply memory and defeat batching, so every
role with the same spec shares the model resolved here. The CLI's ``--model``
can also replace every role's model at once (`override_models`): the override is
a ContextVar (like the recorder's episode context), so it follows the asyncio
tasks started inside the block and two runs in one process never see each
other's override.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from agentplay.models import ChatModel

ModelLike = Any
"""A spec string, a model config accepted by `agentplay.models.load_model`, or a ChatModel."""

_models: dict[str, ChatModel] = {}
_locks: dict[tuple[int, str], asyncio.Lock] = {}
_override: ContextVar[ModelLike | None] = ContextVar("agentplay_model_override", default=None)


def model_key(model: ModelLike) -> str:
    """The registry key of a model reference: its spec string."""
    if isinstance(model, str):
        return model
    if isinstance(model, ChatModel):
        return getattr(model, "spec", "") or f"chatmodel:{id(model)}"
    dump = getattr(model, "model_dump_json", None)
    return dump() if callable(dump) else repr(model)


def register_model(model: ChatModel, spec: str | None = None) -> ChatModel:
    """Make an already-built model answer for `spec` (default: its own `.spec`)."""
    _models[spec or model_key(model)] = model
    return model


@contextmanager
def override_models(model: ModelLike | None) -> Iterator[None]:
    """Within the block every role uses `model`, whatever its own spec says (``--model``).

    Seen by this task and the tasks it starts inside the block (a ContextVar), not
    by other runs of the same process; a nested block wins until it ends.
    """
    if model is None:
        yield
        return
    token = _override.set(model)
    try:
        yield
    finally:
        _override.reset(token)


async def resolve_model(model: ModelLike) -> ChatModel:
    """The shared ChatModel for `model`, loading it on first use."""
    override = _override.get()
    if override is not None:
        model = override
    if isinstance(model, ChatModel):
        return model
    key = model_key(model)
    found = _models.get(key)
    if found is not None:
        return found
    lock = _locks.setdefault((id(asyncio.get_running_loop()), key), asyncio.Lock())
    async with lock:
        found = _models.get(key)
        if found is None:
            from agentplay.models import load_model  # late: the engine is heavy

            loaded = load_model(model)
            if inspect.isawaitable(loaded):
                loaded = await loaded
            found = _models[key] = loaded
    return found


async def close_models() -> None:
    """Close and forget every model this registry loaded (end of a CLI run, tests)."""
    models = list(_models.values())
    _models.clear()
    _locks.clear()
    for m in models:
        await m.aclose()
