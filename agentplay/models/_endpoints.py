"""One chat model over several OpenAI-compatible servers (`agentplay serve`, vLLM).

Written here because no client library does all three things a rollout fleet
needs at once: spread episodes by load, keep one episode on one server (its
growing prompt stays in that server's prefix cache), and take a dead server out
of rotation without failing the episodes that were using it (they move to
another server and lose only their cache). Each server is spoken to by the
ordinary `OpenAIModel`; this module only decides which one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai

from agentplay.errors import AgentplayError

from ._base import ChatModel, UpdatableModel
from ._config import ModelConfig, ModelSpecError
from ._openai import OpenAIModel
from ._types import ChatResult, Message, SamplingParams

__all__ = ["EndpointPool", "NoLiveEndpointError", "endpoint_scope"]

_FAILOVER_ERRORS = (openai.APIConnectionError, openai.InternalServerError)
"""A server that cannot be reached, times out (APITimeoutError is a connection error) or
answers 5xx after the client's own retries: take it out of rotation and retry elsewhere."""


class NoLiveEndpointError(AgentplayError, RuntimeError):
    """Every endpoint of the pool is down; the message lists each one and its last error."""


@dataclass
class _Scope:
    key: str
    notes: dict[str, Any]
    pools: set[EndpointPool] = field(default_factory=set)


_SCOPE: ContextVar[_Scope | None] = ContextVar("agentplay_endpoint_scope", default=None)


@contextlib.contextmanager
def endpoint_scope(key: str) -> Iterator[dict[str, Any]]:
    """Pin every model call made inside the block (child tasks included) to one endpoint.

    Yields a dict that collects `endpoints` (URLs that served the block, in order)
    and `endpoint_failovers`; executors copy it into the episode's metadata.
    Leaving the block releases the pin, so load counts only running episodes.
    """
    scope = _Scope(key=key, notes={})
    token = _SCOPE.set(scope)
    try:
        yield scope.notes
    finally:
        _SCOPE.reset(token)
        for pool in scope.pools:
            pool._release(key)


@dataclass(eq=False)
class _Endpoint:
    url: str
    model: OpenAIModel
    up: bool = True
    inflight: int = 0
    pinned: int = 0
    served: int = 0
    last_error: str = ""
    down_since: float = 0.0

    @property
    def load(self) -> int:
        return self.inflight + self.pinned


