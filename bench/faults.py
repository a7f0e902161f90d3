"""Transient model-server faults: episodes lost and wall-time overhead at 0/10/30/50 % fault rates.

One `agentplay serve` (SmolLM2) behind the tests' fault-injecting proxy
(tests/_fault_proxy.py: 429 with Retry-After, 500, 503 with an HTML body,
connection reset, truncated 2xx JSON, a stall past the client timeout, drawn
at random). Each rate runs the same episodes of examples/my_recipe.py with the
same seeds through the proxy; the 0 % row is the baseline, so the proxy's own
cost is not counted as fault overhead. Episode retries are off: a lost episode
is a model call the pool gave up on. "identical" compares every stored turn
(ids, text, rewards) with the baseline run. Run:

    python bench/faults.py --episodes 12 --concurrency 2 --rounds 2

Wall times are noisy on a shared machine: the rates run interleaved, `--rounds`
times, and the overhead column is the ratio of median wall times to the 0 % row of
the same process.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from _fault_proxy import FaultProxy, fingerprint, run_episodes  # the tests' proxy and runner
from _servers import start_server, stop_server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--rates", default="0,0.1,0.3,0.5", help="comma-separated fault rates; the first is the baseline")
    parser.add_argument("--seed", type=int, default=0, help="seed of the proxy's fault draws (+ round)")
    parser.add_argument("--rounds", type=int, default=2, help="passes over all rates; wall time is the median")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="client timeout (s); the proxy's stalls last 1.5 s longer. Keep it well above the "
                             "server's normal latency, or slow answers become timeouts too")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]

    proc, url = start_server()
    runs: dict[float, list[dict]] = {rate: [] for rate in rates}
    baseline_prints = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for round_ in range(args.rounds):  # rates interleaved per round: load drift hits them alike
                for rate in rates:
                    with FaultProxy(url, rate=rate, seed=args.seed + round_, stall_s=args.timeout + 1.5) as proxy:
                        started = time.perf_counter()
                        episodes = run_episodes(proxy.url, Path(tmp) / f"r{rate}-{round_}.db", f"rate-{rate}",
                                                episodes=args.episodes, concurrency=args.concurrency,
                                                timeout=args.timeout)
                        wall = time.perf_counter() - started
                    prints = [fingerprint(e) for e in episodes]
                    baseline_prints = baseline_prints or prints
                    ok = sum(e.status == "ok" for e in episodes)
                    runs[rate].append({"wall": wall, "ok": ok, "same": prints == baseline_prints,
                                       "requests": proxy.forwarded + sum(proxy.injected.values()),
                                       "kinds": dict(proxy.injected)})
                    print(f"round {round_} rate {rate:.0%}: {ok}/{args.episodes} ok in {wall:.1f} s, "
                          f"faults {dict(proxy.injected)}", file=sys.stderr, flush=True)
    finally:
        stop_server(proc)

    base_wall = statistics.median(r["wall"] for r in runs[rates[0]])
    total = args.episodes * args.rounds
    print(f"\nfault injection: {args.episodes} episodes of examples/my_recipe.py x {args.rounds} round(s), "
          f"concurrency {args.concurrency}, client timeout {args.timeout:g} s, episode retries off\n")
    print("| fault rate | chat requests | faults injected | episodes ok | lost | identical to 0% | median wall s "
          "| overhead |")
    print("|---:|---:|---:|---:|---:|:---:|---:|---:|")
    kinds_line = []
    for rate in rates:
        rs = runs[rate]
        ok = sum(r["ok"] for r in rs)
        faults = Counter()
        for r in rs:
            faults.update(r["kinds"])
        wall = statistics.median(r["wall"] for r in rs)
        print(f"| {rate:.0%} | {sum(r['requests'] for r in rs)} | {sum(faults.values())} | {ok}/{total} "
              f"| {total - ok} | {'yes' if all(r['same'] for r in rs) else 'NO'} | {wall:.1f} "
              f"| {wall / base_wall:.2f}x |")
        if faults:
            kinds_line.append(f"{rate:.0%}: " + ", ".join(f"{k} {n}" for k, n in sorted(faults.items())))
    print("\nfaults by kind: " + "; ".join(kinds_line))

if __name__ == "__main__":
    main()
