"""What counts as a transient model-server fault, and when to try a server again.

The official `openai` client already retries one request (408/409/429/5xx,
connection errors, timeouts; exponential backoff with jitter; `Retry-After`
honoured up to two minutes), and `OpenAIModel` relies on it. Three things it
does not do are here:

- a 2xx answer whose body is not JSON (a proxy or server cut it short) is
  parsed *after* the client's retry loop and fails with `JSONDecodeError`, or
  comes back as a plain string; `require_json_body` turns it into a decoding
  error inside the loop, so the client retries it like a dropped connection;
- after the client gives up, something must remember that a server is failing
  (so other requests stop paying for it), find out when it is back, and keep
  callers waiting for it within a deadline instead of failing them at once:
  `Breaker`, one per endpoint, driven by `EndpointPool`;
- the final failure must say it was the machinery, not the model:
  `NoLiveEndpointError` is an `InfrastructureError` (excluded from training,
  the episode retried as a whole).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from typing import Any

import openai

from agentplay.errors import InfrastructureError

__all__ = ["Breaker", "NoLiveEndpointError", "is_transient", "require_json_body", "retry_after_s"]

TRANSIENT_STATUS = frozenset({408, 409, 429})
"""Besides every 5xx: what the openai client itself retries (request timeout, lock timeout, rate limit)."""


class NoLiveEndpointError(InfrastructureError, RuntimeError):
    """No endpoint answered a model call within the retry deadline; the message names each
    endpoint, its state and its last error."""


def is_transient(exc: BaseException) -> bool:
    """True for faults a healthy server would not repeat: connection errors and timeouts
    (APITimeoutError is an APIConnectionError), 408/409/429/5xx, and the transport errors a
    stream raises mid-way. 4xx answers such as 400/401/404 are the caller's to fix: never retried."""
    if isinstance(exc, openai.APIConnectionError):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code >= 500 or exc.status_code in TRANSIENT_STATUS
    return _is_transport_error(exc)


def _is_transport_error(exc: BaseException) -> bool:
    """httpx/httpx2 transport errors (a broken SSE stream raises them past the client)."""
    for name in ("httpx2", "httpx"):
        module = sys.modules.get(name)
        if module is not None and isinstance(exc, module.TransportError | module.DecodingError):
            return True
    return False


def retry_after_s(exc: BaseException) -> float | None:
    """The server's `Retry-After` / `retry-after-ms` on a failed answer, in seconds."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    for header, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        raw = headers.get(header)
        if raw is None:
            continue
        try:
            value = float(raw) / scale
        except ValueError:
            continue  # an HTTP date: rare from model servers; the breaker's own cooldown applies
        if math.isfinite(value) and value > 0:
            return value
    return None


async def require_json_body(response: Any) -> None:
    """httpx response hook: a 2xx answer that is not a stream must be a JSON object.

    Raises the client's own `DecodingError` (a transport-level error), which the openai
    client retries with its backoff and, when retries run out, reports as an
    `APIConnectionError` whose cause says what the body was."""
    if not 200 <= response.status_code < 300:
        return
    if "text/event-stream" in response.headers.get("content-type", ""):
        return  # a stream: chunks are parsed as they come; a broken one is retried by the pool
    await response.aread()
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict):
        return
    module = sys.modules[type(response).__module__.split(".")[0]]  # httpx2 or httpx, as the client uses
    preview = response.content[-80:].decode("utf-8", "replace")
    raise module.DecodingError(
        f"HTTP {response.status_code} answer is not a JSON object ({len(response.content)} bytes, "
        f"ends with {preview!r})", request=response.request)


@dataclass
class Breaker:
    """A circuit breaker for one endpoint: closed (in use) -> open (skipped until
    `retry_at`) -> half-open (a probe answered: on trial).

    One failure opens it: it only sees failures the client already retried, so one
    is already several in a row. Each opening or failed probe without a success in
    between doubles the cooldown (`cooldown_s` up to `max_cooldown_s`, small because a
    probe is one cheap `GET /models`); a `Retry-After` lengthens it. Half-open admits
    one real request, the trial (`admit`); every other caller waits for its outcome
    rather than sending a burst at a server that has only just answered a probe: a
    success closes it (and resets the cooldown), a failure opens it again."""

    cooldown_s: float = 1.0
    max_cooldown_s: float = 5.0
    state: str = "closed"
    openings: int = 0
    """Openings since the last success."""
    retry_at: float = 0.0
    last_error: str = ""
    probing: bool = False
    trial: bool = False
    """Half-open: the trial request is in flight (no other request is admitted)."""

    @property
    def usable(self) -> bool:
        """In rotation: closed, or half-open (on trial)."""
        return self.state != "open"

    @property
    def admissible(self) -> bool:
        """A request may be sent now: closed, or half-open with no trial in flight."""
        return self.state == "closed" or (self.state == "half-open" and not self.trial)

    @property
    def trial_pending(self) -> bool:
        """Half-open with its trial request in flight: callers wait for the outcome."""
        return self.state == "half-open" and self.trial

    def admit(self) -> bool:
        """Take the right to send one request; True when it is the half-open trial (the
        caller must `end_trial` when it ends, whatever the outcome)."""
        if not self.admissible:
            raise RuntimeError(f"breaker is {self.state}{' with a trial in flight' if self.trial else ''}")
        if self.state == "half-open":
            self.trial = True
            return True
        return False

    def end_trial(self) -> None:
        """The trial request ended without deciding (e.g. a 400, a cancelled call): the next
        caller may be the trial. A success or failure has already cleared it."""
        self.trial = False

    def failure(self, exc: BaseException | str, retry_after: float | None = None) -> None:
        """A request failed after the client's retries: open (or stay open)."""
        self.last_error = exc if isinstance(exc, str) else _describe(exc)
        if self.state == "open":  # requests sent before it opened fail too: one outage, one opening
            self.retry_at = max(self.retry_at, time.monotonic() + (retry_after or 0.0))
            return
        self._open(retry_after)

    def probe_failed(self, exc: BaseException | str) -> None:
        """The server still does not answer: stay open, next probe after a longer pause."""
        self.last_error = exc if isinstance(exc, str) else _describe(exc)
        self._open(None)

    def _open(self, retry_after: float | None) -> None:
        self.openings += 1
        wait = min(self.cooldown_s * 2 ** (self.openings - 1), self.max_cooldown_s)
        self.state = "open"
        self.trial = False
        self.retry_at = time.monotonic() + max(wait, retry_after or 0.0)

    def probe_due(self, now: float) -> bool:
        return self.state == "open" and not self.probing and now >= self.retry_at

    def probe_ok(self) -> None:
        if self.state == "open":
            self.state = "half-open"

    def success(self) -> None:
        self.state = "closed"
        self.trial = False
        self.openings = 0
        self.last_error = ""


def _describe(exc: BaseException) -> str:
    """The error and, for wrapped transport errors, what actually happened underneath."""
    text = f"{type(exc).__name__}: {exc}"
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" ({type(cause).__name__}: {cause})"
    return text[:300]
