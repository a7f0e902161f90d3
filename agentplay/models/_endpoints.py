"""One chat model over one or several OpenAI-compatible servers (`agentplay serve`, vLLM).

Written here because no client library does what a rollout fleet needs at once:
spread episodes by load, keep one episode on one server (its growing prompt stays
in that server's prefix cache), take a failing server out of rotation without
failing the episodes that were using it (they move to another server and lose
only their cache), notice when it is back, and, when no server is left, wait for
one within a deadline rather than fail every episode in flight. Each server is
spoken to by the ordinary `OpenAIModel`, whose openai client retries single
requests; this module decides which server and when (`_resilience.Breaker`).
`load_model` builds a pool for every `openai:` model, one URL included.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import openai

from ._base import ChatModel, UpdatableModel
from ._config import ModelConfig, ModelSpecError
from ._openai import OpenAIModel, TextDelta
from ._resilience import Breaker, NoLiveEndpointError, is_transient, retry_after_s
from ._token_ids import TokenIdCheck
from ._types import ChatResult, Message, SamplingParams

__all__ = ["EndpointPool", "NoLiveEndpointError", "endpoint_scope"]

T = TypeVar("T")
_POLL_S = 0.2
"""How often a waiting call and the prober look at the breakers (cheap: no network)."""
_PROBE_DOWN = frozenset({408, 429, 502, 503, 504})


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
    breaker: Breaker
    inflight: int = 0
    pinned: int = 0
    served: int = 0

    @property
    def load(self) -> int:
        return self.inflight + self.pinned


class EndpointPool(ChatModel, UpdatableModel):
    """A ChatModel over the servers of one model: spreads by load, fails over, waits out outages.

    Built from an `openai:<name>` config (`load_model` does it): its `base_url` may list
    several URLs separated by commas. Adapter loads go to every usable server and are
    replayed on a server when it comes back, so all serve the same weights.
    """

    def __init__(self, config: ModelConfig, urls: Sequence[str] | None = None, *,
                 cooldown_s: float = 1.0, max_cooldown_s: float = 5.0,
                 endpoint_retries: int | None = None) -> None:
        if config.backend != "openai":
            raise ModelSpecError(f"model: an endpoint pool needs an openai:<name> spec, got {config.spec!r}")
        if urls is not None:
            found = [u.strip().rstrip("/") for u in urls if u.strip()]
            if not found:
                raise ModelSpecError("base_url: an endpoint pool needs at least one URL (comma-separated)")
            found = config.model_copy(update={"base_url": ",".join(found)}).endpoint_urls()
        else:
            found = config.endpoint_urls()
        self.config = config
        self.spec = config.spec
        # The openai client's retries come first; with other servers to fail over to, one is enough.
        retries = endpoint_retries if endpoint_retries is not None else (
            config.max_retries if len(found) == 1 else min(config.max_retries, 1))
        self._endpoints = [
            _Endpoint(u, OpenAIModel(config.model_copy(update={"base_url": u, "max_retries": retries})),
                      Breaker(cooldown_s=cooldown_s, max_cooldown_s=max_cooldown_s))
            for u in found
        ]
        self._pins: dict[str, _Endpoint] = {}
        self._adapters: dict[str, str] = {}
        self._version: int | None = None
        """The weight version the trainer last gave the servers: a server that restarts gets
        the adapters replayed under it, so it serves (and reports) the same weights as the rest."""
        self._prober: asyncio.Task[None] | None = None
        self._token_ids = TokenIdCheck(config.spec, config.tokenizer)

    @property
    def urls(self) -> list[str]:
        return [e.url for e in self._endpoints]

    @property
    def live_urls(self) -> list[str]:
        """Endpoints in rotation (breaker closed or half-open)."""
        return [e.url for e in self._endpoints if e.breaker.usable]

    @property
    def request_model(self) -> str:
        """The `model` sent with requests: the base name, or the adapter loaded last."""
        return self._endpoints[0].model.request_model

    @request_model.setter
    def request_model(self, name: str) -> None:
        for e in self._endpoints:  # a worker following a trainer that updated the servers itself
            e.model.request_model = name

    @property
    def adapters(self) -> dict[str, str]:
        """Adapter name -> path of the adapters loaded through this pool: what a server that
        comes back without them is given (under `adapter_version`)."""
        return dict(self._adapters)

    @property
    def adapter_version(self) -> int | None:
        """The weight version the adapters were last given under (None: never updated)."""
        return self._version

    def follow(self, request_model: str, adapters: dict[str, str], version: int | None) -> None:
        """Serve as the pool that updates the servers does (a Ray worker's pool following the
        trainer's): send `request_model`, and know its adapters and their version, so this pool
        too replays them to a server that restarted rather than failing its episodes on a 404."""
        self.request_model = request_model
        self._adapters = dict(adapters)
        self._version = version

    @property
    def weight_version(self) -> int | None:
        versions = [v for e in self._endpoints if (v := e.model.weight_version) is not None]
        return max(versions) if versions else None

    def status(self) -> list[dict[str, Any]]:
        """Per endpoint: breaker state, in-flight requests, pinned episodes, requests served, last error."""
        return [{"url": e.url, "up": e.breaker.usable, "state": e.breaker.state, "inflight": e.inflight,
                 "pinned": e.pinned, "served": e.served, "last_error": e.breaker.last_error}
                for e in self._endpoints]

    def _pick(self, scope: _Scope | None) -> tuple[_Endpoint, bool] | None:
        """The endpoint to send on, admitted by its breaker (True: as a half-open trial)."""
        if scope is not None:
            pinned = self._pins.get(scope.key)
            if pinned is not None and pinned.breaker.admissible:
                return pinned, pinned.breaker.admit()
        live = [e for e in self._endpoints if e.breaker.admissible]
        if not live:
            return None
        chosen = min(live, key=lambda e: (e.load, e.served))
        if scope is not None:
            old = self._pins.get(scope.key)
            if old is not None:
                old.pinned -= 1
                if old is not chosen:
                    scope.notes["endpoint_failovers"] = scope.notes.get("endpoint_failovers", 0) + 1
            self._pins[scope.key] = chosen
            chosen.pinned += 1
            scope.pools.add(self)
            used = scope.notes.setdefault("endpoints", [])
            if chosen.url not in used:
                used.append(chosen.url)
        return chosen, chosen.breaker.admit()

    def _release(self, key: str) -> None:
        ep = self._pins.pop(key, None)
        if ep is not None:
            ep.pinned -= 1

    def _lost_adapter(self, ep: _Endpoint, exc: BaseException) -> bool:
        """A 404 for an adapter this pool loaded: the server answers but no longer holds it, the
        mark of a server that restarted with base weights (often reached by the openai client's
        own retries of a request whose connection the dead process dropped, before the pool ever
        saw a failure). A machinery fault, not the episode's: the endpoint is taken out like a
        dead one, and goes back in rotation once the prober has replayed the adapters to it."""
        return (isinstance(exc, openai.NotFoundError) and ep.model.request_model in self._adapters)

    def _failed(self, ep: _Endpoint, exc: BaseException) -> None:
        ep.breaker.failure(exc, retry_after_s(exc))
        self._ensure_prober()

    def _give_up(self, waited: float, exc: BaseException | None) -> NoLiveEndpointError:
        detail = "; ".join(f"{e.url} ({e.breaker.state}): {e.breaker.last_error or 'no error recorded'}"
                           for e in self._endpoints)
        last = f"; last error: {type(exc).__name__}: {exc}" if exc is not None else ""
        return NoLiveEndpointError(
            f"{self.spec}: no endpoint answered within retry_deadline_s={self.config.retry_deadline_s:g} "
            f"(tried for {waited:.1f} s): {detail}{last}")

    async def _with_endpoint(self, send: Callable[[_Endpoint], Awaitable[T]]) -> tuple[_Endpoint, T]:
        """Send on a usable endpoint; on a transient failure open its breaker and go again on
        the next usable one, or wait for one to come back, until `retry_deadline_s` after
        the first failure. A 404 for an adapter this pool loaded counts as such a failure
        (`_lost_adapter`). Other errors (a 400, a bad model name) propagate at once.

        A half-open endpoint takes one request, the trial; the others wait for its outcome
        (none gives up while it is in flight: a server is answering), then all go if it
        succeeded, or wait for the next probe, within the deadline, if it failed."""
        scope = _SCOPE.get()
        first_failure: float | None = None
        last_exc: BaseException | None = None
        while True:
            picked = self._pick(scope)
            if picked is None and any(e.breaker.trial_pending for e in self._endpoints):
                await asyncio.sleep(_POLL_S)  # a server is answering the trial: not a time to give up
                continue
            if picked is None:
                now = time.monotonic()
                first_failure = now if first_failure is None else first_failure
                if now - first_failure >= self.config.retry_deadline_s:
                    raise self._give_up(now - first_failure, last_exc) from last_exc
                self._ensure_prober()
                await asyncio.sleep(min(_POLL_S, self.config.retry_deadline_s - (now - first_failure)))
                continue
            ep, trial = picked
            ep.inflight += 1
            try:
                result = await send(ep)
            except Exception as exc:
                if not (is_transient(exc) or self._lost_adapter(ep, exc)):
                    raise
                self._failed(ep, exc)  # a lost adapter is replayed by the prober before it is back
                last_exc = exc
                now = time.monotonic()
                first_failure = now if first_failure is None else first_failure
                if now - first_failure >= self.config.retry_deadline_s:
                    raise self._give_up(now - first_failure, exc) from exc
                continue  # the episode moves on (or waits): it loses its prefix cache, not its progress
            finally:
                ep.inflight -= 1
                if trial:
                    ep.breaker.end_trial()  # no-op after a failure (it reopened); see the success below
            ep.breaker.success()
            ep.served += 1
            return ep, result

    async def chat(self, messages: list[Message], *, tools: list[dict[str, Any]] | None = None,
                   sampling: SamplingParams | None = None) -> ChatResult:
        ep, result = await self._with_endpoint(
            lambda ep: ep.model.chat(messages, tools=tools, sampling=sampling))
        return self._token_ids(result, ep.url, messages, tools)

    async def stream_chat(self, messages: list[Message], *, tools: list[dict[str, Any]] | None = None,
                          sampling: SamplingParams | None = None) -> AsyncIterator[TextDelta | ChatResult]:
        """`OpenAIModel.stream_chat` on a pool endpoint. A stream that breaks before its first
        delta is retried like a request; one that breaks later cannot be taken back from the
        reader and fails with NoLiveEndpointError (an infrastructure error)."""

        async def first_event(ep: _Endpoint) -> tuple[AsyncIterator[TextDelta | ChatResult], Any]:
            stream = ep.model.stream_chat(messages, tools=tools, sampling=sampling).__aiter__()
            try:
                return stream, await stream.__anext__()
            except BaseException:
                await stream.aclose()  # type: ignore[attr-defined]
                raise

        ep, (stream, event) = await self._with_endpoint(first_event)
        try:
            while True:
                if isinstance(event, ChatResult):
                    event = self._token_ids(event, ep.url, messages, tools)
                yield event
                try:
                    event = await stream.__anext__()
                except StopAsyncIteration:
                    return
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    self._failed(ep, exc)
                    raise NoLiveEndpointError(f"{self.spec}: the stream from {ep.url} broke after it "
                                              f"started ({type(exc).__name__}: {exc})") from exc
        finally:
            await stream.aclose()  # type: ignore[attr-defined]

    def _ensure_prober(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self._prober is None or self._prober.done() or self._prober.get_loop() is not loop:
            self._prober = loop.create_task(self._probe_loop())

    async def _probe_loop(self) -> None:
        """While a breaker is open, probe its server once its cooldown is over; a server that
        answers goes half-open (back in rotation, on trial) after receiving the adapters the
        others serve. Probing here, not with a real request, costs no episode a timeout."""
        while any(e.breaker.state == "open" for e in self._endpoints):
            now = time.monotonic()
            due = [e for e in self._endpoints if e.breaker.probe_due(now)]
            for ep in due:
                ep.breaker.probing = True
            try:
                await asyncio.gather(*(self._probe(ep) for ep in due))
            finally:
                for ep in due:
                    ep.breaker.probing = False
            await asyncio.sleep(_POLL_S)

    async def _probe(self, ep: _Endpoint) -> None:
        """Any HTTP answer to `GET /models` but "busy" or "unavailable" (408, 429, 502-504)
        means a server process answers again: it goes half-open and real requests decide
        (one more failure opens it again, with a longer cooldown)."""
        try:
            async with httpx.AsyncClient(timeout=min(5.0, self.config.timeout)) as http:
                status = (await http.get(f"{ep.url}/models", headers=ep.model.auth_headers())).status_code
            if status in _PROBE_DOWN:
                ep.breaker.probe_failed(f"probe: GET /models answered HTTP {status}")
                return
            for name, path in self._adapters.items():
                await ep.model.load_lora_adapter(name, path, version=self._version)
        except Exception as exc:  # noqa: BLE001 - any failure keeps it open; recorded for status()
            ep.breaker.probe_failed(exc)
            return
        ep.breaker.probe_ok()

    async def _broadcast(self, call: str, *args: str, version: int | None = None) -> int:
        live = [e for e in self._endpoints if e.breaker.usable]
        if not live:
            raise self._give_up(0.0, None)
        results = await asyncio.gather(*(getattr(e.model, call)(*args, version=version) for e in live),
                                       return_exceptions=True)
        versions: list[int] = []
        for ep, res in zip(live, results):
            if isinstance(res, BaseException) and (is_transient(res) or isinstance(res, httpx.HTTPError)):
                self._failed(ep, res)  # it gets the adapters replayed when it comes back
            elif isinstance(res, BaseException):
                raise res
            else:
                versions.append(int(res))
        if not versions:
            raise NoLiveEndpointError(f"{self.spec}: {call} reached no endpoint ({self.status()})")
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
        if self._prober is not None and not self._prober.done():
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await self._prober
        for e in self._endpoints:
            await e.model.aclose()
