#!/usr/bin/env python3
"""
Benchmark of the RTP announcement player (not a test).

Plays N concurrent announcements (PCMU, looped, one UDP port per stream as a
leg would have) from one Twisted reactor to a receiver in ANOTHER process on
loopback, and prints, per N:

- CPU of the sending process: seconds per stream-second, and % of one core;
- pacing error at the receiver: |inter-arrival - ptime| p50 / p99 / max, from
  kernel receive timestamps (SO_TIMESTAMPNS), so the receiver's own
  scheduling does not blur the figures;
- drift: worst |(last - first arrival) - packets * ptime| of any stream, and
  packets lost (sequence gaps).

Usage (from the repository root):

    python3 bench/bench_media.py [--streams 50,200,500] [--seconds 10] [--warmup 2]

Each N runs in a fresh sender process (a reactor cannot be restarted), which
starts its own receiver process.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import select
import socket
import struct
import subprocess
import sys
import time
from itertools import pairwise

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(
        len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1)))
    )
    return sorted_values[index]


# --- receiver process ------------------------------------------------------


def receive(ptime: float) -> None:
    """
    Collect (ssrc, seq, kernel arrival time) until the sender writes
    "stop <t0> <t1>" on stdin, then print statistics over that window.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024 * 1024)
    sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    print(sock.getsockname()[1], flush=True)

    records: list[tuple[int, int, float]] = []
    append = records.append
    unpack = struct.unpack_from
    ancSize = socket.CMSG_SPACE(16)
    stdin = sys.stdin.fileno()
    command = b""
    while True:
        readable, _, _ = select.select([sock, stdin], [], [], 1.0)
        if sock in readable:
            while True:
                try:
                    data, anc, _, _ = sock.recvmsg(2048, ancSize)
                except BlockingIOError:
                    break
                seconds, nanos = unpack("qq", anc[0][2])
                seq, _, ssrc = unpack("!HII", data, 2)
                append((ssrc, seq, seconds + nanos * 1e-9))
        if stdin in readable:
            chunk = os.read(stdin, 1024)
            command += chunk
            if b"\n" in command or not chunk:
                break
    _, t0, t1 = command.split()
    start, end = float(t0), float(t1)

    streams: dict[int, list[tuple[int, float]]] = {}
    for ssrc, seq, arrival in records:
        if start <= arrival <= end:
            streams.setdefault(ssrc, []).append((seq, arrival))
    errors = []
    drift = 0.0
    lost = 0
    for packets in streams.values():
        for (s1, a1), (s2, a2) in pairwise(packets):
            gap = (s2 - s1) % 65536
            if gap == 1:
                errors.append(abs(a2 - a1 - ptime))
            else:
                lost += gap - 1
        first, last = packets[0], packets[-1]
        span = (last[0] - first[0]) % 65536
        drift = max(drift, abs(last[1] - first[1] - span * ptime))
    errors.sort()
    print(
        json.dumps(
            {
                "streams_seen": len(streams),
                "packets": sum(len(p) for p in streams.values()),
                "lost": lost,
                "p50_ms": percentile(errors, 0.50) * 1000,
                "p99_ms": percentile(errors, 0.99) * 1000,
                "max_ms": (errors[-1] if errors else float("nan")) * 1000,
                "drift_ms": drift * 1000,
            }
        ),
        flush=True,
    )


# --- sender process ----------------------------------------------------------


def send(count: int, seconds: float, warmup: float, ptime: int) -> None:
    """Play C{count} looped announcements; print one JSON line of results."""
    sys.path.insert(0, _REPO)
    from twisted.internet import reactor
    from twisted.internet.protocol import DatagramProtocol

    from callback_tw.config.values import PACKAGED_PROMPTS
    from callback_tw.media.player import RTPScheduler, RTPStream
    from callback_tw.media.prompts import PromptCatalogue

    receiver = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--receive", "--ptime", str(ptime)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    port = int(receiver.stdout.readline())
    frames = PromptCatalogue.load(PACKAGED_PROMPTS).announcement("00080002", "PCMU")
    scheduler = RTPScheduler(reactor)
    streams = []
    window: dict[str, float] = {}

    def start() -> None:
        listening = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        stream = RTPStream(scheduler, listening, ("127.0.0.1", port), 0, ptime)
        stream.loop(frames)
        streams.append((stream, listening))

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def measureFrom() -> None:
        window["t0"], window["cpu0"] = time.time(), cpu()

    def measureTo() -> None:
        window["t1"], window["cpu1"] = time.time(), cpu()
        for stream, listening in streams:
            stream.stop()
            listening.stopListening()
        reactor.stop()

    rng = random.Random(1)
    for _ in range(count):
        # Calls arrive at random moments, not all at once.
        reactor.callLater(rng.uniform(0, 1.0), start)
    reactor.callLater(1.0 + warmup, measureFrom)
    reactor.callLater(1.0 + warmup + seconds, measureTo)
    reactor.run()

    out, _ = receiver.communicate(
        f"stop {window['t0']} {window['t1']}\n".encode(), timeout=60
    )
    result = json.loads(out.decode().strip().splitlines()[-1])
    wall = window["t1"] - window["t0"]
    used = window["cpu1"] - window["cpu0"]
    sent = sum(stream.sent for stream, _ in streams)
    dropped = sum(stream.dropped for stream, _ in streams)
    result.update(
        streams=count,
        seconds=round(wall, 2),
        cpu_percent=100 * used / wall,
        cpu_ms_per_stream_second=1000 * used / (count * wall),
        sent=sent,
        dropped_at_sender=dropped,
    )
    print(json.dumps(result), flush=True)


# --- orchestration ------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--streams", default="50,200,500", help="comma-separated N values"
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="measured seconds per N"
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds before measuring"
    )
    parser.add_argument("--ptime", type=int, default=20)
    parser.add_argument("--receive", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--send", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.receive:
        receive(args.ptime / 1000)
        return
    if args.send:
        send(args.send, args.seconds, args.warmup, args.ptime)
        return

    print(
        f"RTP player benchmark: PCMU, ptime {args.ptime} ms, "
        f"{args.seconds:g} s measured per N, receiver in another process "
        f"on loopback ({os.cpu_count()} cores)"
    )
    columns = [
        ("streams", 7, "streams", "d"),
        ("CPU %core", 9, "cpu_percent", ".1f"),
        ("CPU ms/stream-s", 15, "cpu_ms_per_stream_second", ".3f"),
        ("err p50 ms", 10, "p50_ms", ".2f"),
        ("err p99 ms", 10, "p99_ms", ".2f"),
        ("err max ms", 10, "max_ms", ".2f"),
        ("drift ms", 8, "drift_ms", ".2f"),
        ("lost", 5, "lost", "d"),
        ("skipped", 7, "dropped_at_sender", "d"),
    ]
    print(" ".join(f"{title:>{width}}" for title, width, _, _ in columns))
    for count in (int(n) for n in args.streams.split(",")):
        run = subprocess.run(
            [
                sys.executable,
                os.path.abspath(__file__),
                "--send",
                str(count),
                "--seconds",
                str(args.seconds),
                "--warmup",
                str(args.warmup),
                "--ptime",
                str(args.ptime),
            ],
            capture_output=True,
            timeout=args.seconds + args.warmup + 120,
        )
        if run.returncode != 0:
            print(f"{count:>7} failed:\n{run.stderr.decode()}")
            continue
        r = json.loads(run.stdout.decode().strip().splitlines()[-1])
        print(
            " ".join(f"{r[key]:>{width}{fmt}}" for _, width, key, fmt in columns),
            flush=True,
        )


if __name__ == "__main__":
    main()
