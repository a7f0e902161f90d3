"""Transient model-server faults: episodes lost and wall-time overhead at 0/10/30/50 % fault rates.

One `agentplay serve` (SmolLM2) behind the tests' fault-injecting proxy
(tests/_fault_proxy.py: 429 with Retry-After, 500, 503 with an HTML body,
connection reset, truncated 2xx JSON, a stall past the client timeout, drawn
at random). Each rate runs the same episodes of examples/my_recipe.py with the
same seeds through the proxy; the 0 % row is the baseline, so the proxy's own
cost is not counted as fault overhead. Episode retries are off: a lost episode
is a model call the pool gave up on. "identical" compares every stored turn
(ids, text, rewards) with the baseline run. Run:

    python bench/faults.py --episodes 8 --concurrency 2

Wall times are noisy on a shared machine; the overhead column is the ratio to the
0 % row of the same process.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
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
    parser.add_argument("--seed", type=int, default=0, help="seed of the proxy's fault draws")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="client timeout (s); the proxy's stalls last 1.5 s longer. Keep it well above the "
                             "server's normal latency, or slow answers become timeouts too")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]

    proc, url = start_server()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            baseline = None
            for rate in rates:
                with FaultProxy(url, rate=rate, seed=args.seed, stall_s=args.timeout + 1.5) as proxy:
                    started = time.perf_counter()
                    episodes = run_episodes(proxy.url, Path(tmp) / f"r{rate}.db", f"rate-{rate}",
                                            episodes=args.episodes, concurrency=args.concurrency,
                                            timeout=args.timeout)
                    wall = time.perf_counter() - started
                prints = [fingerprint(e) for e in episodes]
                baseline = baseline or (prints, wall)
                ok = sum(e.status == "ok" for e in episodes)
                requests = proxy.forwarded + sum(proxy.injected.values())
                rows.append((rate, requests, sum(proxy.injected.values()), dict(proxy.injected), ok,
                             args.episodes - ok, prints == baseline[0], wall, wall / baseline[1]))
                print(f"rate {rate:.0%}: {ok}/{args.episodes} ok in {wall:.1f} s, faults {dict(proxy.injected)}",
                      file=sys.stderr, flush=True)
    finally:
        stop_server(proc)

    print(f"\nfault injection: {args.episodes} episodes of examples/my_recipe.py, concurrency {args.concurrency}, "
          f"client timeout {args.timeout:g} s, episode retries off\n")
    print("| fault rate | chat requests | faults injected | episodes ok | lost | identical to 0% | wall s | overhead |")
    print("|---:|---:|---:|---:|---:|:---:|---:|---:|")
    for rate, requests, faults, _kinds, ok, lost, same, wall, ratio in rows:
        print(f"| {rate:.0%} | {requests} | {faults} | {ok}/{args.episodes} | {lost} | {'yes' if same else 'NO'} "
              f"| {wall:.1f} | {ratio:.2f}x |")
    print("\nfaults by kind: " + "; ".join(f"{r[0]:.0%}: " + ", ".join(f"{k} {n}" for k, n in sorted(r[3].items()))
                                          for r in rows if r[3]))


if __name__ == "__main__":
    main()
