#!/usr/bin/env python3
"""
Held-memory benchmark for callback_tw (not a test): what a joined callback
costs while its two parties talk, and what the server does while nothing
happens.

For each N of C{--calls} it starts the real server (C{twistd -n callback},
SIP trace off, no announcement) and one SIPp UAS playing every phone
(C{tests/e2e/scenarios/uas.xml}: C{answer*} phones answer the leg and every
join re-INVITE and never hang up), sends N REQUESTs at C{--rate} per second
(user1 C{answer<n>}, user2 C{answer-<n>}, duration one day), waits until the
server has logged all N joins, then waits C{--settle} seconds (the SIP
stack keeps what answers a retransmission 32 to 36 s, sippy an ended
dialog 32 s; that memory is not the callback's) and prints:

  - RSS before the first REQUEST and with N joined callbacks held, and the
    difference per joined callback (KiB)
  - the server's CPU over C{--idle} seconds while the N callbacks are held
    (% of one core): timers and polling that scale with held calls
  - the server's CPU per callback while they were being set up

Run from the repository root:

    python3 bench/bench_joined.py --calls 5000 20000

Every process it starts is stopped at the end; each run is bounded by a hard
time limit.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench_callbacks import cpuSeconds, rssKiB  # noqa: E402
from benchrun import runBounded  # noqa: E402
from twisted.internet import defer  # noqa: E402
from twisted.internet.protocol import DatagramProtocol  # noqa: E402

from tests.e2e import harness  # noqa: E402

JOINED = "joined: user1 <-> user2"

# Every child process started, so the hard time limit can end them.
_children: list[Any] = []


class CountingServer(harness.ServerProcess):
    """The server, counting its "joined" log lines as they come."""

    maxOutput = 200_000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.joined = 0
        self._tail = ""

    def outputReceived(self, text: str) -> None:
        super().outputReceived(text)
        lines = (self._tail + text).split("\n")
        self._tail = lines.pop()
        self.joined += sum(1 for line in lines if JOINED in line)


class HoldingAS(DatagramProtocol):
    """The application server: sends REQUESTs, counts the ACKs by code."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.acks: dict[str, str] = {}
        self.responses = 0

    def request(self, callbackId: str, user1: str, user2: str) -> None:
        text = f"REQUEST: id={callbackId};user1={user1};user2={user2};duration=86400;"
        self.transport.write(text.encode("ascii"), self.server)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        method, params = harness.parseIIF(data.decode("ascii", "replace"))
        if method == "ACK":
            self.acks[params.get("id", "")] = params.get("code", "")
        elif method == "RESPONSE":
            self.responses += 1


