"""The Search-R1 / SSP retrieval-server protocol, both ends.

    POST /retrieve  {"queries": [str], "topk": int, "return_scores": bool}
    -> {"result": [[{"document": {"id", "contents"}, "score": float}, ...], ...]}   (return_scores)
    -> {"result": [[{"id", "contents"}, ...], ...]}                                 (otherwise)
    GET /status -> "ok"

`contents` is ``"Title"\\ntext`` as in wiki-18.jsonl. Our server speaks it for
any `CorpusIndex`; our client talks to any such server (theirs over an existing
e5/FAISS Wikipedia index included), so no index needs converting.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import OrderedDict
from typing import Any, Self

from pydantic import BaseModel, Field

from ._base import ToolError
from ._documents import Document, Hit, split_contents
from ._http import CONFIG_STATUS, ToolServerMisconfigured, request_with_retries
from ._index import CorpusIndex, SearchMode, check_query


class RetrieveRequest(BaseModel):
    """The request body, field for field as Search-R1's server declares it."""

    queries: list[str]
    topk: int | None = Field(None, description="Results per query; the server default when null.")
    return_scores: bool = False


def retriever_app(index: CorpusIndex, *, mode: SearchMode = "hybrid", default_topk: int = 3) -> Any:
    """A FastAPI app serving `index` with the `/retrieve` protocol."""
    from fastapi import FastAPI, HTTPException

    app = FastAPI(title="agentplay retriever", description=f"{len(index)} documents, {mode} ranking")

    @app.post("/retrieve")
    def retrieve(req: RetrieveRequest) -> dict[str, Any]:  # sync: FastAPI runs it in a worker thread
        k = req.topk or default_topk
        for i, q in enumerate(req.queries):
            try:
                check_query(q, k)
            except ValueError as exc:
                raise HTTPException(status_code=422, detail=f"queries[{i}]: {exc}") from None
        results = index.search_batch(req.queries, k, mode) if req.queries else []
        out = []
        for hits in results:
            docs = [{"id": h.doc_id, "contents": Document(id=h.doc_id, title=h.title, text=h.text).contents()}
                    for h in hits]
            out.append([{"document": d, "score": h.score} for d, h in zip(docs, hits, strict=True)]
                       if req.return_scores else docs)
        return {"result": out}

    @app.get("/status")
    def status() -> str:
        return "ok"

    return app


class RetrieverServer:
    """A running uvicorn server (background thread); `url` is where to POST /retrieve."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        import uvicorn

        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.host, self.port = self._sock.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        """Serve in the calling thread until interrupted (the CLI's path)."""
        self._server.run(sockets=[self._sock])

    def start(self, timeout_s: float = 10.0) -> RetrieverServer:
        self._thread = threading.Thread(target=self.run, name=f"retriever:{self.port}", daemon=True)
        self._thread.start()
        end = time.monotonic() + timeout_s
        while not self._server.started:
            if time.monotonic() > end or not self._thread.is_alive():
                raise RuntimeError(f"retriever server on {self.url} did not start")
            time.sleep(0.02)
        return self

    def close(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve_retriever(index: CorpusIndex, host: str = "127.0.0.1", port: int = 0, *, mode: SearchMode = "hybrid",
                    default_topk: int = 3, background: bool = True) -> RetrieverServer:
    """Serve `index` over HTTP. Port 0 picks a free one (read it from `.url`).

    In the background (default) the call returns once the server answers; close
    it with `.close()` or a `with` block. With ``background=False`` it blocks.
    """
    server = RetrieverServer(retriever_app(index, mode=mode, default_topk=default_topk), host, port)
    if background:
        return server.start()
    server.run()
    return server


def _document(item: dict[str, Any]) -> Document:
    """A document in any shape a Search-R1-style server returns (dense rows, BM25 rows)."""
    if "contents" in item:
        title, text = split_contents(str(item["contents"]))
    else:
        title, text = str(item.get("title", "")), str(item.get("text", ""))
    doc_id = item.get("id", item.get("doc_id", item.get("_id")))
    return Document(id=str(doc_id) if doc_id is not None else title, title=title, text=text)


class RetrieveClient:
    """Search through any `/retrieve` server. Remembers the documents it has returned so
    `ReadDocumentTool` can open them (the protocol has no fetch-by-id)."""

    def __init__(self, url: str, *, timeout_s: float = 10.0, retries: int = 3, cache_size: int = 10_000) -> None:
        url = url.rstrip("/")
        self.url = url if url.endswith("/retrieve") else f"{url}/retrieve"
        self.timeout_s = timeout_s
        """Per-request timeout (connect and read)."""
        self.retries = retries
        """Attempts after the first while the server is down or failing (5xx, 408, 429); then the
        search raises `ToolServerUnavailable`, an infrastructure error (the episode is rerun)."""
        self._seen: OrderedDict[str, Document] = OrderedDict()
        self._cache_size = cache_size

    async def search_batch(self, queries: list[str], k: int = 3) -> list[list[Hit]]:
        try:
            queries = [check_query(q, k) for q in queries]
        except ValueError as exc:
            raise ToolError(str(exc), kind="bad_arguments") from None
        body = {"queries": queries, "topk": k, "return_scores": True}
        resp = await request_with_retries("POST", self.url, what=f"retrieval server {self.url}",
                                          timeout_s=self.timeout_s, retries=self.retries, json=body)
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except (ValueError, AttributeError):
                detail = resp.text
            if resp.status_code in CONFIG_STATUS:
                raise ToolServerMisconfigured(
                    f"retrieval server {self.url} answered {resp.status_code}: {str(detail)[:300]}; check the URL "
                    "(a server speaking Search-R1's POST /retrieve, e.g. `agentplay corpus serve`)")
            raise ToolError(f"retrieval server answered {resp.status_code}: {str(detail)[:500]}", kind="server_error")
        try:
            rows = resp.json()["result"]
            return [[self._hit(item) for item in row] for row in rows]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ToolServerMisconfigured(
                f"retrieval server {self.url} does not speak the /retrieve protocol ({exc!r}): {resp.text[:300]}"
            ) from None

    async def search(self, query: str, k: int = 3) -> list[Hit]:
        return (await self.search_batch([query], k))[0]

    def _hit(self, item: dict[str, Any]) -> Hit:
        if "document" in item:
            doc, score = _document(item["document"]), float(item.get("score", 0.0))
        else:
            doc, score = _document(item), 0.0
        self._seen[doc.id] = doc
        self._seen.move_to_end(doc.id)
        while len(self._seen) > self._cache_size:
            self._seen.popitem(last=False)
        return Hit(doc_id=doc.id, title=doc.title, text=doc.text, score=score)

    def get(self, doc_id: str) -> Document:
        """A document this client has seen in a search result."""
        try:
            return self._seen[doc_id]
        except KeyError:
            raise KeyError(f"no document with id {doc_id!r} among search results so far") from None

    def __repr__(self) -> str:
        return f"RetrieveClient({self.url!r})"

