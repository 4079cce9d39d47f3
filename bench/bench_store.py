#!/usr/bin/env python3
"""
What the durable store costs (not a test): the load of bench_callbacks.py,
run three times in one process on the same machine, one store each:

  tmpfs       SQLite on /dev/shm: the same code with a disk that costs
              nothing (the baseline: there is no in-memory build any more;
              every callback is committed before its ACK)
  sqlite      SQLite in a temporary directory on disk (the default store)
  postgresql  a PostgreSQL server started for the run (tests/pgserver.py)

and prints callbacks/s, ACK p50/p99 and CPU per callback side by side, with
each store's change against the baseline.

    python3 bench/bench_store.py --rate 100 --seconds 20

Options are bench_callbacks.py's (--rate, --seconds, --talk, --max-lag...).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

import bench_callbacks  # noqa: E402
from twisted.internet import defer  # noqa: E402


@defer.inlineCallbacks
def runAll(reactor: Any, options: Any) -> Any:
    shm = Path(tempfile.mkdtemp(prefix="bench_store-", dir="/dev/shm"))
    stores = [("tmpfs", f"sqlite:///{shm}/callbacks.db"), ("sqlite", None)]
    try:
        from tests import pgserver

        stores.append(("postgresql", pgserver.server().createDatabase("bench")))
    except Exception as e:
        print(f"PostgreSQL skipped: {e}", file=sys.stderr)
    results = {}
    try:
        for name, url in stores:
            print(f"\n=== store: {name} ===", flush=True)
            options.store = url
            results[name] = yield bench_callbacks.run(reactor, options)
    finally:
        shutil.rmtree(shm, ignore_errors=True)
    base = results.get("tmpfs")
    print()
    print(
        f"{'store':<12}{'callbacks/s':>12}{'vs tmpfs':>10}"
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
    options = bench_callbacks.makeParser().parse_args(argv)
    if bench_callbacks.harness.SIPP is None:
        print("sipp is not installed (Debian package sip-tester)", file=sys.stderr)
        return 2
    from twisted.internet import reactor

    outcome: dict[str, Any] = {}

    def finished(result: Any) -> None:
        outcome["result"] = result
        reactor.stop()

    reactor.callWhenRunning(lambda: runAll(reactor, options).addBoth(finished))
    reactor.run()
    result = outcome.get("result")
    if not isinstance(result, dict):
        if result is not None and hasattr(result, "printTraceback"):
            result.printTraceback()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
