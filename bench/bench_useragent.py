"""Benchmark UserAgentParser: Rust vs re2 vs pure-Python resolver, with and without cache.

Run by hand from the repository root (not part of the test suite):

    python bench/bench_useragent.py            # 5000 parses
    python bench/bench_useragent.py -n 20000 --cache-size 500

The workload draws N strings from the real UAs in
``tests/data/ua/user_agents.json`` with a skewed (Zipf-like) popularity, as
a site's traffic is, and makes one parse in ten a never-seen-before
variant so the cache also meets misses. Prints time per parse and ratios.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proxy.enrich.useragent import ResolverName, UserAgentParser, available_resolvers  # noqa: E402


def workload(n: int, seed: int = 7) -> list[str]:
    """N UA strings: popular ones often, rare ones seldom, 10% unique variants."""
    cases = json.loads((ROOT / "tests/data/ua/user_agents.json").read_text("utf-8"))[
        "cases"
    ]
    uas = [c["ua"] for c in cases]
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(len(uas))]
    picks = rng.choices(uas, weights=weights, k=n)
    for i in range(0, n, 10):
        # A build number no one else sends: a cache miss, like real long-tail traffic.
        picks[i] = f"{picks[i]} build/{i}"
    return picks


def run(uas: list[str], resolver: ResolverName, cache_size: int) -> float:
    """Seconds per parse, after building the parser (build time not counted)."""
    parser = UserAgentParser(cache_size=cache_size, resolver=resolver)
    parser.parse(uas[0])  # first call pays for lazy regex compilation
    start = time.perf_counter()
    for ua in uas:
        parser.parse(ua)
    return (time.perf_counter() - start) / len(uas)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5000, help="parses per run (default 5000)")
    ap.add_argument(
        "--cache-size", type=int, default=2000, help="cache entries (default 2000)"
    )
    args = ap.parse_args()

    uas = workload(args.n)
    print(
        f"{args.n} parses, {len(set(uas))} distinct strings, cache_size={args.cache_size}"
    )
    print(f"resolvers available: {', '.join(available_resolvers())}")
    print()

    results: dict[tuple[str, bool], float] = {}
    for resolver in available_resolvers():
        for cached in (False, True):
            secs = run(uas, resolver, args.cache_size if cached else 0)
            results[(resolver, cached)] = secs
            label = f"{resolver:6} {'cache' if cached else 'no cache':9}"
            print(f"{label} {secs * 1e6:10.1f} µs/parse")

    print()
    fastest = (
        results[("regex", True)]
        if ("regex", True) in results
        else min(results.values())
    )
    for (resolver, cached), secs in results.items():
        if not cached:
            print(f"{resolver}: cache speed-up x{secs / results[(resolver, True)]:.1f}")
    if ("regex", False) in results:
        for resolver in ("re2", "basic"):
            if (resolver, False) in results:
                ratio = results[(resolver, False)] / results[("regex", False)]
                print(f"{resolver} vs regex (Rust), no cache: x{ratio:.1f} slower")
    slowest = max(results.values())
    print(f"slowest vs fastest configuration: x{slowest / fastest:.1f}")


if __name__ == "__main__":
    main()
