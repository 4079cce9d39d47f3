"""
Tests for L{callback_tw.iif.protocol.IIFProtocol} with its store: the ACK
follows the COMMIT, and a repeated REQUEST is answered from the store across
restarts and servers.
"""

from __future__ import annotations

import dataclasses

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from callback_tw.callback.errors import CallbackRefused
from callback_tw.iif.peers import Peer
from callback_tw.iif.signing import verify
from callback_tw.policy import PeerRules
from callback_tw.store import CallbackRecord
from tests.iifhelpers import PEER, makeProtocol
from tests.storehelpers import MemoryStore

REQUEST = b"REQUEST: id=1234;user1=100;user2=101;duration=3600;"
ACK_OK = b"ACK: id=1234;code=ok;"
ACK_FAIL = b"ACK: id=1234;code=fail;"
RESPONSE = b"RESPONSE: id=1234;real_duration=%d;"


class CommitTests(SynchronousTestCase):
    """
    A promise is on disk before it is made.
    """

    def test_ackAfterCommit(self) -> None:
        """
        Until the callback's row is committed there is no ACK and no call; then
        the ACK ok, and user1 is called.
        """
        protocol, transport, manager, _ = makeProtocol()
        protocol.store.hold()
        protocol.datagramReceived(REQUEST, PEER)
        self.assertEqual(transport.written, [])
        self.assertEqual(manager.calls, [])
        protocol.store.release()
        self.assertEqual(transport.written, [(ACK_OK, PEER)])
        self.assertEqual(len(manager.calls), 1)
        record = protocol.store.rows["1234"]
        self.assertEqual(
            (record.peer, record.peerAddress, record.user1, record.user2),
            ("127.0.0.1", "127.0.0.1:6000", "100", "101"),
        )

    def test_repeatWhileCommitting(self) -> None:
        """
        A repeat that arrives while the row is being committed gets the same
        ACK when it is, and no second call; other parameters get code=fail at
        once.
        """
        protocol, transport, manager, _ = makeProtocol()
        protocol.store.hold()
        protocol.datagramReceived(REQUEST, PEER)
        protocol.datagramReceived(REQUEST, PEER)
        protocol.datagramReceived(
            b"REQUEST: id=1234;user1=100;user2=999;duration=3600;", PEER
        )
        self.assertEqual(transport.written, [(ACK_FAIL, PEER)])
        protocol.store.release()
        self.assertEqual(
            transport.written, [(ACK_FAIL, PEER), (ACK_OK, PEER), (ACK_OK, PEER)]
        )
        self.assertEqual(len(manager.calls), 1)

    def test_responseAfterEndCommitted(self) -> None:
        """
        The end (cause, real_duration) is committed before the RESPONSE goes
        out, and the RESPONSE is then recorded as sent.
        """
        protocol, transport, manager, _ = makeProtocol()
        protocol.datagramReceived(REQUEST, PEER)
        protocol.store.hold()
        manager.calls[0].finish(42, "user2 hung up")
        self.assertEqual(transport.written, [(ACK_OK, PEER)])
        record = protocol.store.rows["1234"]
        self.assertEqual((record.state, record.endCause), ("ended", "user2 hung up"))
        protocol.store.release()
        self.assertEqual(transport.written[1:], [(RESPONSE % 42, PEER)])
        self.assertIsNotNone(protocol.store.rows["1234"].responseSentAt)

    def test_drainWaitsForResponses(self) -> None:
        """
        drain() fires once every RESPONSE whose end was being committed is
        sent.
        """
        protocol, transport, manager, _ = makeProtocol()
        protocol.datagramReceived(REQUEST, PEER)
        protocol.store.hold()
        manager.calls[0].finish(3)
        drained = protocol.drain()
        self.assertNoResult(drained)
        protocol.store.release()
        self.successResultOf(drained)
        self.assertEqual(transport.written[-1], (RESPONSE % 3, PEER))

    def test_refusedAfterCommitForgotten(self) -> None:
        """
        A REQUEST the manager refuses once its row is committed gets code=fail
        and its row is deleted: the same REQUEST later is evaluated afresh.
        """
        protocol, transport, manager, _ = makeProtocol()
        manager.refuseWith = CallbackRefused("no free RTP port")
        protocol.datagramReceived(REQUEST, PEER)
        self.assertEqual(transport.written, [(ACK_FAIL, PEER)])
        self.assertNotIn("1234", protocol.store.rows)
        protocol.datagramReceived(REQUEST, PEER)
        self.assertEqual(transport.written[1:], [(ACK_OK, PEER)])


