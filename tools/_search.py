"""The corpus tools a role sees: `search` (ranked snippets with ids) and `read_document`.

Both accept a local `CorpusIndex` or a `RetrieveClient` pointed at any
Search-R1-style server, so a recipe switches corpora without changing prompts.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from ._base import Tool, ToolError
from ._documents import Document, Hit
from ._index import CorpusIndex, SearchMode

if TYPE_CHECKING:
    from agentplay.sandbox import Sandbox


class DocumentSource(Protocol):
    def get(self, doc_id: str) -> Document: ...


class _RemoteSearch(Protocol):
    async def search(self, query: str, k: int = 3) -> list[Hit]: ...


class SearchArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(description="What to look for, in a few words.")


class ReadArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    doc_id: str = Field(description="The id of a document, as shown in search results.")
    page: int = Field(0, ge=0, description="Page to read, starting at 0.")


def format_hits(query: str, hits: list[Hit], snippet_chars: int) -> str:
    if not hits:
        return f"No results for {query!r}. Try other words."
    blocks = []
    for i, h in enumerate(hits, 1):
        text = " ".join(h.text.split())
        snippet = text if len(text) <= snippet_chars else text[:snippet_chars].rstrip() + " ..."
        blocks.append(f"[{i}] id: {h.doc_id}\ntitle: {h.title}\n{snippet}")
    return "\n\n".join(blocks)


_HIT_BLOCK = re.compile(r"^\[(\d+)\] id: (\S+)\n(?:title: [^\n]*\n)?(.*?)(?=\n\n\[\d+\] id: |\Z)",
                        re.MULTILINE | re.DOTALL)


def parse_hits(text: str) -> list[tuple[int, str, str]]:
    """`format_hits` read back: ``(number, doc_id, snippet)`` per shown hit, in order. Recipes
    that act on what a search showed a model (the result a solver cites, the hits a proposer
    saw) read the format here, beside the code that writes it."""
    return [(int(n), doc_id, snippet.strip()) for n, doc_id, snippet in _HIT_BLOCK.findall(text)]


class SearchTool(Tool):
    """Search a corpus; each hit shows its id so the model can open it with `read_document`."""

    args_model = SearchArgs

    def __init__(self, source: CorpusIndex | _RemoteSearch, k: int = 3, *, mode: SearchMode = "hybrid",
                 snippet_chars: int = 400, name: str = "search") -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.source = source
        self.k = k
        """Results per query."""
        self.mode: SearchMode = mode
        """Ranking for a local index (a remote server ranks its own way)."""
        self.snippet_chars = snippet_chars
        """Characters of each hit's text shown (whole text via `read_document`)."""
        self.name = name
        self.description = (
            f"Search the document collection. Returns the top {k} documents, each with its id, "
            "title and the start of its text."
        )

    async def run(self, args: SearchArgs, sandbox: Sandbox | None) -> str:
        query = args.query.strip()
        if not query:
            raise ToolError("query is empty: write a few words describing what to find", kind="bad_arguments")
        try:
            if isinstance(self.source, CorpusIndex):
                hits = await asyncio.to_thread(self.source.search, query, self.k, self.mode)
            else:
                hits = await self.source.search(query, self.k)
        except ValueError as exc:
            raise ToolError(str(exc), kind="bad_arguments") from None
        return format_hits(query, hits, self.snippet_chars)


class ReadDocumentTool(Tool):
    """Open a document by id, one page at a time (pages keep each result under the toolbox limit)."""

    args_model = ReadArgs

    def __init__(self, source: DocumentSource, *, page_chars: int = 3000, name: str = "read_document") -> None:
        if page_chars < 100:
            raise ValueError(f"page_chars must be >= 100, got {page_chars}")
        self.source = source
        self.page_chars = page_chars
        """Characters per page."""
        self.name = name
        self.description = (
            "Read a document by its id (from search results). Long documents are split into pages; "
            "pass page=1, 2, ... to continue."
        )

    def _get(self, doc_id: str) -> Document:
        try:
            return self.source.get(doc_id)
        except KeyError:
            raise ToolError(f"no document with id {doc_id!r}; use an id exactly as search showed it",
                            kind="not_found") from None

    async def run(self, args: ReadArgs, sandbox: Sandbox | None) -> Any:
        doc = await asyncio.to_thread(self._get, args.doc_id.strip())
        pages = max(1, -(-len(doc.text) // self.page_chars))
        if args.page >= pages:
            raise ToolError(f"page {args.page} does not exist: document {doc.id!r} has {pages} page(s), "
                            f"numbered 0 to {pages - 1}", kind="bad_arguments")
        chunk = doc.text[args.page * self.page_chars:(args.page + 1) * self.page_chars]
        more = f"\n[page {args.page} of 0..{pages - 1}; read page {args.page + 1} for more]" \
            if args.page + 1 < pages else ""
        return f"id: {doc.id}\ntitle: {doc.title}\npage: {args.page} of 0..{pages - 1}\n\n{chunk}{more}"
