"""Trace-store encodings and durability, measured against baselines in the same process.

1. Token columns: packed BLOBs (what the store uses) vs JSON arrays (the obvious
   alternative) for N turns of T tokens: file size, write time, read+decode time.
2. `append_episode` with synchronous=NORMAL (default) vs FULL (fsync per commit).

Run: python bench/bench_store.py [--turns 1000] [--tokens 1500]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from store_factory import make_episode  # noqa: E402

from agentplay.traces import TraceStore  # noqa: E402
from agentplay.traces import _codec as codec  # noqa: E402


def _turns(n: int, tokens: int) -> list[tuple[list[int], list[int], list[float]]]:
    rng = random.Random(0)
    out = []
    for _ in range(n):
        mask = [1 if rng.random() < 0.7 else 0 for _ in range(tokens)]
        out.append(
            (
                [rng.randrange(150_000) for _ in range(tokens)],
                mask,
                [-rng.random() * 5 * m for m in mask],
            )
        )
    return out


def _encodings(turns, folder: Path) -> dict[str, dict[str, float]]:
    results = {}
    schemes = {
        "json": (
            lambda v: json.dumps(v),
            lambda v: json.dumps(v),
            lambda v: json.dumps(v),
            json.loads,
            json.loads,
            json.loads,
        ),
        "blob": (
            codec.pack_ids,
            codec.pack_mask,
            codec.pack_floats,
            codec.unpack_ids,
            codec.unpack_mask,
            codec.unpack_floats,
        ),
    }
    for name, (pi, pm, pf, ui, um, uf) in schemes.items():
        path = folder / f"{name}.db"
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (ids, mask, logprobs)")
        start = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO t VALUES (?,?,?)", [(pi(i), pm(m), pf(lp)) for i, m, lp in turns]
        )
        conn.execute("COMMIT")
        write = time.perf_counter() - start
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        start = time.perf_counter()
        decoded = [(ui(a), um(b), uf(c)) for a, b, c in conn.execute("SELECT * FROM t")]
        read = time.perf_counter() - start
        assert decoded[0][0] == turns[0][0]
        conn.close()
        results[name] = {"size_mb": path.stat().st_size / 2**20, "write_s": write, "read_s": read}
    return results


def _durability(folder: Path, episodes: int) -> dict[str, float]:
    rates = {}
    for mode in ("normal", "full"):
        with TraceStore(folder / f"{mode}.db", synchronous=mode) as store:  # type: ignore[arg-type]
            run_id = store.create_run("bench")
            eps = [make_episode(run_id, i, n_turns=4, n_tokens=1024) for i in range(episodes)]
            start = time.perf_counter()
            for ep in eps:
                store.append_episode(ep)
            rates[mode] = episodes / (time.perf_counter() - start)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=1500)
    parser.add_argument("--episodes", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        res = _encodings(_turns(args.turns, args.tokens), folder)
        j, b = res["json"], res["blob"]
        print(f"{args.turns} turns x {args.tokens} tokens (ids + mask + logprobs):")
        for name, r in res.items():
            print(
                f"  {name:5s} size {r['size_mb']:7.1f} MiB  write {r['write_s']:6.2f} s"
                f"  read+decode {r['read_s']:6.2f} s"
            )
        print(
            f"  blob vs json: {j['size_mb'] / b['size_mb']:.1f}x smaller,"
            f" {j['write_s'] / b['write_s']:.1f}x faster to write,"
            f" {j['read_s'] / b['read_s']:.1f}x faster to read"
        )
        rates = _durability(folder, args.episodes)
        print(
            f"append_episode (4 turns x 1024 tokens): normal {rates['normal']:.0f}/s,"
            f" full {rates['full']:.0f}/s "
            f"(full costs {rates['normal'] / rates['full']:.2f}x)"
        )


if __name__ == "__main__":
    main()
