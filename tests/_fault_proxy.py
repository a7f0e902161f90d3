"""A fault-injecting HTTP proxy on 127.0.0.1, in front of a real model server.

Hand-written on asyncio streams because the faults live below what proxy
libraries expose: a connection reset (RST, not a clean close), a 2xx answer
whose body is cut short but whose Content-Length matches the cut, a request
held open past the client's timeout. Chat requests (`POST .../chat/completions`)
get a fault with probability `rate`, the kind drawn from `kinds` by a seeded rng;
everything else (`GET /models` probes, adapter calls) is forwarded untouched.
Each exchange uses one connection (`Connection: close`), as a restarting or
overloaded server would force anyway. `strip_token_ids` makes the server behind
look like llama.cpp's (answers without token ids or logprobs). `run_episodes` runs
examples/my_recipe.py against a URL, for the tests and the bench alike. Used by tests/test_faults*.py and bench/faults.py.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
import threading
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from _servers import SERVED

from agentplay import RunConfig, close_models, load_recipe, run_recipe
from agentplay._executors import register_endpoints
from agentplay.traces import Episode, TraceStore

FAULT_KINDS = ("429", "500", "503-html", "reset", "truncated-json", "stall")
"""Every class of transient fault the issue names, except the server going away (done by killing it)."""

EXAMPLE = f"{Path(__file__).resolve().parents[1] / 'examples' / 'my_recipe.py'}:build"
OPTIONS = {"max_tokens": 4, "n_solvers": 1}
TIMEOUT_S = 3.0
"""Client timeout of these runs; a proxy's stall must outlast it."""

_REASONS = {200: "OK", 429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}
_HTML_503 = b"<html><head><title>503 Service Unavailable</title></head><body><h1>503 Service Unavailable</h1>" \
            b"<p>The upstream server is temporarily unable to service your request.</p></body></html>"


