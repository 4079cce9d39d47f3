"""
Tests for L{callback_tw.sip.adapter}: sippy's timers and UDP on the Twisted
reactor.
"""

from __future__ import annotations

import errno
import sys
import threading

from sippy.Time.MonoTime import MonoTime
from sippy.Time.Timeout import Timeout, TimeoutAbsMono, TimeoutInact
from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from callback_tw.sip import adapter
from callback_tw.sip.sdp import SdpSession
from callback_tw.sip.stack import SipStack
from tests.siphelpers import (
    FAR_ROUTE,
    FakeSipReactor,
    RecordingListener,
    runUntil,
    startStack,
    useFakeReactor,
)


class DispatcherInstallTests(SynchronousTestCase):
    def test_standInInstalled(self) -> None:
        """
        sippy's event dispatcher module is our stand-in, so sippy's own
        loop (and its SIGURG handling and thread) never exists.
        """
        module = sys.modules["sippy.Core.EventDispatcher"]
        self.assertIs(module.ED2, adapter.ED2)
        import sippy.Time.Timeout as timeoutModule

        self.assertIs(timeoutModule.ED2, adapter.ED2)

    def test_loopRefuses(self) -> None:
        """Running sippy's own loop is an error, not a silent second loop."""
        self.assertRaises(RuntimeError, adapter.ED2.loop)


class TimerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = useFakeReactor(self)
        self.calls: list[tuple[float, object]] = []

    def record(self, *args: object) -> None:
        self.calls.append((self.clock.seconds(), args))

    def test_oneShot(self) -> None:
        """A Timeout fires once, after its interval, with its parameters."""
        Timeout(self.record, 1.5, 1, "a", "b")
        self.clock.advance(1.4)
        self.assertEqual(self.calls, [])
        self.clock.advance(0.1)
        self.assertEqual(self.calls, [(1.5, ("a", "b"))])
        self.clock.advance(10)
        self.assertEqual(len(self.calls), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancelled(self) -> None:
        """A cancelled timer never fires and leaves nothing scheduled."""
        timer = Timeout(self.record, 1.0)
        timer.cancel()
        timer.cancel()  # twice is harmless, as in sippy
        self.clock.advance(5)
        self.assertEqual(self.calls, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(adapter.ED2.armedTimers(), [])

    def test_periodicForever(self) -> None:
        """
        nticks=-1 repeats until cancelled, re-armed from the previous
        deadline so a late reactor does not make it drift.
        """
        timer = Timeout(self.record, 1.0, -1)
        self.clock.advance(1.3)  # late by 0.3
        self.clock.advance(0.7)  # next deadline is 2.0, not 2.3
        self.clock.advance(1.0)
        self.assertEqual([t for t, _ in self.calls], [1.3, 2.0, 3.0])
        timer.cancel()
        self.clock.advance(10)
        self.assertEqual(len(self.calls), 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_periodicNTimes(self) -> None:
        """nticks=3 runs three times, then stops by itself."""
        Timeout(self.record, 0.5, 3)
        for _ in range(10):
            self.clock.advance(0.5)
        self.assertEqual([t for t, _ in self.calls], [0.5, 1.0, 1.5])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_inactiveUntilGo(self) -> None:
        """TimeoutInact creates a timer that runs only once go() is called."""
        timer = TimeoutInact(self.record, 1.0)
        self.clock.advance(2)
        self.assertEqual(self.calls, [])
        timer.go()
        self.clock.advance(1)
        self.assertEqual(len(self.calls), 1)

    def test_absoluteDeadline(self) -> None:
        """TimeoutAbsMono fires at a MonoTime deadline; etime is that MonoTime."""
        deadline = MonoTime().getOffsetCopy(2.0)
        timer = TimeoutAbsMono(self.record, deadline, "x")
        self.assertIs(timer.etime, deadline)
        self.clock.advance(1.9)
        self.assertEqual(self.calls, [])
        self.clock.advance(0.2)
        self.assertEqual([a for _, a in self.calls], [("x",)])

    def test_withTimestamp(self) -> None:
        """cb_with_ts passes a MonoTime first, as ED2 does."""
        seen = []
        timer = Timeout(lambda ts, x: seen.append((ts, x)), 1.0, 1, "p")
        timer.cb_with_ts = True
        self.clock.advance(1)
        self.assertIsInstance(seen[0][0], MonoTime)
        self.assertEqual(seen[0][1], "p")

    def test_errorLogged(self) -> None:
        """An exception in a sippy timer is logged, not printed and lost."""

        def boom() -> None:
            raise ZeroDivisionError()

        Timeout(boom, 1.0)
        self.clock.advance(1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_oneReactorCall(self) -> None:
        """
        However many sippy timers are armed, the reactor holds one call, for
        the earliest; each fires at its own time, in deadline order.
        """
        for delay in (3.0, 0.5, 32.0, 0.5, 2.0):
            Timeout(self.record, delay, 1, delay)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(self.clock.getDelayedCalls()[0].getTime(), 0.5)
        for _ in range(40):
            self.clock.advance(0.25)
        self.assertEqual(
            self.calls,
            [(0.5, (0.5,)), (0.5, (0.5,)), (2.0, (2.0,)), (3.0, (3.0,))],
        )
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_cancelEarliest(self) -> None:
        """
        Cancelling the earliest timer does not fire it, and the later ones
        still fire on time; cancelling the last leaves the reactor nothing.
        """
        first = Timeout(self.record, 1.0, 1, "first")
        Timeout(self.record, 2.0, 1, "second")
        last = Timeout(self.record, 3.0, 1, "third")
        first.cancel()
        self.clock.advance(1.0)
        self.clock.advance(1.0)
        self.assertEqual(self.calls, [(2.0, ("second",))])
        last.cancel()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_manyCancelled(self) -> None:
        """
        Thousands of timers armed and cancelled (a transaction's timers once
        its answer came) leave nothing behind, and one still armed fires.
        """
        keep = Timeout(self.record, 5.0, 1, "kept")
        for i in range(5000):
            Timeout(self.record, 0.5 + i % 7, 1).cancel()
        self.assertLess(len(adapter.ED2._heap._entries), 200)
        self.clock.advance(5)
        self.assertEqual(self.calls, [(5.0, ("kept",))])
        self.assertFalse(keep.active)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_armedByTimer(self) -> None:
        """
        A timer armed by a timer's callback with no delay runs after it,
        even when other timers were due at the same time: none is lost.
        """

        def rearm() -> None:
            self.record("rearm")
            Timeout(self.record, 0, 1, "next")

        Timeout(rearm, 1.0)
        Timeout(self.record, 1.0, 1, "same time")
        self.clock.advance(1.0)
        self.assertEqual(
            self.calls,
            [(1.0, ("rearm",)), (1.0, ("same time",)), (1.0, ("next",))],
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_etime(self) -> None:
        """etime is when the timer fires, as a MonoTime."""
        timer = Timeout(self.record, 2.0)
        expected = MonoTime().getOffsetCopy(2.0)
        self.assertLess(abs(timer.etime.monot - expected.monot), 0.05)

    def test_cancelAll(self) -> None:
        """cancelAll disarms every timer sippy left armed (used at shutdown)."""
        Timeout(self.record, 1.0)
        Timeout(self.record, 2.0, -1)
        self.assertEqual(adapter.ED2.cancelAll(), 2)
        self.clock.advance(10)
        self.assertEqual(self.calls, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class RetransmissionTests(SynchronousTestCase):
    """
    sippy's transaction timers driven by a Clock, through the stack and a
    leg, with nothing answering.
    """

    def setUp(self) -> None:
        self.clock, self.stack = startStack(self)
        self.listener = RecordingListener()

    def dial(self, timeout: float = 120):
        offer = SdpSession("127.0.0.1").offer("127.0.0.1", 40000)
        return self.stack.dial(
            "100", FAR_ROUTE, offer, self.listener, timeout, "t/leg1"
        )

    def test_timerAandB(self) -> None:
        """
        An unanswered INVITE is retransmitted at 0.5, 1.5, 3.5, 7.5, 15.5 and
        31.5 s (Timer A doubling), and at 32 s (Timer B) the leg ends with 408.
        """
        self.dial()
        runUntil(self.clock, 40)
        invites = [s.time for s in self.clock.sent if s.method == "INVITE"]
        self.assertEqual(
            [round(t, 1) for t in invites], [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
        )
        self.assertEqual([e.code for e in self.listener.ends], [408])

    def test_timerEcapped(self) -> None:
        """
        A BYE nobody answers is retransmitted with the interval doubling up
        to T2 = 4 s and no further (RFC 3261 Timer E), until Timer F.
        """
        from tests.siphelpers import FarEnd, farSdp

        far = FarEnd()
        leg = self.dial()
        invite = self.clock.sent[0].data
        self.clock.deliver(far.response(invite, 200, "OK", farSdp()))
        self.clock.settle()
        self.assertEqual(leg.state, "answered")
        start = self.clock.seconds()
        leg.hangUp()
        runUntil(self.clock, start + 40)
        byes = [round(s.time - start, 1) for s in self.clock.sent if s.method == "BYE"]
        self.assertEqual(
            byes, [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
        )

    def test_noAnswerCancels(self) -> None:
        """
        A ringing leg not answered within its timeout is CANCELled, and the
        leg ends as "no answer" (408).
        """
        from tests.siphelpers import FarEnd

        far = FarEnd()
        leg = self.dial(timeout=5)
        invite = self.clock.sent[0].data
        self.clock.deliver(far.response(invite, 180, "Ringing"))
        self.clock.settle()
        self.assertEqual(leg.state, "ringing")
        self.clock.advance(4.9)
        self.assertNotIn("CANCEL", [s.method for s in self.clock.sent])
        self.clock.advance(0.1)
        self.clock.settle()
        cancels = [s for s in self.clock.sent if s.method == "CANCEL"]
        self.assertEqual(len(cancels), 1)
        self.assertEqual(cancels[0].header("call-id"), leg.callId)
        self.assertEqual(
            [(e.code, e.answered) for e in self.listener.ends], [(408, False)]
        )


class RetransmitCacheTests(SynchronousTestCase):
    """
    Retransmissions answered from the transaction manager's cache: the same
    bytes as the first answer, to the same address, for 64*T1 = 32 s (RFC
    3261 13.2.2.4, 17.2.2).
    """

    def setUp(self) -> None:
        from tests.siphelpers import FarEnd

        self.clock, self.stack = startStack(self)
        self.listener = RecordingListener()
        self.far = FarEnd()
        offer = SdpSession("127.0.0.1").offer("127.0.0.1", 40000)
        self.leg = self.stack.dial("100", FAR_ROUTE, offer, self.listener, 60, "t/leg1")
        self.invite = self.clock.sent[0].data

    def sentSince(self, count: int) -> list:
        return [(s.data, s.addr) for s in self.clock.sent[count:]]

    def test_2xxRetransmissionAcked(self) -> None:
        """
        A 200 to our INVITE retransmitted up to 32 s after the first gets
        the very ACK sent for the first, and nothing reaches the leg again;
        once no retransmission may come any more, a late copy is dropped.
        """
        from tests.siphelpers import farSdp

        ok = self.far.response(self.invite, 200, "OK", farSdp())
        start = self.clock.seconds()
        self.clock.deliver(ok)
        self.clock.settle()
        (ack,) = [(s.data, s.addr) for s in self.clock.sent if s.method == "ACK"]
        events = list(self.listener.events)
        for at in (0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5, 32.0):
            runUntil(self.clock, start + at)
            count = len(self.clock.sent)
            self.clock.deliver(ok)
            self.clock.settle()
            self.assertEqual(self.sentSince(count), [ack], f"at {at} s")
        self.assertEqual(self.listener.events, events)
        runUntil(self.clock, start + 36.5)
        count = len(self.clock.sent)
        self.clock.deliver(ok)
        self.clock.settle()
        self.assertEqual(self.sentSince(count), [])
        self.assertEqual(self.listener.events, events)

    def test_requestRetransmissionAnswered(self) -> None:
        """
        The far end's BYE retransmitted up to 32 s after the first gets the
        very 200 sent for the first, though the leg has ended.
        """
        from tests.siphelpers import farSdp

        self.clock.deliver(self.far.response(self.invite, 200, "OK", farSdp()))
        self.clock.settle()
        target = f"sip:1000@127.0.0.1:{self.stack.port}"
        bye = self.far.inDialog("BYE", self.invite, 1, target)
        start = self.clock.seconds()
        count = len(self.clock.sent)
        self.clock.deliver(bye)
        self.clock.settle()
        (answer,) = self.sentSince(count)
        self.assertTrue(answer[0].startswith("SIP/2.0 200 OK"))
        self.assertEqual(len(self.listener.ends), 1)
        for at in (0.5, 4.5, 16.5, 31.9):
            runUntil(self.clock, start + at)
            count = len(self.clock.sent)
            self.clock.deliver(bye)
            self.clock.settle()
            self.assertEqual(self.sentSince(count), [answer], f"at {at} s")
        self.assertEqual(len(self.listener.ends), 1)

    def test_cacheEntries(self) -> None:
        """
        The cache gives back the text and address it was given, whatever
        the characters, for 32 to 36 s of its 4-s steps; an entry without
        text is one to ignore.
        """
        from sippy.SipTransactionManager import SipTMRetransmitO

        from callback_tw.sip.adapter.transactions import RetransmitCache

        cache = RetransmitCache()
        server = object()
        text = 'BYE sip:x SIP/2.0\r\nFrom: "Zoë 日本" <sip:1@h>\r\n\r\n'
        cache[b"k1"] = SipTMRetransmitO(server, text, ("10.0.0.1", 5060))
        cache[b"k2"] = SipTMRetransmitO()
        entry = cache.get(b"k1")
        self.assertEqual(
            (entry.userv, entry.data, entry.address), (server, text, ("10.0.0.1", 5060))
        )
        self.assertIsNone(cache.get(b"k2").data)
        cache[b"k4"] = SipTMRetransmitO(server, "x" * 40, ("10.0.0.1", 5060))
        self.assertEqual(cache.get(b"k4").data, "x" * 40)
        self.assertIs(cache.get(b"k4").address, entry.address)
        self.assertIsNone(cache.get(b"k3"))
        for _ in range(8):  # 32 s
            cache.rotate()
        self.assertEqual(cache.get(b"k1").data, text)
        cache.rotate()  # 36 s
        self.assertEqual(
            (cache.get(b"k1"), cache.get(b"k2"), len(cache)), (None,) * 2 + (0,)
        )

    def test_consumers(self) -> None:
        """
        The dialogs taking a Call-ID's requests are registered and removed
        as in sippy: a removal keeps the others, an unknown one raises and
        keeps them all, the last one removed leaves no entry.
        """
        tm = self.stack._tm
        first, second = object(), object()
        tm.regConsumer(first, "cid-1")
        tm.regConsumer(second, "cid-1", compact=True)
        self.assertEqual(
            [(c.cobj, c.compact) for c in tm.req_consumers["cid-1"]],
            [(first, False), (second, True)],
        )
        tm.unregConsumer(first, "cid-1")
        self.assertRaises(IndexError, tm.unregConsumer, first, "cid-1")
        self.assertEqual([c.cobj for c in tm.req_consumers["cid-1"]], [second])
        tm.unregConsumer(second, "cid-1")
        self.assertNotIn("cid-1", tm.req_consumers)

    def test_provisionalRetransmissionIgnored(self) -> None:
        """A 180 received twice rings once and is not answered."""
        ringing = self.far.response(self.invite, 180, "Ringing")
        self.clock.deliver(ringing)
        self.clock.settle()
        count = len(self.clock.sent)
        self.clock.advance(2)
        self.clock.deliver(ringing)
        self.clock.settle()
        self.assertEqual(self.listener.events, [("ringing",)])
        self.assertEqual(self.sentSince(count), [])


class WriteRetryTests(SynchronousTestCase):
    """A datagram the kernel has no room for (EAGAIN) is written again shortly."""

    def setUp(self) -> None:
        self.clock, self.stack = startStack(self)
        self.port = self.clock.ports[0]
        self.refusals = 0
        write = self.port.write

        def refusing(data, addr):
            if self.refusals:
                self.refusals -= 1
                raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
            write(data, addr)

        self.port.write = refusing

    def dial(self) -> None:
        offer = SdpSession("127.0.0.1").offer("127.0.0.1", 40000)
        self.stack.dial("100", FAR_ROUTE, offer, RecordingListener(), 60, "t/leg1")

    def test_retried(self) -> None:
        """The INVITE refused twice is sent 20 ms later, once."""
        self.refusals = 2
        self.dial()
        self.assertEqual(self.clock.sent, [])
        self.clock.advance(0.01)
        self.assertEqual(self.clock.sent, [])
        self.clock.advance(0.01)
        self.assertEqual([s.method for s in self.clock.sent], ["INVITE"])
        self.assertEqual(round(self.clock.sent[0].time, 3), 0.02)

    def test_droppedAtShutdown(self) -> None:
        """
        Stopping the stack drops the writes waiting to be retried: none is
        left on the clock and nothing is sent after.
        """
        self.refusals = 1
        self.dial()
        self.stack.stopService()
        writes = [
            c for c in self.clock.getDelayedCalls() if c.func.__name__ == "_write"
        ]
        self.assertEqual(writes, [])
        self.clock.advance(1)
        self.assertEqual(self.clock.sent, [])


class RealReactorTests(TestCase):
    """The stack on trial's real reactor: UDP, no threads, nothing left dirty."""

    @defer.inlineCallbacks
    def test_optionsAnsweredNoThreads(self) -> None:
        """
        The stack answers an OPTIONS over real UDP, refuses an INVITE
        nobody asked for with 403, and runs no thread of its own.
        """
        threadsBefore = threading.active_count()
        previous = adapter.useReactor(reactor)
        self.addCleanup(adapter.useReactor, previous)
        stack = SipStack("127.0.0.1", 0, reactor=reactor)
        stack.startService()
        received: defer.DeferredQueue = defer.DeferredQueue()

        class Client(DatagramProtocol):
            def datagramReceived(self, data, addr):
                received.put(data.decode())

        client = reactor.listenUDP(0, Client(), interface="127.0.0.1")
        port = client.getHost().port
        try:
            for method, expected in (
                ("OPTIONS", "SIP/2.0 200 OK"),
                ("INVITE", "SIP/2.0 403 Forbidden"),
            ):
                request = (
                    f"{method} sip:cb@127.0.0.1:{stack.port} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-{method}\r\n"
                    "Max-Forwards: 70\r\n"
                    f"From: <sip:x@127.0.0.1:{port}>;tag=t1\r\n"
                    f"To: <sip:cb@127.0.0.1:{stack.port}>\r\n"
                    f"Call-ID: {method}-test@127.0.0.1\r\n"
                    f"CSeq: 1 {method}\r\n"
                    f"Contact: <sip:x@127.0.0.1:{port}>\r\n"
                    "Content-Length: 0\r\n\r\n"
                )
                client.write(request.encode(), ("127.0.0.1", stack.port))
                answer = yield received.get()
                self.assertTrue(answer.startswith(expected), answer)
            self.assertEqual(threading.active_count(), threadsBefore)
        finally:
            yield client.stopListening()
            yield stack.stopService()
        self.assertEqual(adapter.ED2.armedTimers(), [])


class FakeReactorSanityTests(SynchronousTestCase):
    def test_fakeReactorRecords(self) -> None:
        """The fake reactor used by these tests records what sippy sends."""
        clock = FakeSipReactor()
        port = clock.adoptDatagramPort(0, 2, object())
        port.write(b"x", ("127.0.0.1", 1))
        self.assertEqual(clock.sent[0].data, "x")


class MyAddressTests(SynchronousTestCase):
    """
    sippy's "my address" placeholder writes the host's address, looked up
    once per L{adapter.patches.HOST_ADDRESS_TTL} instead of every time.
    """

    def setUp(self) -> None:
        import sippy.SipConf as sipConf

        from callback_tw.sip.adapter import patches

        self.lookups: list[str] = []
        self.address = "192.0.2.44"
        self.now = 1000.0

        def gethostbyname(name: str) -> str:
            self.lookups.append(name)
            return self.address

        self.patch(sipConf, "gethostbyname", gethostbyname)
        self.patch(sipConf, "gethostname", lambda: "callback-host")
        self.patch(patches, "monotonic", lambda: self.now)
        self.patch(patches, "_hostAddress", (float("-inf"), ""))
        self.myAddress = sipConf.MyAddress()

    def test_sameText(self) -> None:
        """The text is the host's address, as sippy's own C{__str__} gives."""
        from callback_tw.sip.adapter import patches

        self.assertEqual(str(self.myAddress), "192.0.2.44")
        self.assertEqual(patches._originalMyAddressStr(self.myAddress), "192.0.2.44")

    def test_lookedUpOncePerTTL(self) -> None:
        """
        Within 30 s the address is not looked up again; after that it is,
        and a changed address is written.
        """
        for _ in range(100):
            self.assertEqual(str(self.myAddress), "192.0.2.44")
        self.assertEqual(self.lookups, ["callback-host"])
        self.address = "192.0.2.45"
        self.now += 29.9
        self.assertEqual(str(self.myAddress), "192.0.2.44")
        self.now += 0.1
        self.assertEqual(str(self.myAddress), "192.0.2.45")
        self.assertEqual(len(self.lookups), 2)

    def test_inURL(self) -> None:
        """A URL with the placeholder and no local address writes it."""
        from sippy.SipConf import SipConf
        from sippy.SipURL import SipURL

        url = SipURL(username="100", host=self.myAddress, port=SipConf.my_port)
        self.assertEqual(str(url), f"sip:100@192.0.2.44:{SipConf.my_port}")


class MyDirTests(SynchronousTestCase):
    """
    sippy's C{'my' in dir(value)} tests run on a cheap module-level C{dir}
    (L{adapter.patches.myDir}); what sippy writes must not change.
    """

    def setUp(self) -> None:
        """Headers and an SDP origin with placeholders and literal values."""
        from sippy.SdpOrigin import SdpOrigin
        from sippy.SipConf import MyAddress, MyPort, MyTransport, SipConf
        from sippy.SipURL import SipURL
        from sippy.SipVia import SipVia

        local = (("10.0.0.1", 5062), "udp")
        placeholders = SipURL(
            username="100", host=MyAddress(), port=MyPort(SipConf.default_port)
        )
        placeholders.transport = MyTransport("udp")
        literal = SipURL(username="101", host="192.0.2.7", port=5070)
        viaPlaceholders = SipVia()
        viaLiteral = SipVia(body="SIP/2.0/UDP 192.0.2.9:5080;branch=z9hG4bKx")
        origin = SdpOrigin()
        origin.address = MyAddress()
        self.local = local
        self.objects = [placeholders, literal, viaPlaceholders, viaLiteral, origin]

    def wire(self) -> list[str]:
        """What sippy writes for each object."""
        return [o.localStr(self.local) for o in self.objects]

    def test_sameBytesAsBuiltinDir(self) -> None:
        """
        URLs, Vias and origins with sippy's placeholders and with literal
        values are written exactly as with the builtin C{dir}.
        """
        import builtins

        from callback_tw.sip.adapter import patches

        patched = self.wire()
        modules = patches._MY_DIR_MODULES
        for module in modules:
            self.assertIs(module.dir, patches.myDir)
            module.dir = builtins.dir
        try:
            original = self.wire()
        finally:
            for module in modules:
                module.dir = patches.myDir
        self.assertEqual(patched, original)
        self.assertIn("10.0.0.1:5062", patched[0])
        self.assertIn("192.0.2.7:5070", patched[1])
        self.assertIn("SIP/2.0/UDP 10.0.0.1:5062", patched[2])
        self.assertIn("192.0.2.9:5080", patched[3])
        self.assertTrue(patched[4].endswith("IP4 10.0.0.1"), patched[4])
