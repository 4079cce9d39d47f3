"""
Tests for L{callback_tw.iif.protocol.IIFProtocol}: what an AS sees on the wire.

Every test drives the protocol with datagrams on a L{FakeDatagramTransport} and checks
the exact bytes and destinations written, with a fake manager and a L{Clock}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from callback_tw.callback.errors import CallbackRefused
from callback_tw.iif.message import Request
from callback_tw.iif.protocol import IIFProtocol
from tests.iifhelpers import PEER, FakeManager, makeProtocol
from tests.storehelpers import MemoryStore

REQUEST = b"REQUEST: id=1234;user1=100;user2=101;duration=3600;"
ACK_OK = b"ACK: id=1234;code=ok;"
ACK_FAIL = b"ACK: id=1234;code=fail;"


def _events(observer: EventLoggingObserver, word: str) -> list[dict]:
    return [e for e in observer if word in e.get("log_format", "")]


class AllowlistTests(SynchronousTestCase):
    """
    Only configured peer servers are answered; everyone else gets silence.
    """

    def setUp(self) -> None:
        self.observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def test_peerIsAnswered(self) -> None:
        """
        A REQUEST from a configured peer reaches the manager and is acknowledged to its
        source address.
        """
        protocol, transport, manager, _ = makeProtocol()
        protocol.datagramReceived(REQUEST, PEER)
        self.assertEqual(transport.written, [(ACK_OK, PEER)])
        self.assertEqual(
            [c.request for c in manager.calls], [Request("1234", "100", "101", 3600)]
        )

    def test_unknownHostIgnored(self) -> None:
        """
        A valid REQUEST, an invalid datagram and a CANCEL from a host that is not a peer
        get no answer and never reach the manager.
        """
        protocol, transport, manager, _ = makeProtocol()
        for data in (REQUEST, b"garbage", b"CANCEL: id=1234;"):
            protocol.datagramReceived(data, ("127.0.0.2", 6000))
        self.assertEqual(transport.written, [])
        self.assertEqual(manager.calls, [])
        self.assertEqual(manager.cancelled, [])

    def test_wrongPortIgnored(self) -> None:
        """
        When a peer is configured with a port, the same host on another port is not a
        peer.
        """
        protocol, transport, manager, _ = makeProtocol()
        protocol.datagramReceived(REQUEST, ("127.0.0.1", 6001))
        self.assertEqual(transport.written, [])
        self.assertEqual(manager.calls, [])

    def test_peerWithoutPortMatchesAnyPort(self) -> None:
        """
        A peer configured without a port is accepted from any source port, and the ACK
        goes back to that port.
        """
        protocol, transport, manager, _ = makeProtocol(peers=[("10.0.0.5", None)])
        protocol.datagramReceived(REQUEST, ("10.0.0.5", 40000))
        self.assertEqual(transport.written, [(ACK_OK, ("10.0.0.5", 40000))])
        self.assertEqual(len(manager.calls), 1)

    def test_severalPortsForOneHost(self) -> None:
        """
        The same host may be configured with several ports; each of them is a peer and
        no other port is.
        """
        protocol, transport, manager, _ = makeProtocol(
            peers=[("127.0.0.1", 6000), ("127.0.0.1", 6002)]
        )
        protocol.datagramReceived(REQUEST, ("127.0.0.1", 6002))
        protocol.datagramReceived(REQUEST, ("127.0.0.1", 6001))
        self.assertEqual(transport.written, [(ACK_OK, ("127.0.0.1", 6002))])

    def test_addressesNormalised(self) -> None:
        """
        Peer hosts and sources compare as addresses: an IPv6 peer written in another
        form and an IPv4-mapped IPv6 source (dual-stack socket) both match.
        """
        protocol, transport, manager, _ = makeProtocol(
            peers=[("0:0::1", 5000), ("127.0.0.1", 6000)]
        )
        protocol.datagramReceived(REQUEST, ("::1", 5000, 0, 0))
        protocol.datagramReceived(
            b"REQUEST: id=2;user1=100;user2=101;duration=1", ("::ffff:127.0.0.1", 6000)
        )
        self.assertEqual(
            transport.written,
            [
                (ACK_OK, ("::1", 5000, 0, 0)),
                (b"ACK: id=2;code=ok;", ("::ffff:127.0.0.1", 6000)),
            ],
        )

    def test_peerMustBeAnAddress(self) -> None:
        """
        A peer host that is not an IP literal is a configuration error, not a peer that
        silently never matches.
        """
        self.assertRaises(
            ValueError,
            IIFProtocol,
            FakeManager(),
            [("pss.example", 5060)],
            60,
            store=MemoryStore(),
        )

    def test_dropsLoggedRateLimited(self) -> None:
        """
        A flood from one non-peer source gives one log line per 10 s; the next line
        counts the drops that were not logged. Another source gets its own line.
        """
        protocol, transport, manager, clock = makeProtocol()
        for _ in range(100):
            protocol.datagramReceived(REQUEST, ("192.0.2.1", 5000))
        drops = _events(self.observer, "non-peer")
        self.assertEqual(len(drops), 1)
        self.assertEqual(drops[0]["source"], "192.0.2.1:5000")

        protocol.datagramReceived(REQUEST, ("192.0.2.2", 5000))
        self.assertEqual(len(_events(self.observer, "non-peer")), 2)

        clock.advance(9.9)
        protocol.datagramReceived(REQUEST, ("192.0.2.1", 5001))
        self.assertEqual(len(_events(self.observer, "non-peer")), 2)
        clock.advance(0.1)
        protocol.datagramReceived(REQUEST, ("192.0.2.1", 5002))
        drops = _events(self.observer, "non-peer")
        self.assertEqual(len(drops), 3)
        self.assertEqual(drops[2]["suppressed"], 100)
        self.assertEqual(transport.written, [])

    def test_dropsFromManySourcesBounded(self) -> None:
        """
        A flood from thousands of distinct (possibly spoofed) sources cannot produce
        more than a bounded number of log lines per interval.
        """
        protocol, transport, manager, clock = makeProtocol()
        for i in range(5000):
            protocol.datagramReceived(REQUEST, (f"10.{i // 256}.{i % 256}.1", 5000))
        lines = len(_events(self.observer, "non-peer"))
        self.assertEqual(lines, IIFProtocol.maxDropSources + 1)
        clock.advance(10)
        for i in range(5000):
            protocol.datagramReceived(REQUEST, (f"10.{i // 256}.{i % 256}.2", 5000))
        drops = _events(self.observer, "non-peer")
        self.assertEqual(len(drops), 2 * lines)
        self.assertEqual(drops[-1]["suppressed"], 5000 - IIFProtocol.maxDropSources - 1)
        self.assertEqual(transport.written, [])


class InvalidMessageTests(SynchronousTestCase):
    """
    An invalid command from a peer gets C{code=fail} and never reaches the manager.
    """

    def setUp(self) -> None:
        self.observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def test_failWithId(self) -> None:
        """
        When the id can be read it is echoed in the failure ACK, and the reason is
        logged with it.
        """
        protocol, transport, manager, _ = makeProtocol()
        protocol.datagramReceived(b"REQUEST: id=77;user1=100;duration=5", PEER)
        self.assertEqual(transport.written, [(b"ACK: id=77;code=fail;", PEER)])
        self.assertEqual(manager.calls, [])
        [event] = _events(self.observer, "invalid command")
        self.assertEqual(event["callbackId"], "77")
        self.assertIn("user2", event["reason"])

    def test_failWithoutId(self) -> None:
        """
        When no valid id can be read the failure ACK has an empty id.
        """
        protocol, transport, manager, _ = makeProtocol()
        protocol.datagramReceived(b"\xff\xfe hello", PEER)
        self.assertEqual(transport.written, [(b"ACK: id=;code=fail;", PEER)])
        self.assertEqual(manager.calls, [])

    def test_durationCappedByMaxDuration(self) -> None:
        """
        The protocol's C{maxDuration} is the cap the codec applies.
        """
        protocol, transport, manager, _ = makeProtocol(maxDuration=60)
        protocol.datagramReceived(b"REQUEST: id=1;user1=1;user2=2;duration=61", PEER)
        protocol.datagramReceived(b"REQUEST: id=2;user1=1;user2=2;duration=60", PEER)
        self.assertEqual(
            transport.written,
            [(b"ACK: id=1;code=fail;", PEER), (b"ACK: id=2;code=ok;", PEER)],
        )

    def test_unknownParametersLogged(self) -> None:
        """
        Unknown parameters do not stop the callback; their names are logged with the id.
        """
        protocol, transport, manager, _ = makeProtocol()
        protocol.datagramReceived(REQUEST + b"priority=high;", PEER)
        self.assertEqual(transport.written, [(ACK_OK, PEER)])
        [event] = _events(self.observer, "unknown parameters")
        self.assertEqual(event["callbackId"], "1234")
        self.assertEqual(event["names"], "priority")


class RequestTests(SynchronousTestCase):
    """
    A valid REQUEST starts one callback; its Deferreds drive the ACK and the RESPONSE.
    """

    def setUp(self) -> None:
        self.observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def test_responseWhenFinished(self) -> None:
        """
        When the call finishes, C{RESPONSE: id=..;real_duration=N;} goes to the address
        the REQUEST came from.
        """
        protocol, transport, manager, _ = makeProtocol()
        protocol.datagramReceived(REQUEST, PEER)
        manager.calls[0].finish(180)
        self.assertEqual(
            transport.written,
            [(ACK_OK, PEER), (b"RESPONSE: id=1234;real_duration=180;", PEER)],
        )

    def test_requestLogged(self) -> None:
        """
        An accepted REQUEST is logged with its id, source and parameters.
        """
        protocol, transport, manager, _ = makeProtocol()
        protocol.datagramReceived(REQUEST, PEER)
        [event] = _events(self.observer, "IIF REQUEST {callbackId} from {source}:")
        self.assertEqual(event["callbackId"], "1234")
        self.assertEqual(event["source"], "127.0.0.1:6000")
        self.assertEqual((event["user1"], event["user2"]), ("100", "101"))

    def test_announcementsPassedOn(self) -> None:
        """
        The optional announcement parameters reach the manager in the Request.
        """
        protocol, transport, manager, _ = makeProtocol()
        protocol.datagramReceived(
            b"REQUEST: id=9;user1=1;user2=2;duration=5;ann_id1=00080002;ann_digit2=12",
            PEER,
        )
        self.assertEqual(
            manager.calls[0].request,
            Request("9", "1", "2", 5, annId1="00080002", annDigit2="12"),
        )

    def test_finishedBeforeReturned(self) -> None:
        """
        If a callback has already ended when the manager hands it over, the AS still
        sees the ACK first and then the RESPONSE.
        """
        protocol, transport, manager, _ = makeProtocol()
        start = manager.startCallback

        def startAndFinish(request: Request) -> Any:
            call = start(request)
            call.finish(0)
            return call

        manager.startCallback = startAndFinish  # type: ignore[method-assign]
        protocol.datagramReceived(REQUEST, PEER)
        self.assertEqual(
            transport.written,
            [(ACK_OK, PEER), (b"RESPONSE: id=1234;real_duration=0;", PEER)],
        )

    def test_refusedByException(self) -> None:
        """
        A L{CallbackRefused} from C{startCallback} gives C{code=fail} with the reason
        logged.
        """
        protocol, transport, manager, _ = makeProtocol()
        manager.refuseWith = CallbackRefused("max_calls reached")
        protocol.datagramReceived(REQUEST, PEER)
        self.assertEqual(transport.written, [(ACK_FAIL, PEER)])
        [event] = _events(self.observer, "refused: {reason}")
        self.assertEqual(event["reason"], "max_calls reached")

    def test_refusedIsNotRemembered(self) -> None:
        """
        A refused REQUEST is not remembered: the same REQUEST again is evaluated afresh
        and may succeed.
        """
        protocol, transport, manager, _ = makeProtocol()
        manager.refuseWith = CallbackRefused("max_calls reached")
        protocol.datagramReceived(REQUEST, PEER)
        manager.refuseWith = CallbackRefused("shutting down")
        protocol.datagramReceived(REQUEST, PEER)
        protocol.datagramReceived(REQUEST, PEER)
        self.assertEqual(
            transport.written, [(ACK_FAIL, PEER), (ACK_FAIL, PEER), (ACK_OK, PEER)]
        )
        self.assertEqual(len(manager.requests), 3)
        self.assertEqual(len(manager.calls), 1)

    def test_managerBugGivesFail(self) -> None:
        """
        An unexpected exception from the manager is logged as a failure and the AS gets
        C{code=fail}.
        """
        protocol, transport, manager, _ = makeProtocol()
        manager.refuseWith = RuntimeError("boom")
        protocol.datagramReceived(REQUEST, PEER)
        self.assertEqual(transport.written, [(ACK_FAIL, PEER)])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_finishedErrbackHandled(self) -> None:
        """
        A C{finished} that fails is logged as a failure (never left unhandled) and the
        AS still gets its RESPONSE with C{real_duration=0}.
        """
        protocol, transport, manager, _ = makeProtocol()
        protocol.datagramReceived(REQUEST, PEER)
        finished: Deferred = manager.calls[0].finished
        finished.errback(RuntimeError("state machine bug"))
        self.assertEqual(
            transport.written,
            [(ACK_OK, PEER), (b"RESPONSE: id=1234;real_duration=0;", PEER)],
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertIsNone(self.successResultOf(finished))

    def test_reportingBugLogged(self) -> None:
        """
        A bug while reporting the end (here a result without a duration) is
        logged as a failure of the IIF protocol, never left unhandled, and
        no RESPONSE is made up.
        """
        protocol, transport, manager, _ = makeProtocol()
        protocol.datagramReceived(REQUEST, PEER)
        finished: Deferred = manager.calls[0].finished
        finished.callback(object())
        self.assertEqual(transport.written, [(ACK_OK, PEER)])
        self.assertEqual(len(self.flushLoggedErrors(AttributeError)), 1)
        [event] = _events(
            self.observer, "IIF callback {callbackId}: error in the IIF protocol"
        )
        self.assertEqual(event["callbackId"], "1234")
        self.assertIsNone(self.successResultOf(finished))

    def test_concurrentCallbacks(self) -> None:
        """
        Different ids are independent callbacks, each answered with its own RESPONSE.
        """
        protocol, transport, manager, _ = makeProtocol()
        for i in range(3):
            protocol.datagramReceived(
                b"REQUEST: id=%d;user1=1;user2=2;duration=9" % (i,), PEER
            )
        manager.calls[2].finish(7)
        manager.calls[0].finish(3)
        self.assertEqual(
            [data for data, _ in transport.written],
            [
                b"ACK: id=0;code=ok;",
                b"ACK: id=1;code=ok;",
                b"ACK: id=2;code=ok;",
                b"RESPONSE: id=2;real_duration=7;",
                b"RESPONSE: id=0;real_duration=3;",
            ],
        )

    def test_responseAfterStopIsNotSent(self) -> None:
        """
        A call that finishes after the port stopped listening does not crash the
        protocol; the lost RESPONSE is logged.
        """
        protocol, transport, manager, _ = makeProtocol()
        protocol.datagramReceived(REQUEST, PEER)
        protocol.doStop()
        manager.calls[0].finish(5)
        self.assertEqual(transport.written, [(ACK_OK, PEER)])
        self.assertEqual(len(_events(self.observer, "not listening")), 1)


class DuplicateTests(SynchronousTestCase):
    """
    REQUEST is idempotent: a repeat is answered from memory, never a second call.
    """

    def test_duplicateWhileRunning(self) -> None:
        """
        The same REQUEST while the callback runs gets the same ACK again and no second
        call; the RESPONSE is sent once, when the call finishes.
        """
        protocol, transport, manager, _ = makeProtocol()
        protocol.datagramReceived(REQUEST, PEER)
        protocol.datagramReceived(REQUEST + b"\r\n", PEER)
        self.assertEqual(transport.written, [(ACK_OK, PEER), (ACK_OK, PEER)])
        self.assertEqual(len(manager.calls), 1)
        manager.calls[0].finish(42)
        self.assertEqual(
            transport.written[2:], [(b"RESPONSE: id=1234;real_duration=42;", PEER)]
        )

    def test_duplicateAfterFinish(self) -> None:
        """
        The same REQUEST after the callback ended (within the memory) gets the ACK and
        the RESPONSE again, to the address the repeat came from, and no second call.
        """
        other = ("127.0.0.1", 6001)
        protocol, transport, manager, clock = makeProtocol(
            peers=[PEER, other], requestMemory=3600
        )
        protocol.datagramReceived(REQUEST, PEER)
        manager.calls[0].finish(180)
        clock.advance(3599)
        del transport.written[:]
        protocol.datagramReceived(REQUEST, other)
        self.assertEqual(
            transport.written,
            [(ACK_OK, other), (b"RESPONSE: id=1234;real_duration=180;", other)],
        )
        self.assertEqual(len(manager.calls), 1)

    def test_duplicateIgnoresUnknownParameters(self) -> None:
        """
        A repeat that differs only in unknown parameters is still the same REQUEST.
        """
        protocol, transport, manager, _ = makeProtocol()
        protocol.datagramReceived(REQUEST, PEER)
        protocol.datagramReceived(REQUEST + b"x=1", PEER)
        self.assertEqual(transport.written, [(ACK_OK, PEER), (ACK_OK, PEER)])
        self.assertEqual(len(manager.calls), 1)

    def test_sameIdDifferentParameters(self) -> None:
        """
        The same id with different parameters gets C{code=fail}, while running and after
        the end; the original call is untouched and its RESPONSE still goes out.
        """
        protocol, transport, manager, _ = makeProtocol()
        protocol.datagramReceived(REQUEST, PEER)
        protocol.datagramReceived(
            b"REQUEST: id=1234;user1=100;user2=999;duration=3600;", PEER
        )
        self.assertEqual(transport.written, [(ACK_OK, PEER), (ACK_FAIL, PEER)])
        self.assertEqual(len(manager.calls), 1)
        self.assertEqual(manager.cancelled, [])
        self.assertFalse(manager.calls[0].finished.called)
        manager.calls[0].finish(10)
        protocol.datagramReceived(
            b"REQUEST: id=1234;user1=100;user2=101;duration=3600;ann_digit2=1", PEER
        )
        self.assertEqual(
            transport.written[2:],
            [(b"RESPONSE: id=1234;real_duration=10;", PEER), (ACK_FAIL, PEER)],
        )
        self.assertEqual(len(manager.calls), 1)

    def test_newCallAfterMemoryExpired(self) -> None:
        """
        Once C{requestMemory} seconds have passed since the end, the id is forgotten:
        the same REQUEST starts a new callback. The store remembers without a timer
        of the protocol's.
        """
        protocol, transport, manager, clock = makeProtocol(requestMemory=60)
        protocol.datagramReceived(REQUEST, PEER)
        manager.calls[0].finish(5)
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(60)
        self.assertEqual(clock.getDelayedCalls(), [])
        del transport.written[:]
        protocol.datagramReceived(REQUEST, PEER)
        self.assertEqual(transport.written, [(ACK_OK, PEER)])
        self.assertEqual(len(manager.calls), 2)

    def test_memoryCountsFromTheEnd(self) -> None:
        """
        The memory starts when the callback ends, not when it was requested: a long
        call is still remembered just before C{requestMemory} after its end, and
        forgotten at that time even if no timer ran (lazy expiry).
        """
        protocol, transport, manager, clock = makeProtocol(requestMemory=60)
        protocol.datagramReceived(REQUEST, PEER)
        clock.advance(1000)
        manager.calls[0].finish(1000)
        protocol.doStop()  # no timer any more: expiry must also happen lazily
        clock.advance(59.5)
        protocol.datagramReceived(REQUEST, PEER)
        self.assertEqual(len(manager.calls), 1)
        clock.advance(0.5)
        protocol.datagramReceived(REQUEST, PEER)
        self.assertEqual(len(manager.calls), 2)

    def test_finishedNotEvicted(self) -> None:
        """
        The store, not a bounded memory, recalls finished ids: however small
        C{maxRemembered} (the peer table's bound), every finished id within
        C{requestMemory} is still recognised and places no second call.
        """
        protocol, transport, manager, _ = makeProtocol(maxRemembered=2)
        for i in range(3):
            protocol.datagramReceived(
                b"REQUEST: id=%d;user1=1;user2=2;duration=9" % (i,), PEER
            )
        for call in (manager.calls[1], manager.calls[0], manager.calls[2]):
            call.finish(1)
        for i in (2, 0, 1):
            protocol.datagramReceived(
                b"REQUEST: id=%d;user1=1;user2=2;duration=9" % (i,), PEER
            )
        self.assertEqual([c.request.callbackId for c in manager.calls], ["0", "1", "2"])
        self.assertEqual(
            [data for data, _ in transport.written[-6:]],
            [
                b"ACK: id=2;code=ok;",
                b"RESPONSE: id=2;real_duration=1;",
                b"ACK: id=0;code=ok;",
                b"RESPONSE: id=0;real_duration=1;",
                b"ACK: id=1;code=ok;",
                b"RESPONSE: id=1;real_duration=1;",
            ],
        )

    def test_runningAlwaysRemembered(self) -> None:
        """
        Running callbacks are remembered whatever C{maxRemembered} is: their repeats
        never place a second call.
        """
        protocol, transport, manager, _ = makeProtocol(maxRemembered=0)
        for _ in range(2):
            for i in range(3):
                protocol.datagramReceived(
                    b"REQUEST: id=%d;user1=1;user2=2;duration=9" % (i,), PEER
                )
        self.assertEqual(len(manager.calls), 3)
        self.assertEqual(len(transport.written), 6)

    def test_noTimerLeft(self) -> None:
        """
        Remembering ids leaves no delayed call behind, before or after the
        protocol stops, and a call finishing after the stop schedules none.
        """
        protocol, transport, manager, clock = makeProtocol(requestMemory=100)
        for i in range(50):
            protocol.datagramReceived(
                b"REQUEST: id=%d;user1=1;user2=2;duration=9" % (i,), PEER
            )
        for i in range(49):
            manager.calls[i].finish(1)
            clock.advance(1)
        self.assertEqual(clock.getDelayedCalls(), [])
        protocol.doStop()
        manager.calls[49].finish(1)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_oldIdsForgottenEachAtItsTime(self) -> None:
        """
        Each finished id is forgotten when its own memory ends: ids that ended
        more than C{requestMemory} ago start new calls, newer ones do not.
        """
        protocol, transport, manager, clock = makeProtocol(requestMemory=100)
        for i in range(50):
            protocol.datagramReceived(
                b"REQUEST: id=%d;user1=1;user2=2;duration=9" % (i,), PEER
            )
        for i in range(50):
            manager.calls[i].finish(1)
            clock.advance(1)
        clock.advance(51)  # ids 0..1 ended more than 100 s ago
        protocol.datagramReceived(b"REQUEST: id=1;user1=1;user2=2;duration=9", PEER)
        protocol.datagramReceived(b"REQUEST: id=2;user1=1;user2=2;duration=9", PEER)
        self.assertEqual(len(manager.calls), 51)


class CancelTests(SynchronousTestCase):
    """
    C{CANCEL: id=X;} asks the manager to release a running callback.
    """

    def test_cancelRunning(self) -> None:
        """
        C{code=ok} when the manager found the callback; its RESPONSE comes later through
        C{finished} as usual.
        """
        protocol, transport, manager, _ = makeProtocol()
        protocol.datagramReceived(REQUEST, PEER)
        protocol.datagramReceived(b"CANCEL: id=1234;", PEER)
        self.assertEqual(manager.cancelled, ["1234"])
        self.assertEqual(transport.written, [(ACK_OK, PEER), (ACK_OK, PEER)])
        manager.calls[0].finish(12, "cancelled")
        self.assertEqual(
            transport.written[2:], [(b"RESPONSE: id=1234;real_duration=12;", PEER)]
        )

    def test_cancelUnknown(self) -> None:
        """
        C{code=fail} when the manager has no such running callback.
        """
        protocol, transport, manager, _ = makeProtocol()
        manager.cancelResult = False
        protocol.datagramReceived(b"CANCEL: id=55", PEER)
        self.assertEqual(manager.cancelled, ["55"])
        self.assertEqual(transport.written, [(b"ACK: id=55;code=fail;", PEER)])

    def test_cancelManagerBug(self) -> None:
        """
        An unexpected exception from the manager gives C{code=fail} and is logged.
        """
        protocol, transport, manager, _ = makeProtocol()
        manager.cancelResult = RuntimeError("boom")
        protocol.datagramReceived(b"CANCEL: id=55", PEER)
        self.assertEqual(transport.written, [(b"ACK: id=55;code=fail;", PEER)])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_ackBeforeSynchronousResponse(self) -> None:
        """
        When the manager ends the callback within C{cancelCallback}, the CANCEL's ACK is
        still sent before the callback's RESPONSE.
        """
        protocol, transport, manager, _ = makeProtocol()
        protocol.datagramReceived(REQUEST, PEER)
        manager.finishOnCancel = 3
        protocol.datagramReceived(b"CANCEL: id=1234;", PEER)
        self.assertEqual(
            transport.written,
            [
                (ACK_OK, PEER),
                (ACK_OK, PEER),
                (b"RESPONSE: id=1234;real_duration=3;", PEER),
            ],
        )

    def test_cancelFromNonPeerIgnored(self) -> None:
        """
        A CANCEL from a non-peer never reaches the manager and is not answered.
        """
        protocol, transport, manager, _ = makeProtocol()
        protocol.datagramReceived(REQUEST, PEER)
        protocol.datagramReceived(b"CANCEL: id=1234;", ("127.0.0.1", 9999))
        self.assertEqual(manager.cancelled, [])
        self.assertEqual(transport.written, [(ACK_OK, PEER)])

    def test_invalidCancel(self) -> None:
        """
        A CANCEL without a valid id gets C{code=fail} and does not reach the manager.
        """
        protocol, transport, manager, _ = makeProtocol()
        protocol.datagramReceived(b"CANCEL: id=a b;", PEER)
        self.assertEqual(manager.cancelled, [])
        self.assertEqual(transport.written, [(b"ACK: id=;code=fail;", PEER)])
