"""
End-to-end tests of the AS-side client (L{callback_tw.client} and the
C{callback-client} script) against the real server and the SIPp phone farm.

Losses are made by a UDP relay in the test: it holds the AS's peer-server
address, forwards between the client and the server and drops the datagrams
a test names, so the client's retransmission and requery are seen working
against the real server's idempotency.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from callback_tw.client import CallbackClient
from tests.e2e.harness import SIPP, freePort, startCallbackWorld

LOOPBACK = "127.0.0.1"
WORKTREE = Path(__file__).resolve().parents[2]


class _Relay(DatagramProtocol):
    """
    Sits on the AS's peer address between the client and the server; drops
    the first C{n} datagrams that start with each prefix of C{drop}.

    @ivar seen: every datagram as (C{"up"} to the server or C{"down"}, bytes).
    @ivar dropped: the datagrams not forwarded.
    """

    def __init__(self, server: tuple[str, int], drop: dict[bytes, int]) -> None:
        self._server = server
        self._drop = dict(drop)
        self._client: tuple[str, int] | None = None
        self.seen: list[tuple[str, bytes]] = []
        self.dropped: list[bytes] = []

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr == self._server:
            direction, target = "down", self._client
        else:
            direction, target, self._client = "up", self._server, addr
        self.seen.append((direction, data))
        for prefix, count in self._drop.items():
            if count and data.startswith(prefix):
                self._drop[prefix] = count - 1
                self.dropped.append(data)
                return
        if target is not None:
            self.transport.write(data, target)

    def count(self, direction: str, prefix: bytes) -> int:
        return sum(
            1 for d, data in self.seen if d == direction and data.startswith(prefix)
        )


class ClientEndToEndTests(TestCase):
    """
    The client places one callback per REQUEST and gets its RESPONSE, whatever
    UDP loses.
    """

    timeout = 90

    if SIPP is None:
        skip = "sipp is not installed (Debian package sip-tester)"

    @defer.inlineCallbacks
    def startWorld(self) -> Any:
        """
        Start SIPp and the server with one more peer server, C{client}, at a
        port of ours (for the client, the relay or the CLI).
        """
        self.asPort = freePort()
        world = yield startCallbackWorld(
            self, reactor, peers={"client": f"{LOOPBACK}:{self.asPort}"}
        )
        self.uas, self.server = world.uas, world.server
        return world

    def startClient(self, server: tuple[str, int], port: int, **options: Any) -> Any:
        client = CallbackClient(reactor, server, (LOOPBACK, port), **options)
        client.start()
        self.addCleanup(client.stop)
        return client

    def startRelay(self, drop: dict[bytes, int]) -> tuple[_Relay, tuple[str, int]]:
        """
        Start a relay on the AS's peer port; return it and its address.
        """
        relay = _Relay(self.server.iifAddress, drop)
        port = reactor.listenUDP(self.asPort, relay, interface=LOOPBACK)
        self.addCleanup(port.stopListening)
        return relay, (LOOPBACK, self.asPort)

    def assertOneCall(self, *users: str) -> None:
        for user in users:
            calls = self.uas.callsTo(user)
            self.assertEqual(len(calls), 1, f"calls to {user}: {len(calls)}")

    def waitFor(self, predicate: Callable[[], bool], timeout: float = 10.0) -> Any:
        """
        Poll every 50 ms until C{predicate()} is true (the SIPp log is a file).
        """
        deadline = reactor.seconds() + timeout

        @defer.inlineCallbacks
        def poll() -> Any:
            while not predicate():
                if reactor.seconds() > deadline:
                    self.fail(f"not true within {timeout} s: {predicate}")
                yield _sleep(0.05)

        return poll()

    @defer.inlineCallbacks
    def test_requestAckResponse(self) -> Any:
        """
        REQUEST -> ACK ok -> RESPONSE with the talk time of answer1/hangup2
        (user2 hangs up 2 s after answering): 2.
        """
        yield self.startWorld()
        client = self.startClient(self.server.iifAddress, self.asPort)
        pending = client.request("c1", "answer1", "hangup2", 60)
        ok = yield pending.acked
        self.assertIs(ok, True)
        realDuration = yield pending.finished
        self.assertEqual(realDuration, 2)
        self.assertEqual(pending.requeries, 0)
        self.assertOneCall("answer1", "hangup2")

    @defer.inlineCallbacks
    def test_firstRequestLost(self) -> Any:
        """
        The first REQUEST never reaches the server: the client sends it again
        and the callback is placed once.
        """
        yield self.startWorld()
        relay, address = self.startRelay({b"REQUEST": 1})
        client = self.startClient(address, freePort())
        pending = client.request("c2", "answer1", "hangup2", 60)
        self.assertIs((yield pending.acked), True)
        self.assertEqual((yield pending.finished), 2)
        self.assertEqual(relay.dropped, [relay.seen[0][1]])
        self.assertEqual(relay.count("up", b"REQUEST"), 2)
        self.assertOneCall("answer1", "hangup2")

    @defer.inlineCallbacks
    def test_firstAckLost(self) -> Any:
        """
        The first ACK is lost: the server gets the REQUEST twice, answers it
        twice, and still places one call.
        """
        yield self.startWorld()
        relay, address = self.startRelay({b"ACK": 1})
        client = self.startClient(address, freePort())
        pending = client.request("c3", "answer1", "hangup2", 60)
        self.assertIs((yield pending.acked), True)
        self.assertEqual((yield pending.finished), 2)
        self.assertEqual(relay.count("up", b"REQUEST"), 2)
        self.assertEqual(relay.count("down", b"ACK: id=c3;code=ok;"), 2)
        self.assertOneCall("answer1", "hangup2")

    @defer.inlineCallbacks
    def test_responseLost(self) -> Any:
        """
        The RESPONSE is lost: duration (4 s) + margin (4 s) after the ACK the
        client sends the REQUEST again and the server repeats the RESPONSE of
        the ended callback; still one call.
        """
        yield self.startWorld()
        relay, address = self.startRelay({b"RESPONSE": 1})
        # The call ends ~2.2 s after the ACK; the requery comes at 8 s.
        client = self.startClient(address, freePort(), responseMargin=4.0)
        pending = client.request("c4", "answer1", "hangup2", 4)
        self.assertIs((yield pending.acked), True)
        self.assertEqual((yield pending.finished), 2)
        self.assertEqual(pending.requeries, 1)
        self.assertEqual(relay.dropped, [b"RESPONSE: id=c4;real_duration=2;"])
        self.assertEqual(relay.count("up", b"REQUEST"), 2)
        self.assertOneCall("answer1", "hangup2")

    @defer.inlineCallbacks
    def test_cancel(self) -> Any:
        """
        CANCEL of a running callback: ACK ok, then the RESPONSE.
        """
        yield self.startWorld()
        client = self.startClient(self.server.iifAddress, self.asPort)
        pending = client.request("c5", "answer1", "answer2", 60)
        self.assertIs((yield pending.acked), True)
        yield self.waitFor(lambda: len(self.uas.callsTo("answer2")) == 1)
        self.assertIs((yield client.cancel("c5")), True)
        realDuration = yield pending.finished
        self.assertIsInstance(realDuration, int)
        yield self.waitFor(
            lambda: any(m.method == "BYE" for m in self.uas.callsTo("answer2")[0])
        )
        self.assertIs((yield client.cancel("c5")), False)

    @defer.inlineCallbacks
    def test_commandLine(self) -> Any:
        """
        C{callback-client request} as a subprocess prints the ACK and the
        RESPONSE and exits 0; with --json, one object per event.
        """
        yield self.startWorld()
        host, port = self.server.iifAddress
        argv = [
            "-c",
            "from callback_tw.cli.client import main; main()",
            "request",
            "--server",
            f"{host}:{port}",
            "--bind",
            f"{LOOPBACK}:{self.asPort}",
            "--id",
            "cli1",
            "--user1",
            "answer1",
            "--user2",
            "hangup2",
            "--duration",
            "60",
            "--timeout",
            "30",
        ]
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, argv, path=str(WORKTREE)
        )
        self.assertEqual(
            (out.decode(), code),
            ("ACK id=cli1 code=ok\nRESPONSE id=cli1 real_duration=2\n", 0),
            err.decode(),
        )
        for old, new in (
            ("cli1", "cli2"),
            ("answer1", "answer5"),
            ("hangup2", "hangup2b"),
        ):
            argv[argv.index(old)] = new
        out, err, code = yield getProcessOutputAndValue(
            sys.executable, argv + ["--json"], path=str(WORKTREE)
        )
        events = [json.loads(line) for line in out.decode().splitlines()]
        self.assertEqual(code, 0, err.decode())
        self.assertEqual(
            [(e["event"], e.get("code"), e.get("real_duration")) for e in events],
            [("ack", "ok", None), ("response", None, 2)],
        )
        self.assertOneCall("answer1", "hangup2", "answer5", "hangup2b")


def _sleep(seconds: float) -> defer.Deferred[None]:
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d
