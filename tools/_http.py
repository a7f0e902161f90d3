"""One HTTP request to a tool server (retrieval, web search), retried while the server is failing.

Shared by the `/retrieve` client and the web search adapter. A dead or failing
server is the machinery's fault, not the model's: shown to the model as a tool
answer, the episode would be scored (and trained on) as if the tool had
answered. So transport errors, timeouts and "busy/broken" statuses (408, 429,
5xx) are retried with a bounded backoff, and when the retries run out the call
raises `ToolServerUnavailable`, an `InfrastructureError`: the episode fails as
``infrastructure:ToolServerUnavailable`` and is rerun, never scored. A server that
answers, but not as the tool needs (401/403/404/405: a wrong URL or a server
configured otherwise; a body that is not the protocol), is a misconfiguration:
`ToolServerMisconfigured`, not retried, never a tool answer either (the episode fails
as ``recipe:ToolServerMisconfigured`` and the run stops once too many have). What
stays the model's to read is an answer about its own request (a 422 for a bad query).

The loop is written here because httpx retries only failed connects (no statuses,
no backoff) and the openai client's retry loop serves its own API only.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import httpx

from agentplay.errors import AgentplayError, InfrastructureError

__all__ = ["CONFIG_STATUS", "RETRY_STATUS", "ToolServerMisconfigured", "ToolServerUnavailable",
           "request_with_retries"]

RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
"""Answers that say the server is busy or broken right now (a healthy one would answer)."""
CONFIG_STATUS = frozenset({401, 403, 404, 405})
"""Answers that say the tool is pointed at the wrong place or the server refuses it: not the
model's request, not transient."""
_MAX_BACKOFF_S = 8.0


class ToolServerUnavailable(InfrastructureError, ConnectionError):
    """A tool server stayed unreachable or failing through every retry; the message names it
    and its last error. Never a tool answer: the episode is rerun."""


class ToolServerMisconfigured(AgentplayError, RuntimeError):
    """A tool server answered, but not as the tool needs (a wrong URL, auth, a disabled API, a
    body that is not the protocol). Not retried, never a tool answer: the message says what
    to fix."""


def _retry_after_s(resp: httpx.Response) -> float | None:
    raw = resp.headers.get("retry-after")
    try:
        value = float(raw) if raw is not None else None
    except ValueError:
        return None  # an HTTP date: our own backoff applies
    return value if value is not None and math.isfinite(value) and value >= 0 else None


async def request_with_retries(method: str, url: str, *, what: str, timeout_s: float, retries: int = 3,
                               backoff_s: float = 0.5, **kwargs: Any) -> httpx.Response:
    """Send one request on a fresh client per attempt (safe across event loops); `what` names the
    server in errors. Up to `retries` more attempts after the first, `backoff_s` doubling between
    them (or the server's `Retry-After`, capped at 8 s); then `ToolServerUnavailable`."""
    last = ""
    for attempt in range(retries + 1):
        wait = min(backoff_s * 2 ** attempt, _MAX_BACKOFF_S)
        try:
            async with httpx.AsyncClient(timeout=timeout_s) as http:
                resp = await http.request(method, url, **kwargs)
        except httpx.TimeoutException:
            last = f"no answer within {timeout_s:g} s"
        except httpx.TransportError as exc:
            last = f"unreachable ({type(exc).__name__}: {exc})"
        else:
            if resp.status_code not in RETRY_STATUS:
                return resp
            last = f"answered HTTP {resp.status_code}: {resp.text[:200]}"
            after = _retry_after_s(resp)
            if after is not None:
                wait = min(max(wait, after), _MAX_BACKOFF_S)
        if attempt < retries:
            await asyncio.sleep(wait)
    raise ToolServerUnavailable(f"{what} failed {retries + 1} attempts; last: {last}")