class StoreDownTests(SynchronousTestCase):
    """
    While the store cannot be written, new REQUESTs are refused at once.
    """

    def test_unhealthyRefusesAtOnce(self) -> None:
        """
        With the store unhealthy a new REQUEST gets code=fail at once, with
        one log line however many come; a running callback goes on and gets
        its RESPONSE without waiting for the store.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        protocol, transport, manager, _ = makeProtocol()
        protocol.datagramReceived(REQUEST, PEER)
        protocol.store.healthy = False
        protocol.store.hold()
        for i in range(20):
            protocol.datagramReceived(
                b"REQUEST: id=n%d;user1=1;user2=2;duration=9" % (i,), PEER
            )
        self.assertEqual(
            [data for data, _ in transport.written[1:]],
            [b"ACK: id=n%d;code=fail;" % (i,) for i in range(20)],
        )
        self.assertEqual(len(manager.calls), 1)
        lines = [e for e in observer if "unavailable" in e.get("log_format", "")]
        self.assertEqual(len(lines), 1)
        manager.calls[0].finish(9)
        self.assertEqual(transport.written[-1], (RESPONSE % 9, PEER))

    def test_acceptFailsGivesFail(self) -> None:
        """
        An accept that fails (the database went away during the commit) gives
        code=fail, and the peer's slot back.
        """
        protocol, transport, manager, _ = makeProtocol()
        original = protocol.store.accept

        def failing(*args, **kwargs):
            protocol.store.healthy = False
            try:
                return original(*args, **kwargs)
            finally:
                protocol.store.healthy = True

        protocol.store.accept = failing
        protocol.datagramReceived(REQUEST, PEER)
        self.assertEqual(transport.written, [(ACK_FAIL, PEER)])
        self.assertEqual(manager.calls, [])
        self.flushLoggedErrors()


class RestartTests(SynchronousTestCase):
    """
    A new process (a new protocol and manager) on the same store knows what
    the old one promised.
    """

    def restart(self, store: MemoryStore, **kwargs):
        return makeProtocol(
            store=MemoryStore(store.serverId, rows=store.rows, legRows=store.legRows),
            **kwargs,
        )

    def test_endedRepeatedAfterRestart(self) -> None:
        """
        After a restart, the same REQUEST for a callback that ended gets the
        same ACK and the same RESPONSE again, and no new call.
        """
        protocol, transport, manager, _ = makeProtocol()
        protocol.datagramReceived(REQUEST, PEER)
        manager.calls[0].finish(77)
        protocol2, transport2, manager2, _ = self.restart(protocol.store)
        protocol2.datagramReceived(REQUEST, PEER)
        self.assertEqual(transport2.written, [(ACK_OK, PEER), (RESPONSE % 77, PEER)])
        self.assertEqual(manager2.calls, [])

    def test_otherParametersAfterRestart(self) -> None:
        """
        The same id with other parameters after a restart gets code=fail.
        """
        protocol, transport, manager, _ = makeProtocol()
        protocol.datagramReceived(REQUEST, PEER)
        manager.calls[0].finish(77)
        protocol2, transport2, manager2, _ = self.restart(protocol.store)
        protocol2.datagramReceived(
            b"REQUEST: id=1234;user1=100;user2=102;duration=3600;", PEER
        )
        self.assertEqual(transport2.written, [(ACK_FAIL, PEER)])
        self.assertEqual(manager2.calls, [])

    def test_anotherPeersIdAfterRestart(self) -> None:
        """
        After a restart another peer still cannot replay a peer's id: it gets
        code=fail, never the ACK or RESPONSE.
        """
        as1, as2 = Peer("as1", "127.0.0.1", 6000), Peer("as2", "127.0.0.2", 6000)
        protocol, transport, manager, _ = makeProtocol(peers=[as1, as2])
        protocol.datagramReceived(REQUEST, ("127.0.0.1", 6000))
        manager.calls[0].finish(5)
        protocol2, transport2, manager2, _ = self.restart(
            protocol.store, peers=[as1, as2]
        )
        protocol2.datagramReceived(REQUEST, ("127.0.0.2", 6000))
        self.assertEqual(transport2.written, [(ACK_FAIL, ("127.0.0.2", 6000))])
        self.assertEqual(manager2.calls, [])

    def test_signedResend(self) -> None:
        """
        A RESPONSE sent again from the store to a keyed peer is signed.
        """
        key = b"k" * 32
        peer = Peer("as1", "127.0.0.1", 6000, key=key)
        protocol, transport, manager, clock = makeProtocol(peers=[peer], now=1000)
        store = protocol.store
        protocol.store.rows["9"] = dataclasses.replace(
            _record("9"), endedAt=1.0, realDuration=12, peer="as1"
        )
        protocol.resendResponse(store.rows["9"])
        [(data, addr)] = transport.written
        self.assertEqual(addr, ("127.0.0.1", 6000))
        self.assertEqual(
            verify(data, key, 1000, 30), b"RESPONSE: id=9;real_duration=12;"
        )
        self.assertIsNotNone(store.rows["9"].responseSentAt)


class RepeatsBeforeLimitsTests(SynchronousTestCase):
    """
    A limit refuses new callbacks, never the repeat of one the store knows:
    the AS that missed its ACK or RESPONSE gets them again.
    """

    def test_endedRepeatAtRateLimit(self) -> None:
        """
        A peer at its rate limit repeats the REQUEST of a callback that
        ended: it gets ACK ok and the RESPONSE again, no call; a new id at the
        same moment gets code=fail.
        """
        peer = Peer("as1", "127.0.0.1", 6000, rules=PeerRules(rate=1))
        protocol, transport, manager, _ = makeProtocol(peers=[peer])
        protocol.datagramReceived(REQUEST, PEER)
        manager.calls[0].finish(33)
        del transport.written[:]
        protocol.datagramReceived(REQUEST, PEER)
        protocol.datagramReceived(
            b"REQUEST: id=5678;user1=100;user2=101;duration=60;", PEER
        )
        self.assertEqual(
            transport.written,
            [
                (ACK_OK, PEER),
                (RESPONSE % 33, PEER),
                (b"ACK: id=5678;code=fail;", PEER),
            ],
        )
        self.assertEqual(len(manager.calls), 1)

    def test_endedRepeatWhileServerRefuses(self) -> None:
        """
        While the server refuses new callbacks (max_calls, overload), the
        repeat of an ended one still gets its ACK ok and RESPONSE.
        """
        protocol, transport, manager, _ = makeProtocol()
        protocol.datagramReceived(REQUEST, PEER)
        manager.calls[0].finish(8)
        del transport.written[:]
        manager.admit = _refuse
        protocol.datagramReceived(REQUEST, PEER)
        protocol.datagramReceived(
            b"REQUEST: id=5678;user1=100;user2=101;duration=60;", PEER
        )
        self.assertEqual(
            transport.written,
            [
                (ACK_OK, PEER),
                (RESPONSE % 8, PEER),
                (b"ACK: id=5678;code=fail;", PEER),
            ],
        )


class StoreBacklogTests(SynchronousTestCase):
    """
    A store whose writer lags far behind refuses new callbacks, not repeats.
    """

    def test_backlogRefusesNewCallbacks(self) -> None:
        """
        With more writes waiting than MAX_STORE_BACKLOG, a new REQUEST gets
        code=fail and places no call; the repeat of an ended callback still
        gets its ACK and RESPONSE; once the backlog is gone, new REQUESTs are
        accepted again.
        """
        from callback_tw.iif.protocol import MAX_STORE_BACKLOG

        protocol, transport, manager, _ = makeProtocol()
        protocol.datagramReceived(REQUEST, PEER)
        manager.calls[0].finish(4)
        del transport.written[:]
        protocol.store.pendingWrites = MAX_STORE_BACKLOG + 1
        other = b"REQUEST: id=5678;user1=100;user2=101;duration=60;"
        protocol.datagramReceived(other, PEER)
        protocol.datagramReceived(REQUEST, PEER)
        self.assertEqual(
            transport.written,
            [
                (b"ACK: id=5678;code=fail;", PEER),
                (ACK_OK, PEER),
                (RESPONSE % 4, PEER),
            ],
        )
        self.assertEqual(len(manager.calls), 1)
        protocol.store.pendingWrites = 0
        protocol.datagramReceived(other, PEER)
        self.assertEqual(transport.written[-1], (b"ACK: id=5678;code=ok;", PEER))
        self.assertEqual(len(manager.calls), 2)


class LookupBoundTests(SynchronousTestCase):
    """
    Refusals ask the store whether the id is known, but never with more than
    MAX_LOOKUPS reads in flight: a flood at a limit cannot queue reads.
    """

    def test_floodAtLimitBounded(self) -> None:
        """
        While MAX_LOOKUPS reads are unanswered, one more refused REQUEST gets
        code=fail at once without a read; when the reads come back, the
        refusals they were for are answered.
        """
        from twisted.internet.defer import Deferred

        from callback_tw.iif.repeats import MAX_LOOKUPS

        protocol, transport, manager, _ = makeProtocol()
        reads: list[Deferred] = []

        def lookup(callbackId: str) -> Deferred:
            d: Deferred = Deferred()
            reads.append(d)
            return d

        protocol.store.lookup = lookup
        manager.admit = _refuse
        for n in range(MAX_LOOKUPS + 1):
            protocol.datagramReceived(
                b"REQUEST: id=f%d;user1=100;user2=101;duration=60;" % n, PEER
            )
        self.assertEqual(len(reads), MAX_LOOKUPS)
        last = b"ACK: id=f%d;code=fail;" % MAX_LOOKUPS
        self.assertEqual(transport.written, [(last, PEER)])
        for d in reads:
            d.callback(None)
        self.assertEqual(len(transport.written), MAX_LOOKUPS + 1)
        self.assertTrue(all(b"code=fail" in data for data, _ in transport.written))
        self.assertEqual(manager.calls, [])


def _refuse(request: object) -> None:
    raise CallbackRefused("max_calls (1) reached")


class SeveralServersTests(SynchronousTestCase):
    """
    Two servers on one database share the id space.
    """

    def test_otherServersCallback(self) -> None:
        """
        The same REQUEST to a second server gets code=ok, places no call and
        sends no RESPONSE: the owner does.
        """
        protocol1, transport1, manager1, _ = makeProtocol()
        protocol1.datagramReceived(REQUEST, PEER)
        store2 = MemoryStore("srv2", rows=protocol1.store.rows)
        protocol2, transport2, manager2, _ = makeProtocol(store=store2)
        protocol2.datagramReceived(REQUEST, PEER)
        self.assertEqual(transport2.written, [(ACK_OK, PEER)])
        self.assertEqual(manager2.calls, [])
        manager1.calls[0].finish(30)
        protocol2.datagramReceived(REQUEST, PEER)
        self.assertEqual(transport2.written[1:], [(ACK_OK, PEER)])
        self.assertEqual(transport1.written[-1], (RESPONSE % 30, PEER))


def _record(callbackId: str) -> CallbackRecord:
    return CallbackRecord(
        callbackId,
        "srv1",
        "127.0.0.1",
        "127.0.0.1:6000",
        "100",
        "101",
        60,
        None,
        None,
        None,
        "accepted",
        0.0,
    )


class QueuedResponseTests(SynchronousTestCase):
    """
    Recovery runs before the IIF port opens; its RESPONSEs wait for it.
    """

    def test_sentWhenThePortOpens(self) -> None:
        """
        A RESPONSE resent before the port is open goes out, from the port,
        as soon as it opens, and is then recorded as sent.
        """
        from twisted.internet.task import Clock
        from twisted.internet.testing import FakeDatagramTransport

        from callback_tw.iif.protocol import IIFProtocol
        from tests.iifhelpers import FakeManager

        store = MemoryStore()
        store.rows["9"] = dataclasses.replace(
            _record("9"), endedAt=1.0, realDuration=12
        )
        protocol = IIFProtocol(FakeManager(), [PEER], 60, reactor=Clock(), store=store)
        protocol.resendResponse(store.rows["9"])
        self.assertIsNone(store.rows["9"].responseSentAt)
        transport = FakeDatagramTransport()
        protocol.makeConnection(transport)
        self.assertEqual(
            transport.written, [(b"RESPONSE: id=9;real_duration=12;", PEER)]
        )
        self.assertIsNotNone(store.rows["9"].responseSentAt)
