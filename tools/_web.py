"""Web search through a self-hosted engine's JSON API (SearxNG: ``GET /search?q=...&format=json``).

No engine is bundled: the tool is pointed at one (a SearxNG instance, or anything
that answers the same way). Requests are spaced by a minimum interval so a run
with many concurrent episodes cannot flood the engine. An engine that is down or
failing (after retries) is an infrastructure error, one that answers but not as
SearxNG's JSON API a misconfiguration, neither ever a tool answer (see `_http`);
an answer about the query itself is a `ToolError` the model reads.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ._base import Tool, ToolError
from ._http import CONFIG_STATUS, ToolServerMisconfigured, request_with_retries

if TYPE_CHECKING:
    from agentplay.sandbox import Sandbox


class WebSearchArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(description="What to search the web for.")


class _Spacer:
    """At most one request per `interval_s` (waiting, not failing): a minimal rate limit."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._next = 0.0
        self._lock: asyncio.Lock | None = None

    async def wait(self) -> None:
        if self.interval_s <= 0:
            return
        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            now = time.monotonic()
            if self._next > now:
                await asyncio.sleep(self._next - now)
            self._next = max(now, self._next) + self.interval_s


class WebSearchTool(Tool):
    """Search the web; results are title, URL and the engine's snippet."""

    args_model = WebSearchArgs

    def __init__(self, url: str, *, engine: Literal["searxng"] = "searxng", max_results: int = 5,
                 timeout_s: float = 10.0, retries: int = 3, min_interval_s: float = 1.0,
                 params: dict[str, str] | None = None,
                 name: str = "web_search") -> None:
        if engine != "searxng":
            raise ValueError(f"engine must be 'searxng', got {engine!r}")
        self.url = url.rstrip("/")
        self.search_url = self.url if self.url.endswith("/search") else f"{self.url}/search"
        self.engine = engine
        self.max_results = max_results
        """Results shown to the model."""
        self.timeout_s = timeout_s
        """Per-request timeout."""
        self.retries = retries
        """Attempts after the first while the engine is down or failing (5xx, 408, 429); then the
        call raises `ToolServerUnavailable`, an infrastructure error (the episode is rerun)."""
        self.params = dict(params or {})
        """Extra query parameters (e.g. ``{"language": "en", "categories": "general"}``)."""
        self._spacer = _Spacer(min_interval_s)
        self.name = name
        self.description = f"Search the web. Returns up to {max_results} results with title, URL and snippet."

    async def run(self, args: WebSearchArgs, sandbox: Sandbox | None) -> str:
        query = args.query.strip()
        if not query:
            raise ToolError("query is empty: write a few words describing what to find", kind="bad_arguments")
        await self._spacer.wait()
        params = {**self.params, "q": query, "format": "json"}
        resp = await request_with_retries("GET", self.search_url, what=f"web search engine {self.url}",
                                          timeout_s=self.timeout_s, retries=self.retries, params=params)
        if resp.status_code == 403:
            raise ToolServerMisconfigured(f"web search engine {self.url} refused the JSON API (403); enable "
                                          "`json` in its search.formats setting")
        if resp.status_code in CONFIG_STATUS:
            raise ToolServerMisconfigured(f"web search engine {self.url} answered {resp.status_code} for "
                                          f"{self.search_url}: {resp.text[:300]}; check the URL")
        if resp.status_code >= 400:
            raise ToolError(f"web search engine answered {resp.status_code}: {resp.text[:300]}", kind="server_error")
        try:
            results = resp.json()["results"]
            return self._format(query, results)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ToolServerMisconfigured(f"web search engine {self.url} does not speak SearxNG's JSON API "
                                          f"({exc!r}): {resp.text[:300]}") from None

    def _format(self, query: str, results: list[dict[str, Any]]) -> str:
        if not results:
            return f"No web results for {query!r}."
        blocks = []
        for i, r in enumerate(results[: self.max_results], 1):
            snippet = " ".join(str(r.get("content") or "").split())
            blocks.append(f"[{i}] {r.get('title', '').strip()}\nurl: {r.get('url', '')}\n{snippet}")
        return "\n\n".join(blocks)