class EndpointPool(ChatModel, UpdatableModel):
    """A ChatModel spreading requests over several servers of the same model.

    Built from an `openai:<name>` config whose `base_url` lists several URLs
    separated by commas (or from `urls`). Adapter loads are sent to every live
    server and replayed on a server when it comes back, so all serve the same weights.
    """

    def __init__(self, config: ModelConfig, urls: Sequence[str] | None = None, *,
                 health_interval_s: float = 2.0, endpoint_retries: int = 1) -> None:
        if config.backend != "openai":
            raise ModelSpecError(f"model: an endpoint pool needs an openai:<name> spec, got {config.spec!r}")
        raw = list(urls) if urls is not None else (config.base_url or "").split(",")
        found = [u.strip().rstrip("/") for u in raw if u.strip()]
        if not found:
            raise ModelSpecError("base_url: an endpoint pool needs at least one URL (comma-separated)")
        if len(set(found)) != len(found):
            raise ModelSpecError(f"base_url: duplicate endpoint in {found}")
        self.config = config
        self.spec = config.spec
        # few client retries per server: the pool's own failover is the retry that matters
        self._endpoints = [
            _Endpoint(u, OpenAIModel(config.model_copy(update={"base_url": u, "max_retries": endpoint_retries})))
            for u in found
        ]
        self._pins: dict[str, _Endpoint] = {}
        self._adapters: dict[str, str] = {}
        self._version: int | None = None
        """The weight version the trainer last gave the servers: a server that restarts gets
        the adapters replayed under it, so it serves (and reports) the same weights as the rest."""
        self._health_interval = health_interval_s
        self._health: asyncio.Task[None] | None = None

    @property
    def urls(self) -> list[str]:
        return [e.url for e in self._endpoints]

    @property
    def live_urls(self) -> list[str]:
        return [e.url for e in self._endpoints if e.up]

    @property
    def request_model(self) -> str:
        """The `model` sent with requests: the base name, or the adapter loaded last."""
        return self._endpoints[0].model.request_model

    @request_model.setter
    def request_model(self, name: str) -> None:
        for e in self._endpoints:  # a worker following a trainer that updated the servers itself
            e.model.request_model = name

    @property
    def weight_version(self) -> int | None:
        versions = [v for e in self._endpoints if (v := e.model.weight_version) is not None]
        return max(versions) if versions else None

    def status(self) -> list[dict[str, Any]]:
        """Per endpoint: up, in-flight requests, pinned episodes, requests served, last error."""
        return [{"url": e.url, "up": e.up, "inflight": e.inflight, "pinned": e.pinned,
                 "served": e.served, "last_error": e.last_error} for e in self._endpoints]

    def _pick(self, scope: _Scope | None) -> _Endpoint:
        if scope is not None:
            pinned = self._pins.get(scope.key)
            if pinned is not None and pinned.up:
                return pinned
        live = [e for e in self._endpoints if e.up]
        if not live:
            detail = "; ".join(f"{e.url}: {e.last_error or 'down'}" for e in self._endpoints)
            raise NoLiveEndpointError(f"{self.spec}: every endpoint is down ({detail})")
        chosen = min(live, key=lambda e: (e.load, e.served))
        if scope is not None:
            old = self._pins.get(scope.key)
            if old is not None:
                old.pinned -= 1
                scope.notes["endpoint_failovers"] = scope.notes.get("endpoint_failovers", 0) + 1
            self._pins[scope.key] = chosen
            chosen.pinned += 1
            scope.pools.add(self)
            used = scope.notes.setdefault("endpoints", [])
            if chosen.url not in used:
                used.append(chosen.url)
        return chosen

    def _release(self, key: str) -> None:
        ep = self._pins.pop(key, None)
        if ep is not None:
            ep.pinned -= 1

    def _mark_down(self, ep: _Endpoint, exc: BaseException) -> None:
        ep.last_error = f"{type(exc).__name__}: {exc}"[:300]
        if ep.up:
            ep.up = False
            ep.down_since = time.monotonic()
        self._ensure_health_task()

    async def chat(self, messages: list[Message], *, tools: list[dict[str, Any]] | None = None,
                   sampling: SamplingParams | None = None) -> ChatResult:
        scope = _SCOPE.get()
        while True:
            ep = self._pick(scope)  # raises NoLiveEndpointError when nothing is left
            ep.inflight += 1
            try:
                result = await ep.model.chat(messages, tools=tools, sampling=sampling)
            except _FAILOVER_ERRORS as exc:
                self._mark_down(ep, exc)
                continue  # the episode moves to another server: it loses its prefix cache, not its progress
            finally:
                ep.inflight -= 1
            ep.served += 1
            return result

    def _ensure_health_task(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._health is None or self._health.done() or self._health.get_loop() is not loop:
            self._health = loop.create_task(self._health_loop())

    async def _health_loop(self) -> None:
        """Probe down servers until every one is back; a server returns only once it
        answers `GET /models` and has been given the adapters the others serve."""
        while any(not e.up for e in self._endpoints):
            await asyncio.sleep(self._health_interval)
            for ep in [e for e in self._endpoints if not e.up]:
                if await self._probe(ep):
                    ep.up = True
                    ep.last_error = ""

    async def _probe(self, ep: _Endpoint) -> bool:
        try:
            async with httpx.AsyncClient(timeout=5.0) as http:
                ok = (await http.get(f"{ep.url}/models")).status_code == 200
            if ok:
                for name, path in self._adapters.items():
                    await ep.model.load_lora_adapter(name, path, version=self._version)
            return ok
        except Exception as exc:  # noqa: BLE001 - any failure keeps it down; recorded for status()
            ep.last_error = f"{type(exc).__name__}: {exc}"[:300]
            return False

    async def _broadcast(self, call: str, *args: str, version: int | None = None) -> int:
        live = [e for e in self._endpoints if e.up]
        if not live:
            raise NoLiveEndpointError(f"{self.spec}: no live endpoint to send {call} to")
        results = await asyncio.gather(*(getattr(e.model, call)(*args, version=version) for e in live),
                                       return_exceptions=True)
        versions: list[int] = []
        for ep, res in zip(live, results):
            if isinstance(res, _FAILOVER_ERRORS | httpx.HTTPError):
                self._mark_down(ep, res)  # it gets the adapters replayed when it comes back
            elif isinstance(res, BaseException):
                raise res
            else:
                versions.append(int(res))
        if not versions:
            raise NoLiveEndpointError(f"{self.spec}: {call} reached no endpoint")
        self._version = max(versions)
        return self._version

    async def load_lora_adapter(self, name: str, path: str, *, version: int | None = None) -> int:
        self._adapters[name] = path
        return await self._broadcast("load_lora_adapter", name, path, version=version)

    async def unload_lora_adapter(self, name: str, *, version: int | None = None) -> int:
        self._adapters.pop(name, None)
        return await self._broadcast("unload_lora_adapter", name, version=version)

    async def load_state_dict(self, state_dict: dict[str, Any], *, version: int | None = None) -> int:
        # raises: HTTP servers take adapters only
        return await self._endpoints[0].model.load_state_dict(state_dict, version=version)

    async def aclose(self) -> None:
        if self._health is not None and not self._health.done():
            self._health.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await self._health
        for e in self._endpoints:
            await e.model.aclose()
