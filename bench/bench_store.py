#!/usr/bin/env python3
"""
What the durable store costs (not a test): the load of bench_callbacks.py,
run three times in one process on the same machine, one store each:

  tmpfs       SQLite on /dev/shm: the same code with a disk that costs
              nothing (the baseline: there is no in-memory build any more;
              every callback is committed before its ACK)
  sqlite      SQLite in a temporary directory on disk (the default store)
  postgresql  a PostgreSQL server started for the run (tests/pgserver.py),
              with fsync on, as deployed

and prints callbacks/s, ACK p50/p99 and CPU per callback side by side, with
each store's change against the baseline.

    python3 bench/bench_store.py --rate 100 --seconds 20

Options are bench_callbacks.py's (--rate, --seconds, --talk, --max-lag...),
plus --store-only: no server and no SIP, only the store's writes of that
many callbacks per second (an accept, timed from the call to its COMMIT,
then the 16 other writes a callback makes, spread over its 2 s, as the
server spreads them), to separate the store's own latency from the
server's.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

import bench_callbacks  # noqa: E402
from benchrun import runBounded  # noqa: E402
from twisted.internet import defer  # noqa: E402

#: the writes a callback makes after its accept (see docs/store.md), and
#: over how long (a callback of bench_callbacks.py's default talk time).
WRITES_AFTER_ACCEPT = 16
WRITES_SPREAD = 2.0


@defer.inlineCallbacks
def storeOnly(reactor: Any, url: str, rate: float, seconds: float) -> Any:
    """
    Accepts at C{rate} per second for C{seconds}, each followed by the other
    writes of a callback; fire with the accepts' latencies (seconds).
    """
    from twisted.internet import task

    from callback_tw.store import NewCallback
    from callback_tw.store import open as openStore

    store = yield openStore(url, "bench", reactor)
    latencies: list[float] = []

    def one(n: int) -> None:
        started = time.perf_counter()
        new = NewCallback(f"m{n}", "as1", "127.0.0.1:6000", "1", "2", 60)

        def committed(_: Any) -> None:
            latencies.append(time.perf_counter() - started)
            for k in range(WRITES_AFTER_ACCEPT):
                reactor.callLater(
                    k * WRITES_SPREAD / WRITES_AFTER_ACCEPT,
                    store.update,
                    f"m{n}",
                    state=f"s{k}",
                )

        store.accept(new).addCallback(committed)

    total = int(rate * seconds)
    for n in range(total):
        reactor.callLater(n / rate, one, n)
    yield task.deferLater(reactor, seconds + WRITES_SPREAD + 2, lambda: None)
    yield store.close()
    return sorted(latencies), total


@defer.inlineCallbacks
def runStoreOnly(reactor: Any, options: Any, stores: list[tuple[str, str]]) -> Any:
    print(
        f"{'store':<12}{'accepts':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"   ({options.rate:g} callbacks/s, {WRITES_AFTER_ACCEPT + 1} writes each)"
    )
    results = {}
    for name, url in stores:
        latencies, total = yield storeOnly(reactor, url, options.rate, options.seconds)
        p50 = latencies[len(latencies) // 2] * 1000
        p99 = latencies[int(len(latencies) * 0.99)] * 1000
        print(f"{name:<12}{len(latencies):>5}/{total:<4}{p50:>9.2f}{p99:>9.2f}")
        results[name] = (p50, p99)
    return results


@defer.inlineCallbacks
def runAll(reactor: Any, options: Any) -> Any:
    shm = Path(tempfile.mkdtemp(prefix="bench_store-", dir="/dev/shm"))
    stores = [("tmpfs", f"sqlite:///{shm}/callbacks.db"), ("sqlite", None)]
    try:
        from tests import pgserver

        # Its own server, with fsync on: the test suite's runs without.
        stores.append(("postgresql", pgserver.durableServer().createDatabase("bench")))
    except Exception as e:
        print(f"PostgreSQL skipped: {e}", file=sys.stderr)
    if options.stores:
        wanted = options.stores.split(",")
        stores = [(name, url) for name, url in stores if name in wanted]
    if options.store_only:
        directory = Path(tempfile.mkdtemp(prefix="bench_store-"))
        stores = [(n, u or f"sqlite:///{directory}/callbacks.db") for n, u in stores]
        try:
            return (yield runStoreOnly(reactor, options, stores))
        finally:
            shutil.rmtree(shm, ignore_errors=True)
            shutil.rmtree(directory, ignore_errors=True)
    results = {}
    try:
        for name, url in stores:
            print(f"\n=== store: {name} ===", flush=True)
            options.store = url
            results[name] = yield bench_callbacks.run(reactor, options)
    finally:
        shutil.rmtree(shm, ignore_errors=True)
    base = next(iter(results.values()), None)
    baseName = next(iter(results), "")
    print()
    print(
        f"{'store':<12}{'callbacks/s':>12}{'vs ' + baseName:>10}"
        f"{'ACK p50 ms':>12}{'ACK p99 ms':>12}{'CPU ms/cb':>11}{'completed':>11}"
    )
    for name, report in results.items():
        rate = report["sustained_per_s"]
        change = (rate / base["sustained_per_s"] - 1) * 100 if base else 0.0
        print(
            f"{name:<12}{rate:>12.1f}{change:>9.1f}%"
            f"{report['ack_p50_ms']:>12.2f}{report['ack_p99_ms']:>12.2f}"
            f"{report['cpu_ms_per_callback']:>11.2f}"
            f"{report['completed']:>6}/{report['requested']}"
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = bench_callbacks.makeParser()
    parser.add_argument(
        "--store-only",
        action="store_true",
        dest="store_only",
        help="only the store's writes, no server (see above)",
    )
    parser.add_argument(
        "--stores",
        default="",
        help="comma-separated stores to run, of tmpfs,sqlite,postgresql"
        " (default: all; the first one run is the baseline of the table)",
    )
    options = parser.parse_args(argv)
    if bench_callbacks.harness.SIPP is None:
        print("sipp is not installed (Debian package sip-tester)", file=sys.stderr)
        return 2
    result = runBounded(
        lambda reactor: runAll(reactor, options), None, bench_callbacks._children
    )
    if not isinstance(result, dict):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
