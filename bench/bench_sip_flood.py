#!/usr/bin/env python3
"""
SIP fuzz and flood benchmark for callback_tw (not a test; loopback only,
bounded in time): what hostile SIP traffic costs the server, and whether
legitimate callbacks survive it.

It starts the real server (C{twistd -n callback}, SIP trace off, settings as
shipped) and one SIPp UAS playing every phone, then:

  1. fuzz: C{--fuzz} bad datagrams (random bytes, broken SIP, bad status
     lines carrying forged log lines, Vias pointing at a "victim" socket)
     from several loopback addresses, and C{--iif-fuzz} invalid IIF commands
     from a peer server (each must get exactly one C{ACK ... code=fail} and
     place no call);
  2. flood: C{--flood-rate} well-formed INVITEs per second for C{--seconds}
     from C{--flood-sources} loopback addresses, while an application server
     asks for C{--legit-rate} callbacks per second;

and prints: datagrams sent; wrong verdicts (any datagram at the victim
socket, more than one answer to one request); tracebacks in the server's
log; log bytes per 1 000 bad datagrams; server RSS before and after; the
fraction of legitimate REQUESTs served (ACK ok and the right RESPONSE).

Run from the repository root:

    python3 bench/bench_sip_flood.py

The whole run is bounded by C{--seconds} + 60 s; every process it starts is
stopped at the end.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

from bench_callbacks import BenchAS, cpuSeconds, rssKiB  # noqa: E402
from benchrun import runBounded  # noqa: E402
from twisted.internet import defer, task  # noqa: E402
from twisted.internet.protocol import DatagramProtocol  # noqa: E402

from tests.e2e import harness  # noqa: E402

_children: list[Any] = []

FORGED = "\r\n2026-01-01T00:00:00+0000 [stdout#info] forged line\r\n"


class Socket(DatagramProtocol):
    """One loopback socket that counts answers per Call-ID."""

    def __init__(self) -> None:
        self.answers: dict[str, int] = {}
        self.total = 0

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.total += 1
        text = data.decode("utf-8", "replace")
        for line in text.split("\r\n"):
            if line.lower().startswith(("call-id:", "i:")):
                callId = line.split(":", 1)[1].strip()
                self.answers[callId] = self.answers.get(callId, 0) + 1
                return


def invite(sip: tuple[str, int], via: str, callId: str) -> bytes:
    return (
        f"INVITE sip:0900123456@{sip[0]}:{sip[1]} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {via};branch=z9hG4bK-{callId}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:x@{via.split(';')[0]}>;tag=f{callId}\r\n"
        f"To: <sip:0900123456@{sip[0]}>\r\n"
        f"Call-ID: {callId}\r\n"
        "CSeq: 1 INVITE\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def badCommand(rng: random.Random, n: int) -> bytes:
    """An IIF datagram that must be refused (seeded, reproducible)."""
    kind = n % 7
    if kind == 0:
        return bytes([rng.randrange(128, 256)]) + rng.randbytes(rng.randint(16, 500))
    if kind == 1:
        return b"request: id=f%d;user1=1;user2=2;duration=1;" % n
    if kind == 2:
        return b"REQUEST: id=f%d;user1=1;duration=1;" % n
    if kind == 3:
        return b"REQUEST: id=f%d;user1=1;user2=2;duration=x%d;" % (n, n)
    if kind == 4:
        return b"REQUEST: id=f%d;user1=1\x01;user2=2;duration=1;" % n
    if kind == 5:
        return b"REQUEST: id=f%d;user1=1;user2=2;duration=1;" % n + b"x" * 2000
    return b"CANCEL: id=nosuch%d;" % n


class IIFCounter(DatagramProtocol):
    """A peer server's socket: counts the answers to its bad commands."""

    def __init__(self) -> None:
        self.total = 0
        self.ok = 0

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.total += 1
        if b"code=ok" in data:
            self.ok += 1


