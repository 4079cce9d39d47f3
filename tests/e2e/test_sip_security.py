"""
End-to-end: the real server (C{twistd -n callback}) against a hostile SIP
sender on loopback (see docs/sip-security.md). Other loopback addresses
(127.0.0.2, 127.0.0.3) stand for other hosts; the SIPp phones and the AS are
on 127.0.0.1.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import TestCase

from tests.e2e import harness
from tests.e2e.harness import sleep, startCallbackWorld

FORGED = "\r\n2026-11-29T20:00:00+0000 [stdout#info] admin logged in\r\n"


class _Socket(DatagramProtocol):
    """A UDP socket on one loopback address that counts what it receives."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.received: list[str] = []
        self.port: Any = None

    def start(self, testCase: TestCase) -> _Socket:
        self.port = reactor.listenUDP(0, self, interface=self.host)
        testCase.addCleanup(self.port.stopListening)
        return self

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port.getHost().port)

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data.decode("utf-8", "replace"))


def request(method: str, target: tuple[str, int], via: str, n: int) -> bytes:
    return (
        f"{method} sip:cb@{target[0]}:{target[1]} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {via};branch=z9hG4bK-e2e-{n}\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:x@127.0.0.9>;tag=f{n}\r\n"
        f"To: <sip:cb@{target[0]}>\r\n"
        f"Call-ID: e2e-{method}-{n}@127.0.0.9\r\n"
        f"CSeq: 1 {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class SipSecurityEndToEndTests(TestCase):
    timeout = 90

    if harness.SIPP is None:
        skip = "sipp is not installed (Debian package sip-tester)"

    @defer.inlineCallbacks
    def test_reflection(self) -> Any:
        """
        An INVITE from 127.0.0.2 whose Via names the server itself with
        C{received}/C{rport} of a socket on 127.0.0.3: one 403 at the sender,
        nothing at 127.0.0.3, not even in the 4 s sippy used to retransmit.
        """
        world = yield startCallbackWorld(self, reactor)
        sip = ("127.0.0.1", world.server.sipPort)
        attacker = _Socket("127.0.0.2").start(self)
        victim = _Socket("127.0.0.3").start(self)
        via = f"{sip[0]}:{sip[1]};received={victim.host};rport={victim.address[1]}"
        attacker.port.write(request("INVITE", sip, via, 1), sip)
        yield sleep(reactor, 4)
        self.assertEqual(victim.received, [])
        self.assertEqual(
            [text.split("\r\n")[0] for text in attacker.received],
            ["SIP/2.0 403 Forbidden"],
        )

    @defer.inlineCallbacks
    def test_floodGarbageAndACall(self) -> Any:
        """
        127.0.0.1 (where the phones are) floods 100 OPTIONS: at most about
        50 are answered and the address is then ignored; 127.0.0.3 sends 30
        malformed messages carrying a forged log line: one escaped warning,
        no traceback. A callback placed right after still runs to its
        RESPONSE: the phones' answers and BYE, from the ignored address,
        belong to our calls.
        """
        world = yield startCallbackWorld(self, reactor, trace=False)
        sip = ("127.0.0.1", world.server.sipPort)
        flooder = _Socket("127.0.0.1").start(self)
        for n in range(100):
            flooder.port.write(request("OPTIONS", sip, f"127.0.0.1:{n + 1}", n), sip)
        garbage = _Socket("127.0.0.3").start(self)
        for n in range(30):
            garbage.port.write(
                f"INVITE x{n}{FORGED}\x1b[31mred\x00".encode() + b"y" * 200, sip
            )
        yield sleep(reactor, 1.5)
        answered = len(flooder.received)
        self.assertGreaterEqual(answered, 25)
        self.assertLessEqual(answered, 55)
        flooder.port.write(request("OPTIONS", sip, "127.0.0.1:1", 999), sip)

        world.client.request("sec1", "answer1", "hangup2")
        code = yield world.client.expectAck("sec1")
        self.assertEqual(code, "ok")
        realDuration, _ = yield world.client.expectResponse("sec1", timeout=20)
        self.assertEqual(realDuration, 2)
        self.assertEqual(len(flooder.received), answered)

        output = world.server.output
        malformed = world.server.logLines("malformed SIP INVITE from 127.0.0.3")
        self.assertEqual(len(malformed), 1, output[-3000:])
        self.assertLessEqual(len(malformed[0]), 260)
        self.assertNotIn("Traceback", output)
        forged = world.server.logLines("admin logged in")
        self.assertEqual([line for line in forged if "malformed SIP" not in line], [])
        self.assertNotIn("\x1b", output)
