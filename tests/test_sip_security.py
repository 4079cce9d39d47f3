"""
Tests for the rules that keep the SIP side from being used as a weapon
(L{callback_tw.sip.guard}, the stateless answers of the transaction manager
in L{callback_tw.sip.adapter.transactions}, L{callback_tw.sip.stack}): seen
on the wire, through a real L{SipStack} on a fake reactor.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from callback_tw.sip.guard import (
    FailureLimiter,
    SourceLimiter,
    isScanner,
    printable,
)
from tests.siphelpers import FAR_ROUTE, FarEnd, RecordingListener, farSdp, startStack

ATTACKER = ("127.0.0.1", 5099)
VICTIM = ("127.0.0.1", 7777)


def request(
    method: str,
    port: int,
    via: str = "127.0.0.1:5099",
    n: int = 1,
    toTag: str = "",
    userAgent: str = "",
    callId: str = "",
) -> str:
    """An out-of-dialog request to the stack on C{port}."""
    lines = [
        f"{method} sip:cb@127.0.0.1:{port} SIP/2.0",
        f"Via: SIP/2.0/UDP {via};branch=z9hG4bK-{method}-{n}",
        "Max-Forwards: 70",
        f"From: <sip:x@127.0.0.1:5099>;tag=t{n}",
        f"To: <sip:cb@127.0.0.1>{';tag=' + toTag if toTag else ''}",
        f"Call-ID: {callId or f'{method}-{n}@127.0.0.1'}",
        f"CSeq: 1 {method}",
        "Contact: <sip:x@127.0.0.1:5099>",
    ]
    if userAgent:
        lines.append(f"User-Agent: {userAgent}")
    lines.append("Content-Length: 0")
    return "\r\n".join(lines) + "\r\n\r\n"


class ReflectionTests(SynchronousTestCase):
    """Answers go to the packet's real source, whatever its Via says."""

    def setUp(self) -> None:
        self.clock, self.stack = startStack(self)

    def test_receivedInVia(self) -> None:
        """
        An INVITE whose Via names our own address with C{received} and
        C{rport} of another socket gets its 403 at the socket it came from;
        nothing goes to the other one.
        """
        via = f"127.0.0.1:{self.stack.port};received=127.0.0.2;rport={VICTIM[1]}"
        self.clock.deliver(request("INVITE", self.stack.port, via=via), ATTACKER)
        self.clock.settle()
        sent = self.clock.sent
        self.assertEqual(
            [(s.firstLine, s.addr) for s in sent], [("SIP/2.0 403 Forbidden", ATTACKER)]
        )

    def test_viaPort(self) -> None:
        """A Via naming another port, no rport: the answer goes to the source."""
        self.clock.deliver(
            request("OPTIONS", self.stack.port, via=f"127.0.0.1:{VICTIM[1]}"),
            ATTACKER,
        )
        self.assertEqual([s.addr for s in self.clock.sent], [ATTACKER])

    def test_cancel(self) -> None:
        """A CANCEL for nothing of ours: one 481, to the source."""
        via = f"127.0.0.2:{VICTIM[1]}"
        self.clock.deliver(request("CANCEL", self.stack.port, via=via), ATTACKER)
        self.assertEqual(
            [(s.firstLine, s.addr) for s in self.clock.sent],
            [("SIP/2.0 481 Call/Transaction Does Not Exist", ATTACKER)],
        )

    def test_inDialogReceivedReplaced(self) -> None:
        """
        A request in one of our dialogs whose Via carries a C{received}
        that is not its source: the answer goes to the real source host.
        """
        listener = RecordingListener()
        from callback_tw.sip.sdp import SdpSession

        offer = SdpSession("127.0.0.1").offer("127.0.0.1", 40000)
        self.stack.dial("100", FAR_ROUTE, offer, listener, 60, "t/leg1")
        invite = self.clock.sent[0].data
        far = FarEnd()
        self.clock.deliver(far.response(invite, 200, "OK", farSdp()))
        self.clock.settle()
        bye = far.inDialog("BYE", invite, 5, f"sip:1000@127.0.0.1:{self.stack.port}")
        bye = bye.replace(";branch=", ";received=127.0.0.9;branch=", 1)
        before = len(self.clock.sent)
        self.clock.deliver(bye)
        self.clock.settle()
        answers = [
            s for s in self.clock.sent[before:] if s.firstLine.startswith("SIP/")
        ]
        self.assertEqual(
            [(s.firstLine, s.addr) for s in answers],
            [("SIP/2.0 200 OK", ("127.0.0.1", 5099))],
        )