def badDatagram(rng: random.Random, n: int, sip: tuple[str, int], victim: int) -> bytes:
    """One of several kinds of bad datagram (seeded, reproducible)."""
    kind = n % 5
    if kind == 0:
        return rng.randbytes(rng.randint(32, 1500))
    if kind == 1:
        return f"SIP/2.0 {rng.choice([0, 99, 1000])} X{FORGED}Via: x\r\n\r\n".encode()
    if kind == 2:
        via = f"{sip[0]}:{sip[1]};received=127.0.0.1;rport={victim}"
        return invite(sip, via, f"fz{n}")
    good = invite(sip, "127.0.0.1:5099", f"fz{n}")
    raw = bytearray(good)
    for _ in range(rng.randint(1, 8)):
        raw[rng.randrange(len(raw))] = rng.randrange(256)
    if kind == 4:
        raw[10:10] = FORGED.encode()
    return bytes(raw)


@defer.inlineCallbacks
def run(reactor: Any, options: argparse.Namespace) -> Any:
    directory = Path(tempfile.mkdtemp(prefix="bench_sip_flood-"))
    uas = harness.SippUAS(
        str(directory),
        reactor=reactor,
        lifetime=options.seconds + 90,
        traceMessages=False,
    )
    clientPort, fuzzPort = harness.freePort(), harness.freePort()
    server = harness.ServerProcess(
        str(directory), uas.port, [clientPort, fuzzPort], reactor=reactor,
        trace=False, max_lag=0.1, no_answer_timeout=30,
    )  # fmt: skip
    server.maxOutput = 500_000_000
    client = BenchAS(server.iifAddress)
    _children.extend([uas, server])
    report: dict[str, Any] = {}
    ports: list[Any] = []
    try:
        yield uas.start()
        ports.append(reactor.listenUDP(clientPort, client, interface="127.0.0.1"))
        yield server.start()
        yield harness.sleep(reactor, 1.0)
        sip = ("127.0.0.1", server.sipPort)
        report["rss_before_kib"] = rssKiB(server.pid)
        cpu0 = cpuSeconds(server.pid)

        victim = Socket()
        ports.append(reactor.listenUDP(0, victim, interface="127.0.0.1"))
        fuzzers, flooders = [], []
        for group, count, net in (
            (fuzzers, 4, 2),
            (flooders, options.flood_sources, 1),
        ):
            for i in range(count):
                sender = Socket()
                address = f"127.0.{net}.{i + 1}"
                ports.append(reactor.listenUDP(0, sender, interface=address))
                group.append(sender)

        # 1. fuzz
        rng = random.Random(3261)
        logBefore = len(server.output.encode())
        for n in range(options.fuzz):
            data = badDatagram(rng, n, sip, victim.transport.getHost().port)
            fuzzers[n % 4].transport.write(data, sip)
            if n % 200 == 199:
                yield harness.sleep(reactor, 0.05)
        yield harness.sleep(reactor, 2.0)
        fuzzLog = len(server.output.encode()) - logBefore
        report["fuzz_datagrams"] = options.fuzz
        report["fuzz_answers"] = sum(s.total for s in fuzzers)
        report["fuzz_log_bytes_per_1000"] = round(fuzzLog * 1000 / options.fuzz)

        # 1b. invalid IIF commands from a peer server
        peer = IIFCounter()
        ports.append(reactor.listenUDP(fuzzPort, peer, interface="127.0.0.1"))
        # The phones keep no message log here; the server logs each INVITE.
        callsBefore = server.output.count(" INVITE sip:")
        logBefore = len(server.output.encode())
        for n in range(options.iif_fuzz):
            peer.transport.write(badCommand(rng, n), server.iifAddress)
            if n % 200 == 199:
                yield harness.sleep(reactor, 0.05)
        yield harness.sleep(reactor, 2.0)
        iifLog = len(server.output.encode()) - logBefore
        report["iif_fuzz_datagrams"] = options.iif_fuzz
        report["iif_fuzz_answers"] = peer.total
        report["iif_fuzz_calls_placed"] = (
            server.output.count(" INVITE sip:") - callsBefore
        )
        report["iif_fuzz_log_bytes_per_1000"] = (
            round(iifLog * 1000 / options.iif_fuzz) if options.iif_fuzz else None
        )
        iifWrong = peer.ok + abs(peer.total - options.iif_fuzz)

        # 2. flood + legitimate callbacks
        sent = {"flood": 0}
        perTick = max(1, int(options.flood_rate / 100))

        def flood() -> None:
            for _ in range(perTick):
                n = sent["flood"]
                sender = flooders[n % len(flooders)]
                host, port = (
                    sender.transport.getHost().host,
                    sender.transport.getHost().port,
                )
                sender.transport.write(invite(sip, f"{host}:{port}", f"fl{n}"), sip)
                sent["flood"] += 1

        flooding = task.LoopingCall(flood)
        flooding.start(0.01)
        legit = int(options.legit_rate * options.seconds)

        def ask(n: int) -> None:
            client.request(f"L{n}", f"answer{n}", f"answer-{n}", 1)

        for n in range(legit):
            reactor.callLater(n / options.legit_rate, ask, n)
        yield harness.sleep(reactor, options.seconds)
        flooding.stop()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(client.responses) < legit:
            yield harness.sleep(reactor, 0.25)
        served = sum(
            1
            for n in range(legit)
            if client.acks.get(f"L{n}", ("",))[0] == "ok"
            and client.responses.get(f"L{n}", (None,))[0] == 1
        )
        allSockets = fuzzers + flooders + [victim]
        report["flood_datagrams"] = sent["flood"]
        report["flood_answers"] = sum(s.total for s in flooders)
        report["datagrams_sent"] = (
            options.fuzz + options.iif_fuzz + sent["flood"] + legit
        )
        report["wrong_verdicts"] = (
            victim.total
            + sum(1 for s in allSockets for count in s.answers.values() if count > 1)
            + iifWrong
            + report["iif_fuzz_calls_placed"]
        )
        report["tracebacks"] = server.output.count("Traceback")
        report["forged_lines"] = sum(
            1 for line in server.output.splitlines() if "forged line" in line
            and "malformed SIP" not in line
        )  # fmt: skip
        report["legit_requested"] = legit
        report["legit_served_fraction"] = round(served / legit, 4) if legit else None
        report["server_cpu_s"] = round(cpuSeconds(server.pid) - cpu0, 2)
        report["rss_after_kib"] = rssKiB(server.pid)
    finally:
        for port in ports:
            yield port.stopListening()
        yield server.stop()
        yield uas.stop()
        if not options.keep:
            for path in directory.iterdir():
                path.unlink()
            directory.rmdir()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fuzz", type=int, default=5000, help="bad datagrams (5000)")
    parser.add_argument(
        "--iif-fuzz", type=int, default=5000, help="invalid IIF commands (5000)"
    )
    parser.add_argument(
        "--flood-rate", type=float, default=2000, dest="flood_rate",
        help="INVITEs per second during the flood (2000)",
    )  # fmt: skip
    parser.add_argument(
        "--flood-sources", type=int, default=4, dest="flood_sources",
        help="loopback addresses the flood comes from (4)",
    )  # fmt: skip
    parser.add_argument(
        "--legit-rate", type=float, default=10, dest="legit_rate",
        help="legitimate callbacks per second during the flood (10)",
    )  # fmt: skip
    parser.add_argument("--seconds", type=float, default=15, help="flood length (15)")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory")
    options = parser.parse_args(argv)
    if harness.SIPP is None:
        print("sipp is not installed (Debian package sip-tester)", file=sys.stderr)
        return 2

    hardLimit = options.seconds + 60 + options.fuzz / 1000
    result = runBounded(lambda reactor: run(reactor, options), hardLimit, _children)
    if not isinstance(result, dict):
        print(f"benchmark failed: {result}", file=sys.stderr)
        return 1
    for key, value in result.items():
        print(f"{key:28} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
