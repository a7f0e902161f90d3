"""A persisted local search index: BM25 (bm25s), dense (MiniLM) and their fusion.

On disk (one folder)::

    meta.json        format and model versions, document count
    ids.json         document ids in row order
    docs.jsonl       {"id","title","text"} rows (itself a valid input corpus)
    offsets.npy      byte offset of each row in docs.jsonl (n + 1 entries)
    bm25/            bm25s index, loaded memory-mapped
    embeddings.npy   float32 (n, 384) unit vectors, loaded memory-mapped (optional)

Loading reads only ids.json and meta.json eagerly; everything else is mapped,
so opening a 100k-document index costs milliseconds and pages come in on use.
"""

from __future__ import annotations

import json
import mmap
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ._documents import Document, Hit

SearchMode = Literal["bm25", "dense", "hybrid"]

FORMAT_VERSION = 1
MAX_K = 1000
"""Upper bound on results per query; larger requests are an error, not a silent cut."""
RRF_K = 60
"""Reciprocal-rank-fusion constant (Cormack et al. 2009); ranks beyond ~k matter little."""
FUSION_DEPTH = 50
"""Candidates taken from each ranker before fusing."""
_TOKEN_PATTERN = r"(?u)[^\W_]{2,}"
"""Words of 2+ letters/digits; `_` splits too, so `lru_cache` matches "lru cache"."""
_EMBED_CHARS = 1000
"""Characters of title+text handed to the encoder (it keeps the first 128 tokens anyway)."""


def _stemmer() -> Any:  # Stemmer.Stemmer (PyStemmer ships no types)
    import Stemmer

    return Stemmer.Stemmer("english")


def _tokenize(texts: list[str], *, return_ids: bool) -> Any:  # bm25s ships no types
    import bm25s

    return bm25s.tokenize(
        texts,
        stopwords="en",
        stemmer=_stemmer(),
        token_pattern=_TOKEN_PATTERN,
        return_ids=return_ids,
        show_progress=False,
    )


def _bm25_text(doc: Document) -> str:
    return f"{doc.title}\n{doc.text}"


def _embed_text(doc: Document) -> str:
    return f"{doc.title}\n{doc.text}"[:_EMBED_CHARS]


def check_query(query: str, k: int) -> str:
    """Validate one query; the messages are shown to models and users verbatim."""
    if not isinstance(query, str) or not query.strip():
        raise ValueError("query is empty: write a few words describing what to find")
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > MAX_K:
        raise ValueError(f"k={k} exceeds the limit of {MAX_K} results per query")
    return query.strip()