class StatelessTests(SynchronousTestCase):
    """Requests that start nothing get one answer each, never retransmitted."""

    def setUp(self) -> None:
        self.clock, self.stack = startStack(self)

    def test_inviteOnce(self) -> None:
        """
        A refused INVITE gets exactly one 403 and no retransmission over
        the 64 s sippy would retransmit it for; no timer stays behind.
        """
        self.clock.deliver(request("INVITE", self.stack.port))
        self.clock.advance(0)
        for _ in range(70):
            self.clock.advance(1)
        self.assertEqual(
            [s.firstLine for s in self.clock.sent], ["SIP/2.0 403 Forbidden"]
        )
        self.assertEqual(self.stack.transactionManager.tserver, {})

    def test_oneAnswerPerRequest(self) -> None:
        """The same INVITE received three times: three 403, no more."""
        data = request("INVITE", self.stack.port)
        for _ in range(3):
            self.clock.deliver(data)
        for _ in range(40):
            self.clock.advance(1)
        self.assertEqual(len(self.clock.sent), 3)

    def test_policy(self) -> None:
        """Each kind of request nobody asked for: its one stateless answer."""
        cases = [
            ("INVITE", "", "SIP/2.0 403 Forbidden"),
            ("FOO", "", "SIP/2.0 403 Forbidden"),
            ("REGISTER", "", "SIP/2.0 403 Forbidden"),
            ("BYE", "zz", "SIP/2.0 481 Call/Transaction Does Not Exist"),
        ]
        for n, (method, tag, expected) in enumerate(cases):
            before = len(self.clock.sent)
            self.clock.deliver(request(method, self.stack.port, n=n, toTag=tag))
            self.clock.advance(40)
            (answer,) = self.clock.sent[before:]
            self.assertEqual(answer.firstLine, expected)
            self.assertIn(";tag=", answer.header("to"))

    def test_ackIgnored(self) -> None:
        """An ACK for nothing of ours: no answer."""
        self.clock.deliver(request("ACK", self.stack.port, toTag="zz"))
        self.assertEqual(self.clock.sent, [])

    def test_scanner(self) -> None:
        """A request from a known scanner gets no answer at all."""
        for n, agent in enumerate(["friendly-scanner", "sipvicious 0.3"]):
            self.clock.deliver(
                request("OPTIONS", self.stack.port, n=n, userAgent=agent)
            )
        self.clock.deliver(
            request("OPTIONS", self.stack.port, n=9, userAgent="Linphone/5")
        )
        self.assertEqual([s.firstLine for s in self.clock.sent], ["SIP/2.0 200 OK"])


class PerSourceLimitTests(SynchronousTestCase):
    """C{[sip] max_requests_per_source} and C{block_time} on the wire."""

    def setUp(self) -> None:
        self.clock, self.stack = startStack(self, maxRequestsPerSource=5, blockTime=30)

    def send(self, n: int, source=ATTACKER, method: str = "OPTIONS") -> int:
        before = len(self.clock.sent)
        for i in range(n):
            self.clock.deliver(
                request(method, self.stack.port, n=self.clock.seconds() * 1000 + i),
                source,
            )
        return len(self.clock.sent) - before

    def test_blocked(self) -> None:
        """
        Beyond 5 requests in a second a source is ignored for 30 s (one
        warning says so), then served again; another source is served
        meanwhile.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.assertEqual(self.send(20), 5)
        warnings = [formatEvent(e) for e in events if e["log_level"] >= LogLevel.warn]
        self.assertEqual(
            warnings,
            [
                "SIP from 127.0.0.1 ignored for 30 s: more than 5 requests"
                " outside our calls in a second"
            ],
        )
        self.clock.advance(1)
        self.assertEqual(self.send(1), 0)
        self.assertEqual(self.send(1, source=("127.0.0.3", 5099)), 1)
        self.clock.advance(29.5)
        self.assertEqual(self.send(2), 2)

    def test_underTheLimit(self) -> None:
        """5 requests every second for a minute: every one answered."""
        for _ in range(60):
            self.assertEqual(self.send(5), 5)
            self.clock.advance(1)

    def test_dialogNeverLimited(self) -> None:
        """
        While its source is blocked, the far end of one of our calls still
        gets its BYE answered, and the call ends.
        """
        from callback_tw.sip.sdp import SdpSession

        listener = RecordingListener()
        offer = SdpSession("127.0.0.1").offer("127.0.0.1", 40000)
        self.stack.dial("100", FAR_ROUTE, offer, listener, 60, "t/leg1")
        invite = self.clock.sent[0].data
        far = FarEnd()
        self.clock.deliver(far.response(invite, 200, "OK", farSdp()))
        self.clock.settle()
        self.send(50)
        self.assertEqual(self.send(1), 0)
        before = len(self.clock.sent)
        self.clock.deliver(
            far.inDialog("BYE", invite, 5, f"sip:1000@127.0.0.1:{self.stack.port}")
        )
        self.clock.settle()
        self.assertEqual(
            [s.firstLine for s in self.clock.sent[before:]], ["SIP/2.0 200 OK"]
        )
        self.assertEqual(listener.events[-1][0], "ended")

    def test_memoryBounded(self) -> None:
        """The limiter remembers a fixed number of sources."""
        limiter = SourceLimiter(5, 30, Clock(), maxSources=100)
        for i in range(1000):
            limiter.admit(f"10.0.{i // 256}.{i % 256}")
        self.assertEqual(len(limiter), 100)


class GuardUnitTests(SynchronousTestCase):
    """The pieces of L{callback_tw.sip.guard}."""

    def test_printable(self) -> None:
        """Control characters escaped, long text cut, one line always."""
        self.assertEqual(printable("a\r\nb\x00\\"), "a\\r\\nb\\x00\\\\")
        text = printable("x\n" * 500, 50)
        self.assertEqual(len(text), 50)
        self.assertNotIn("\n", text)
        self.assertEqual(printable("caf\u00e9 \u202e"), "caf\\xe9 \\u202e")

    def test_isScanner(self) -> None:
        """Known scanner names, in any case; a phone is not one."""
        self.assertTrue(isScanner("Friendly-Scanner"))
        self.assertTrue(isScanner("sipcli/v1.8"))
        self.assertFalse(isScanner("Yealink SIP-T46S"))
        self.assertFalse(isScanner(None))

    def test_failureLimiter(self) -> None:
        """5 failures in 60 s lock for 300 s; spread-out failures do not."""
        clock = Clock()
        limiter = FailureLimiter(clock)
        for _ in range(4):
            limiter.failed("u")
            clock.advance(20)
        self.assertFalse(limiter.locked("u"))
        for _ in range(4):
            limiter.failed("v")
        self.assertTrue(limiter.failed("v"))
        self.assertTrue(limiter.locked("v"))
        clock.advance(299)
        self.assertTrue(limiter.locked("v"))
        clock.advance(1)
        self.assertFalse(limiter.locked("v"))
