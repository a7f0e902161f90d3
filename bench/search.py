"""Search cost: index build time and queries/s for BM25, dense and hybrid.

    python bench/search.py                 # default corpus + 100k synthetic documents
    python bench/search.py --docs 20000    # smaller synthetic corpus
    python bench/search.py --full-dense    # embed every synthetic document (slow on CPU)

Two corpora: the default stdlib-docs corpus (~3.4k real documents) and a
synthetic one (100k documents of words drawn Zipf-like from the real corpus's
vocabulary) to show how cost grows. Ratios are printed against the default
corpus measured in the same process.

Embedding 100k documents with MiniLM on 2 CPU cores takes tens of minutes, so by
default the synthetic corpus's dense build time is extrapolated from embedding
a sample, and its dense vectors are random unit vectors: dense search cost
(a matrix-vector product over n x 384 floats) does not depend on their values.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
QUERIES = [json.loads(x)["query"] for x in (ROOT / "tests" / "data" / "retrieval_queries.jsonl").open()]


def qps(index, queries: list[str], mode: str, seconds: float = 3.0) -> float:
    """Single queries one after another (how a tool uses the index), for about `seconds`."""
    index.search(queries[0], k=5, mode=mode)  # warm caches / pages
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        index.search(queries[n % len(queries)], k=5, mode=mode)
        n += 1
    return n / (time.perf_counter() - start)


def synthetic_documents(n: int, vocab: list[str], weights: list[float], seed: int = 0):
    from agentplay.tools import Document

    rng = random.Random(seed)
    for i in range(n):
        words = rng.choices(vocab, weights=weights, k=rng.randint(20, 60))
        yield Document(id=f"syn-{i}", title=" ".join(words[:4]), text=" ".join(words[4:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=100_000, help="synthetic corpus size")
    ap.add_argument("--full-dense", action="store_true", help="embed every synthetic document")
    ap.add_argument("--sample", type=int, default=1000, help="documents embedded to extrapolate dense build time")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from agentplay.tools import CorpusIndex, stdlib_documents
    from agentplay.tools._embed import embed
    from agentplay.tools._index import _embed_text

    tmp = Path(tempfile.mkdtemp(prefix="agentplay-bench-"))
    rows = []
    try:
        # ---- default corpus (the baseline) ----------------------------------------------------
        t0 = time.perf_counter()
        docs = stdlib_documents()
        t_extract = time.perf_counter() - t0
        embed(["warm up the encoder"])
        base = CorpusIndex.build(docs, tmp / "stdlib", dense=True)
        bt = base.meta["build_timings"]
        rows.append(("stdlib", len(docs), t_extract, bt["bm25_s"], bt["dense_s"], False,
                     {m: qps(base, QUERIES, m) for m in ("bm25", "dense", "hybrid")}))

        # ---- synthetic corpus ------------------------------------------------------------------
        counts = Counter(w for d in docs for w in re.findall(r"[a-z]{3,}", d.text.lower()))
        vocab = [w for w, _ in counts.most_common(20_000)]
        syn_docs = list(synthetic_documents(args.docs, vocab, [1.0 / (r + 1) for r in range(len(vocab))]))
        rng = random.Random(1)
        syn_queries = [" ".join(rng.choices(vocab[:5000], k=3)) for _ in range(50)]
        syn = CorpusIndex.build(syn_docs, tmp / "synthetic", dense=args.full_dense)
        sbt = syn.meta["build_timings"]
        extrapolated = not args.full_dense
        if args.full_dense:
            dense_s = sbt["dense_s"]
        else:
            start = time.perf_counter()
            embed([_embed_text(d) for d in syn_docs[: args.sample]])
            dense_s = (time.perf_counter() - start) * len(syn_docs) / args.sample
            vecs = np.random.default_rng(0).standard_normal((len(syn_docs), 384)).astype(np.float32)
            np.save(syn.path / "embeddings.npy", vecs / np.linalg.norm(vecs, axis=1, keepdims=True))
            syn = CorpusIndex.load(syn.path)
        t_load = time.perf_counter()
        CorpusIndex.load(syn.path).close()
        t_load = time.perf_counter() - t_load
        rows.append((f"synthetic{'*' if extrapolated else ''}", len(syn_docs), 0.0, sbt["bm25_s"], dense_s,
                     extrapolated, {m: qps(syn, syn_queries, m) for m in ("bm25", "dense", "hybrid")}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\npython {sys.version.split()[0]}, torch threads {args.threads}, k=5, single queries in sequence\n")
    print(f"{'corpus':<12}{'docs':>8}{'extract s':>11}{'bm25 build s':>14}{'dense build s':>15}"
          f"{'bm25 q/s':>10}{'dense q/s':>11}{'hybrid q/s':>12}")
    for name, n, ext, b, d, _, q in rows:
        print(f"{name:<12}{n:>8}{ext:>11.2f}{b:>14.2f}{d:>15.1f}{q['bm25']:>10.1f}{q['dense']:>11.1f}{q['hybrid']:>12.1f}")
    (_, n0, _, b0, d0, _, q0), (_, n1, _, b1, d1, _, q1) = rows
    print(f"\nsynthetic / stdlib: docs x{n1 / n0:.1f}, bm25 build x{b1 / b0:.1f}, dense build x{d1 / d0:.1f}, "
          + ", ".join(f"{m} q/s x{q1[m] / q0[m]:.2f}" for m in q0))
    print("hybrid / bm25 q/s on stdlib: x{:.2f}; load of the synthetic index: {:.3f} s".format(
        q0["hybrid"] / q0["bm25"], t_load))
    if rows[1][5]:
        print(f"* dense build time extrapolated from {args.sample} documents; dense vectors random (see docstring)")


if __name__ == "__main__":
    main()