class FaultProxy:
    """`url` forwards to `upstream` (e.g. http://127.0.0.1:8000/v1), injecting faults.

    `retry_after_s` is sent with 429s; `stall_s` must exceed the client's timeout.
    `injected` counts faults by kind, `forwarded` the chat requests passed through intact.
    """

    def __init__(self, upstream: str, *, rate: float = 0.3, kinds: tuple[str, ...] = FAULT_KINDS,
                 seed: int = 0, retry_after_s: int = 1, stall_s: float = 3.0,
                 script: list[str | None] | None = None, strip_token_ids: bool = False) -> None:
        unknown = (set(kinds) | {k for k in script or [] if k is not None}) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"kinds: unknown fault kinds {sorted(unknown)}; known: {FAULT_KINDS}")
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.path_prefix = parts.path.rstrip("/")
        self.rate = rate
        self.kinds = kinds
        self.retry_after_s = retry_after_s
        self.stall_s = stall_s
        self.script = list(script or [])
        self.strip_token_ids = strip_token_ids
        self.injected: Counter[str] = Counter()
        self.forwarded = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path_prefix}"

    def start(self) -> FaultProxy:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop)
        self._server = fut.result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _draw(self) -> str | None:
        with self._lock:
            if self.script:  # scripted faults first (None: pass one through), then random ones
                kind = self.script.pop(0)
                if kind is None:
                    self.forwarded += 1
                else:
                    self.injected[kind] += 1
                return kind
            if self._rng.random() >= self.rate:
                self.forwarded += 1
                return None
            kind = self._rng.choice(self.kinds)
            self.injected[kind] += 1
            return kind

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = [line for line in lines[1:] if line and not line.lower().startswith(("connection:",
                                                                                            "keep-alive:"))]
            length = next((int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length:")), 0)
            body = await reader.readexactly(length) if length else b""
            fault = self._draw() if method == "POST" and target.endswith("/chat/completions") else None
            if fault == "reset":
                _reset(writer)
                return
            if fault == "stall":
                await asyncio.sleep(self.stall_s)  # the client gives up first; then a plain close
                writer.close()
                return
            if fault == "429":
                _respond(writer, 429, b'{"error": {"message": "rate limited", "type": "rate_limit"}}',
                         "application/json", [f"Retry-After: {self.retry_after_s}"])
            elif fault == "500":
                _respond(writer, 500, b'{"error": {"message": "injected failure", "type": "server_error"}}',
                         "application/json")
            elif fault == "503-html":
                _respond(writer, 503, _HTML_503, "text/html")
            else:
                status, out_headers, payload = await self._forward(method, target, headers, body)
                if self.strip_token_ids and target.endswith("/chat/completions") and status == 200:
                    payload = _without_token_ids(payload)
                if fault == "truncated-json" and 200 <= status < 300:
                    payload = payload[: max(1, len(payload) // 2)]  # Content-Length says the cut size
                _respond(writer, status, payload, None, out_headers)
            await writer.drain()
            writer.close()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            _reset(writer)  # upstream down, or the client went away: the client sees a dropped connection
        except asyncio.CancelledError:
            writer.close()
            raise

    async def _forward(self, method: str, target: str, headers: list[str],
                       body: bytes) -> tuple[int, list[str], bytes]:
        reader, writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        try:
            request = "\r\n".join([f"{method} {target} HTTP/1.1", *headers, "Connection: close", "", ""])
            writer.write(request.encode("latin-1") + body)
            await writer.drain()
            raw = await reader.read()  # Connection: close: the answer ends at EOF
        finally:
            writer.close()
        head, _, payload = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        kept = [h for h in lines[1:] if h.split(":", 1)[0].lower() not in
                ("content-length", "transfer-encoding", "connection", "keep-alive")]
        if any(h.lower().startswith("transfer-encoding:") and "chunked" in h.lower() for h in lines[1:]):
            payload = _dechunk(payload)
        return status, kept, payload


def _respond(writer: asyncio.StreamWriter, status: int, payload: bytes, content_type: str | None,
             extra: list[str] | None = None) -> None:
    headers = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", *(extra or [])]
    if content_type is not None:
        headers.append(f"Content-Type: {content_type}")
    headers += [f"Content-Length: {len(payload)}", "Connection: close", "", ""]
    writer.write("\r\n".join(headers).encode("latin-1") + payload)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the peer gets a TCP RST (ECONNRESET), not an orderly FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


def _without_token_ids(payload: bytes) -> bytes:
    """What llama.cpp's server answers: the completion without vLLM's token-id fields."""
    answer = json.loads(payload)
    answer.pop("prompt_token_ids", None)
    for choice in answer.get("choices", []):
        choice.pop("token_ids", None)
        choice["logprobs"] = None
    return json.dumps(answer).encode()


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return bytes(out)


def run_episodes(url: str, db: Path, run_id: str, *, episodes: int, concurrency: int = 2,
                 during: Any = None, episode_retries: int = 0, timeout: float = TIMEOUT_S,
                 **model_options: Any) -> list[Episode]:
    """Run examples/my_recipe.py in-process against `url` (seed 7); returns the stored episodes.

    `episode_retries` defaults to 0: what these runs measure is that no model call fails,
    not that a failed episode can be run again."""

    async def main() -> None:
        register_endpoints(SERVED, [url], timeout=timeout, retry_deadline_s=model_options.pop("deadline", 120.0),
                           **model_options)
        recipe, _ = load_recipe(EXAMPLE, model=SERVED, options=dict(OPTIONS))
        try:
            with TraceStore(db) as store:
                await run_recipe(recipe, RunConfig(episodes=episodes, concurrency=concurrency, seed=7,
                                                   run_id=run_id, progress=False, episode_retries=episode_retries,
                                                   max_error_fraction=1.0), store=store,
                                 on_episode=during)
        finally:
            await close_models()

    asyncio.run(main())
    with TraceStore(db) as store:
        return sorted(store.episodes(run_id), key=lambda e: e.index)


def fingerprint(episode: Episode) -> tuple[Any, ...]:
    """What a fault must not change: status, seed, every turn's ids, text and rewards."""
    turns = tuple((t.role, tuple(t.prompt_token_ids or ()), tuple(t.token_ids or ()), tuple(t.mask or ()),
                   t.output, t.token_exact, t.reward.value if t.reward else None, t.reward.reason if t.reward else None)
                  for t in episode.turns)
    return episode.index, episode.seed, episode.status, episode.error, turns, sorted(episode.metrics.items())
