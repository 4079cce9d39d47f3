"""
The SIP security rules on real loopback sockets (trial's reactor): where
answers go, how large a datagram is read, how a user part is written in the
Request-URI. See docs/sip-security.md.
"""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from callback_tw.sip import adapter
from callback_tw.sip.adapter.transport import MAX_DATAGRAM
from callback_tw.sip.sdp import SdpSession
from callback_tw.sip.stack import SipStack
from tests.siphelpers import FAR_ROUTE, RecordingListener, startStack


class _Collect(DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[str] = []
        self.queue: defer.DeferredQueue = defer.DeferredQueue()

    def datagramReceived(self, data, addr):
        self.received.append(data.decode())
        self.queue.put(data.decode())


def _request(method: str, stackPort: int, via: str, extra: str = "") -> bytes:
    return (
        f"{method} sip:cb@127.0.0.1:{stackPort} SIP/2.0\r\n"
        f"{extra}"
        f"Via: SIP/2.0/UDP {via};branch=z9hG4bK-{method}-w\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:x@127.0.0.1>;tag=t1\r\n"
        f"To: <sip:cb@127.0.0.1:{stackPort}>\r\n"
        f"Call-ID: {method}-wire@127.0.0.1\r\n"
        f"CSeq: 1 {method}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class WireTests(TestCase):
    """A real stack and two real client sockets on loopback."""

    def setUp(self) -> None:
        previous = adapter.useReactor(reactor)
        self.addCleanup(adapter.useReactor, previous)
        self.stack = SipStack("127.0.0.1", 0, reactor=reactor)
        self.stack.startService()
        self.addCleanup(self.stack.stopService)
        self.attacker = _Collect()
        self.victim = _Collect()
        attackerPort = reactor.listenUDP(0, self.attacker, interface="127.0.0.1")
        victimPort = reactor.listenUDP(0, self.victim, interface="127.0.0.1")
        self.addCleanup(attackerPort.stopListening)
        self.addCleanup(victimPort.stopListening)
        self.attackerPort = attackerPort
        self.victimAddress = victimPort.getHost().port

    @defer.inlineCallbacks
    def test_reflection(self) -> None:
        """
        An INVITE whose Via says our own address with C{received} and
        C{rport} of another loopback socket: its one 403 arrives at the
        socket that sent it; the other socket receives nothing, not even
        after the 0.5 s and 1.5 s when sippy retransmitted.
        """
        via = (
            f"127.0.0.1:{self.stack.port};received=127.0.0.1"
            f";rport={self.victimAddress}"
        )
        self.attackerPort.write(
            _request("INVITE", self.stack.port, via), ("127.0.0.1", self.stack.port)
        )
        answer = yield self.attacker.queue.get()
        self.assertTrue(answer.startswith("SIP/2.0 403 Forbidden"), answer)
        yield deferLater(reactor, 1.7, lambda: None)
        self.assertEqual(self.victim.received, [])
        self.assertEqual(len(self.attacker.received), 1)

    @defer.inlineCallbacks
    def test_largeDatagram(self) -> None:
        """
        An OPTIONS of 40 000 bytes (a long header first, so that what
        follows 8 192 bytes matters) is read whole and answered 200.
        """
        pad = "X-Pad: " + "a" * 40000 + "\r\n"
        data = _request(
            "OPTIONS",
            self.stack.port,
            f"127.0.0.1:{self.attackerPort.getHost().port}",
            extra=pad,
        )
        self.assertGreater(len(data), 40000)
        self.assertLessEqual(len(data), MAX_DATAGRAM)
        self.attackerPort.write(data, ("127.0.0.1", self.stack.port))
        answer = yield self.attacker.queue.get()
        self.assertTrue(answer.startswith("SIP/2.0 200 OK"), answer[:80])


class RequestUriTests(SynchronousTestCase):
    def test_hashEscaped(self) -> None:
        """
        A user with C{#} (a supplementary-service code) is written with
        C{%23} in the Request-URI and To of the INVITE on the wire;
        characters RFC 3261 lets stand (C{*}, C{+}) stay as they are.
        """
        clock, stack = startStack(self)
        offer = SdpSession("127.0.0.1").offer("127.0.0.1", 40000)
        stack.dial("*21*0049301234#", FAR_ROUTE, offer, RecordingListener(), 60)
        (invite,) = clock.sent
        self.assertEqual(
            invite.firstLine, "INVITE sip:*21*0049301234%23@127.0.0.1:5099 SIP/2.0"
        )
        self.assertIn("<sip:*21*0049301234%23@127.0.0.1>", invite.header("to"))
        self.assertNotIn("#", invite.data.split("\r\n\r\n")[0])

    def test_readsWholeDatagrams(self) -> None:
        """The SIP port is opened to read datagrams of up to 65 535 bytes."""
        clock, stack = startStack(self)
        self.assertEqual([p.maxPacketSize for p in clock.ports], [65535])