class CorpusIndex:
    """Search and read one corpus. Build with `build`, reopen with `load`."""

    def __init__(self, path: Path, *, dense: bool | None = None) -> None:
        import bm25s

        self.path = Path(path)
        meta = json.loads((self.path / "meta.json").read_text())
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{self.path}: index format {meta.get('format')} != {FORMAT_VERSION}; rebuild it")
        self.meta = meta
        self.ids: list[str] = json.loads((self.path / "ids.json").read_text())
        self._row = {doc_id: i for i, doc_id in enumerate(self.ids)}
        self._offsets = np.load(self.path / "offsets.npy", mmap_mode="r")
        self._docs_file = (self.path / "docs.jsonl").open("rb")
        self._docs = mmap.mmap(self._docs_file.fileno(), 0, access=mmap.ACCESS_READ)
        self._bm25 = bm25s.BM25.load(str(self.path / "bm25"), mmap=True, show_progress=False)
        emb_path = self.path / "embeddings.npy"
        self._emb = np.load(emb_path, mmap_mode="r") if emb_path.exists() and dense is not False else None

    # ---- building -------------------------------------------------------------------------

    @classmethod
    def build(
        cls, documents: Sequence[Document], path: str | Path, *, dense: bool = True, source: str = ""
    ) -> CorpusIndex:
        """Index `documents` into folder `path` (replaced atomically) and open it."""
        import bm25s

        if not documents:
            raise ValueError("cannot index an empty corpus")
        ids = [d.id for d in documents]
        if len(set(ids)) != len(ids):
            raise ValueError("document ids must be unique")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        timings: dict[str, float] = {}
        try:
            t0 = time.perf_counter()
            offsets = [0]
            with (tmp / "docs.jsonl").open("wb") as f:
                for d in documents:
                    f.write(json.dumps(d.model_dump(), ensure_ascii=False).encode() + b"\n")
                    offsets.append(f.tell())
            np.save(tmp / "offsets.npy", np.asarray(offsets, dtype=np.int64))
            (tmp / "ids.json").write_text(json.dumps(ids))
            t1 = time.perf_counter()
            retriever = bm25s.BM25()
            retriever.index(_tokenize([_bm25_text(d) for d in documents], return_ids=True), show_progress=False)
            retriever.save(str(tmp / "bm25"))
            t2 = time.perf_counter()
            timings = {"write_s": t1 - t0, "bm25_s": t2 - t1}
            if dense:
                from ._embed import MODEL_NAME, embed

                np.save(tmp / "embeddings.npy", embed([_embed_text(d) for d in documents]))
                timings["dense_s"] = time.perf_counter() - t2
            meta = {
                "format": FORMAT_VERSION,
                "n_docs": len(documents),
                "dense_model": MODEL_NAME if dense else None,
                "source": source,
                "build_timings": timings,
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
            if path.exists():
                shutil.rmtree(path)
            tmp.rename(path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(path)

    @classmethod
    def load(cls, path: str | Path) -> CorpusIndex:
        path = Path(path)
        if not (path / "meta.json").exists():
            raise FileNotFoundError(f"{path}: not an index folder (no meta.json); build one with `agentplay corpus index`")
        return cls(path)

    # ---- reading --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def has_dense(self) -> bool:
        return self._emb is not None

    def _doc_at(self, row: int) -> Document:
        start, end = int(self._offsets[row]), int(self._offsets[row + 1])
        return Document.model_validate_json(self._docs[start:end])

    def get(self, doc_id: str) -> Document:
        """The document with this id; KeyError names it when absent."""
        row = self._row.get(doc_id)
        if row is None:
            raise KeyError(f"no document with id {doc_id!r}")
        return self._doc_at(row)

    def sample_documents(self, n: int, seed: int = 0, *, min_chars: int = 0) -> list[Document]:
        """`n` distinct documents drawn reproducibly (e.g. target answers for self-play)."""
        rng = random.Random(seed)
        order = list(range(len(self.ids)))
        rng.shuffle(order)
        out: list[Document] = []
        for row in order:
            doc = self._doc_at(row)
            if len(doc.text) >= min_chars:
                out.append(doc)
                if len(out) == n:
                    break
        return out

    # ---- searching ------------------------------------------------------------------------

    def _bm25_ranked(self, queries: list[str], depth: int) -> list[list[tuple[int, float]]]:
        depth = min(depth, len(self.ids))
        tokens = _tokenize(queries, return_ids=False)
        docs, scores = self._bm25.retrieve(tokens, k=depth, show_progress=False, n_threads=1)
        return [
            [(int(r), float(s)) for r, s in zip(row_d, row_s, strict=True) if s > 0]
            for row_d, row_s in zip(docs, scores, strict=True)
        ]

    def _dense_ranked(self, queries: list[str], depth: int) -> list[list[tuple[int, float]]]:
        if self._emb is None:
            raise ValueError(f"{self.path}: index was built without dense embeddings; use mode='bm25'")
        from ._embed import embed

        sims = (np.asarray(self._emb) @ embed(queries).T).T  # matrix-vector form: one pass over the rows
        depth = min(depth, len(self.ids))
        out = []
        for row in sims:
            top = np.argpartition(-row, depth - 1)[:depth]
            top = top[np.argsort(-row[top], kind="stable")]
            out.append([(int(i), float(row[i])) for i in top])
        return out

    def _hybrid_ranked(self, queries: list[str], k: int) -> list[list[tuple[int, float]]]:
        depth = max(k, FUSION_DEPTH)
        out = []
        for sparse, dense in zip(self._bm25_ranked(queries, depth), self._dense_ranked(queries, depth), strict=True):
            fused: dict[int, float] = {}
            for ranking in (sparse, dense):
                for rank, (row, _) in enumerate(ranking):
                    fused[row] = fused.get(row, 0.0) + 1.0 / (RRF_K + rank + 1)
            out.append(sorted(fused.items(), key=lambda kv: (-kv[1], kv[0])))
        return out

    def search_batch(self, queries: list[str], k: int = 5, mode: SearchMode = "hybrid") -> list[list[Hit]]:
        """Top-`k` hits for each query (fewer when fewer documents match)."""
        queries = [check_query(q, k) for q in queries]
        if not queries:
            return []
        if mode == "bm25":
            ranked = self._bm25_ranked(queries, k)
        elif mode == "dense":
            ranked = self._dense_ranked(queries, k)
        elif mode == "hybrid":
            ranked = self._hybrid_ranked(queries, k) if self.has_dense else self._bm25_ranked(queries, k)
        else:
            raise ValueError(f"mode must be 'bm25', 'dense' or 'hybrid', got {mode!r}")
        hits = []
        for ranking in ranked:
            row_hits = []
            for row, score in ranking[:k]:
                doc = self._doc_at(row)
                row_hits.append(Hit(doc_id=doc.id, title=doc.title, text=doc.text, score=score))
            hits.append(row_hits)
        return hits

    def search(self, query: str, k: int = 5, mode: SearchMode = "hybrid") -> list[Hit]:
        return self.search_batch([query], k, mode)[0]

    def rank(self, query: str, doc_ids: list[str]) -> list[tuple[str, float]]:
        """`doc_ids` ordered by the cosine of their stored embeddings with `query`'s, best
        first: a reader that picks which of a few given documents a text is about (search
        self-play's RAG check) rather than a search over the whole corpus."""
        if self._emb is None:
            raise ValueError(f"{self.path}: index was built without dense embeddings; rank() needs them")
        from ._embed import embed

        query = check_query(query, 1)
        missing = [d for d in doc_ids if d not in self._row]
        if missing:
            raise KeyError(f"no document with id {missing[0]!r}")
        sims = np.asarray(self._emb)[[self._row[d] for d in doc_ids]] @ embed([query])[0]
        return sorted(zip(doc_ids, (float(x) for x in sims), strict=True), key=lambda kv: -kv[1])

    def close(self) -> None:
        self._docs.close()
        self._docs_file.close()