@defer.inlineCallbacks
def holdJoined(reactor: Any, calls: int, options: argparse.Namespace) -> Any:
    """One run: hold C{calls} joined callbacks; fire with the figures."""
    directory = Path(tempfile.mkdtemp(prefix="bench_joined-"))
    rampSeconds = calls / options.rate
    uas = harness.SippUAS(
        str(directory),
        reactor=reactor,
        lifetime=rampSeconds + options.settle + options.idle + 300,
        traceMessages=False,
        extraArgs=["-max_recv_loops", "10000", "-max_sched_loops", "10000"],
    )
    client = HoldingAS(("127.0.0.1", 0))
    clientPort = harness.freePort()
    server = CountingServer(
        str(directory),
        uas.port,
        clientPort,
        reactor=reactor,
        trace=False,
        max_calls=calls + 1000,
        max_duration=86400,
        no_answer_timeout=60,
        shutdown_timeout=5,
        max_lag=0,
    )
    client.server = server.iifAddress
    _children.extend([uas, server])
    listening = None
    try:
        yield uas.start()
        listening = reactor.listenUDP(clientPort, client, interface="127.0.0.1")
        yield server.start()
        yield harness.sleep(reactor, 2.0)
        idleRss = rssKiB(server.pid)
        setupCpu = cpuSeconds(server.pid)
        print(
            f"N={calls}: {calls} callbacks at {options.rate}/s; server pid"
            f" {server.pid}, SIPp pid {uas.pid}",
            flush=True,
        )
        start = time.monotonic()
        for n in range(calls):
            reactor.callLater(
                n / options.rate, client.request, f"j{n}", f"answer{n}", f"answer-{n}"
            )
        deadline = start + rampSeconds + options.join_wait
        while server.joined < calls and time.monotonic() < deadline:
            yield harness.sleep(reactor, 0.5)
        joinedAt = time.monotonic()
        setupCpu = cpuSeconds(server.pid) - setupCpu
        joined = server.joined
        refused = sum(1 for code in client.acks.values() if code != "ok")
        yield harness.sleep(reactor, options.settle)
        heldRss = rssKiB(server.pid)
        idleCpu = cpuSeconds(server.pid)
        yield harness.sleep(reactor, options.idle)
        idleCpu = cpuSeconds(server.pid) - idleCpu
        heldRss = max(heldRss, rssKiB(server.pid))
        figures = {
            "calls": calls,
            "joined": joined,
            "refused": refused,
            "ended_early": client.responses,
            "idle_rss_kib": idleRss,
            "held_rss_kib": heldRss,
            "kib_per_joined": (heldRss - idleRss) / joined if joined else float("nan"),
            "idle_cpu_percent": idleCpu / options.idle * 100,
            "setup_cpu_ms_per_callback": setupCpu / max(joined, 1) * 1000,
            "join_seconds": joinedAt - start,
        }
        took = figures["join_seconds"]
        rows = [
            (
                "joined / requested",
                f"{joined} / {calls} in {took:.0f} s (refused {refused},"
                f" ended early {client.responses})",
            ),
            (
                "RSS before / held",
                f"{idleRss / 1024:.1f} / {heldRss / 1024:.1f} MiB"
                f" (after {options.settle:.0f} s settling)",
            ),
            ("RSS per joined callback", f"{figures['kib_per_joined']:.1f} KiB"),
            (
                "idle CPU, N held",
                f"{figures['idle_cpu_percent']:.2f}% of a core"
                f" over {options.idle:.0f} s",
            ),
            (
                "setup CPU",
                f"{figures['setup_cpu_ms_per_callback']:.2f} ms per callback",
            ),
        ]
        for label, value in rows:
            print(f"  {label:<26}{value}", flush=True)
        return figures
    except Exception:
        print(
            f"run failed; server output tail:\n{server.output[-4000:]}", file=sys.stderr
        )
        print("SIPp errors:\n" + uas.errors()[-2000:], file=sys.stderr)
        raise
    finally:
        if listening is not None:
            yield listening.stopListening()
        yield server.stop()
        yield uas.stop()
        _children.clear()
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()


@defer.inlineCallbacks
def run(reactor: Any, options: argparse.Namespace) -> Any:
    results = []
    for calls in options.calls:
        results.append((yield holdJoined(reactor, calls, options)))
    print()
    print(f"{'N':>7} {'joined':>7} {'KiB/joined':>11} {'idle CPU %':>11}")
    for r in results:
        print(
            f"{r['calls']:>7} {r['joined']:>7} {r['kib_per_joined']:>11.1f}"
            f" {r['idle_cpu_percent']:>11.2f}"
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--calls",
        type=int,
        nargs="+",
        default=[5000, 20000],
        help="joined callbacks to hold, one run each (5000 20000)",
    )
    parser.add_argument(
        "--rate", type=float, default=200.0, help="REQUESTs per second (200)"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=70.0,
        help="seconds between the last join and the RSS reading (70: past"
        " the 32-36 s retransmission cache)",
    )
    parser.add_argument(
        "--idle", type=float, default=10.0, help="seconds of idle CPU measured (10)"
    )
    parser.add_argument(
        "--join-wait",
        type=float,
        default=60.0,
        dest="join_wait",
        help="seconds after the last REQUEST to wait for the joins (60)",
    )
    options = parser.parse_args(argv)
    if harness.SIPP is None:
        print("sipp is not installed (Debian package sip-tester)", file=sys.stderr)
        return 2

    hardLimit = sum(
        c / options.rate + options.join_wait + options.settle + options.idle + 60
        for c in options.calls
    )
    result = runBounded(lambda reactor: run(reactor, options), hardLimit, _children)
    if not isinstance(result, list):
        return 1
    return 0 if all(r["joined"] == r["calls"] for r in result) else 1


if __name__ == "__main__":
    sys.exit(main())
