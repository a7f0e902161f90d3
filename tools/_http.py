"""One HTTP request whose transport failures become tool errors the model can read.

Shared by the `/retrieve` client and the web search adapter: both must turn a slow or
dead server into a recorded observation, never an exception that ends the episode.
"""

from __future__ import annotations

from typing import Any

import httpx

from ._base import ToolError


async def request_or_tool_error(method: str, url: str, *, what: str, timeout_s: float, **kwargs: Any) -> httpx.Response:
    """Send one request on a fresh client (safe across event loops); `what` names the server in errors."""
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as http:
            return await http.request(method, url, **kwargs)
    except httpx.TimeoutException:
        raise ToolError(f"{what} gave no answer within {timeout_s:g} s", kind="timeout") from None
    except httpx.HTTPError as exc:
        raise ToolError(f"{what} is unreachable ({type(exc).__name__}: {exc})", kind="unavailable") from None
