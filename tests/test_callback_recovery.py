"""
Tests for L{callback_tw.callback.recovery.Recovery}: what a restart does with
the callbacks a crash left unfinished.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from callback_tw.callback.recovery import RECOVERED, Recovery
from callback_tw.store import LegDialog, NewCallback, StoreUnavailable
from tests.storehelpers import MemoryStore


def _leg(callbackId: str, leg: int, state: str) -> LegDialog:
    return LegDialog(
        callbackId=callbackId,
        leg=leg,
        callId=f"{callbackId}-{leg}@127.0.0.1",
        localTag="l",
        remoteTag="r" if state != "trying" else None,
        localURI="sip:1000@127.0.0.1",
        remoteURI=f"sip:10{leg}@127.0.0.1",
        remoteTarget=f"sip:10{leg}@127.0.0.1:5070",
        routeSet=(),
        nextCSeq=3,
        inviteBranch="z9hG4bK-1",
        inviteCSeq=1,
        destination="127.0.0.1:5070",
        viaProvider=False,
        state=state,
    )


class RecoveryTests(SynchronousTestCase):
    """
    Recovery releases the legs, records the end and answers the AS.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.store = MemoryStore("srv1", clock=self.clock)
        self.released: list[tuple[Any, Any, float]] = []
        self.responses: list[Any] = []
        self.answers: dict[str, Deferred] = {}
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def release(self, stack: Any, state: Any, reason: Any, timeout: float) -> Deferred:
        self.released.append((state, reason, timeout))
        return self.answers.get(state.callId, succeed(200))

    def recovery(self) -> Recovery:
        return Recovery(
            self.store,
            "stack",
            self.responses.append,
            self.clock,
            release=self.release,
            dialogState=lambda leg: leg,
        )

    def accept(self, callbackId: str, serverId: str = "srv1", **values: Any) -> None:
        store = (
            self.store
            if serverId == "srv1"
            else MemoryStore(serverId, clock=self.clock, rows=self.store.rows)
        )
        new = NewCallback(callbackId, "as1", "127.0.0.1:6000", "100", "101", 60)
        store.accept(new, at=900.0)
        if values:
            store.update(callbackId, **values)

    def test_joinedCallback(self) -> None:
        """
        A joined callback: each answered leg gets a BYE with Reason 500
        "server restarted"; its end is stored as "recovered" with the
        talk time from the join (951.0) up to the last checkpoint (991.6),
        and its RESPONSE goes out with that real_duration.
        """
        self.accept(
            "k1", state="joined", answered2At=950.0, checkpointAt=991.6, joinedAt=951.0
        )
        self.store.upsertLeg(_leg("k1", 1, "answered"))
        self.store.upsertLeg(_leg("k1", 2, "answered"))
        result = self.successResultOf(self.recovery().run())
        self.assertEqual(result, (1, 0))
        self.assertEqual(
            [(s.callId, r) for s, r, _ in self.released],
            [
                ("k1-1@127.0.0.1", (500, "server restarted")),
                ("k1-2@127.0.0.1", (500, "server restarted")),
            ],
        )
        record = self.store.rows["k1"]
        self.assertEqual((record.endCause, record.realDuration), (RECOVERED, 41))
        self.assertEqual((record.leg1Status, record.leg2Status), (200, 200))
        [response] = self.responses
        self.assertEqual((response.id, response.realDuration), ("k1", 41))
        lines = [e for e in self.events if "finished: {legs}" in e["log_format"]]
        self.assertEqual(len(lines), 1)
        [summary] = [
            e for e in self.events if "unfinished callbacks" in e["log_format"]
        ]
        self.assertEqual((summary["finished"], summary["n"]), (1, 1))

    def test_ringingCallback(self) -> None:
        """
        A callback whose user1 rang: its leg is released (a CANCEL, which
        releaseDialog chooses for a ringing dialog), real_duration 0, and a
        callback that never placed a leg is just ended and answered.
        """
        self.accept("k2", state="calling1")
        self.store.upsertLeg(_leg("k2", 1, "ringing"))
        self.accept("k3")
        self.successResultOf(self.recovery().run())
        self.assertEqual([s.state for s, _, _ in self.released], ["ringing"])
        self.assertEqual(
            [(r.id, r.realDuration) for r in self.responses], [("k2", 0), ("k3", 0)]
        )
        self.assertEqual(self.store.rows["k2"].leg1Status, 487)
        self.assertTrue(self.store.rows["k3"].ended)

    def test_endedLegsLeftAlone(self) -> None:
        """
        A leg stored as ended gets nothing.
        """
        self.accept("k4", state="calling2", answered1At=950.0)
        self.store.upsertLeg(_leg("k4", 1, "answered"))
        self.store.upsertLeg(_leg("k4", 2, "ended"))
        self.successResultOf(self.recovery().run())
        self.assertEqual([s.callId for s, _, _ in self.released], ["k4-1@127.0.0.1"])

    def test_boundedByTheRelease(self) -> None:
        """
        The end waits for the legs' releases (bounded by releaseDialog's own
        timeout): no RESPONSE before the far ends are released.
        """
        self.accept("k5", state="joined", answered2At=990.0)
        self.store.upsertLeg(_leg("k5", 1, "answered"))
        self.answers["k5-1@127.0.0.1"] = pending = Deferred()
        d = self.recovery().run()
        self.assertNoResult(d)
        self.assertEqual(self.responses, [])
        pending.callback(408)
        self.assertEqual(self.successResultOf(d), (1, 0))
        self.assertEqual(len(self.responses), 1)

    def test_idempotent(self) -> None:
        """
        A second run finds nothing to do: no release, no RESPONSE.
        """
        self.accept("k1", state="joined", answered2At=950.0)
        self.store.upsertLeg(_leg("k1", 1, "answered"))
        self.successResultOf(self.recovery().run())
        self.store.markResponseSent("k1")
        self.released.clear()
        self.responses.clear()
        self.assertEqual(self.successResultOf(self.recovery().run()), (0, 0))
        self.assertEqual((self.released, self.responses), ([], []))

    def test_endNotStoredIsRecoveredNextTime(self) -> None:
        """
        When its end cannot be stored, the callback gets no RESPONSE now and
        stays unfinished: the next start recovers it again.
        """
        self.accept("k1", state="calling1")
        self.store.markEnded = lambda *a, **k: fail(StoreUnavailable("down"))
        self.assertEqual(self.successResultOf(self.recovery().run()), (0, 0))
        self.assertEqual(self.responses, [])
        self.assertFalse(self.store.rows["k1"].ended)

    def test_onlyThisServer(self) -> None:
        """
        Another server's unfinished callbacks are not touched.
        """
        self.accept("theirs", serverId="srv2", state="joined", answered2At=950.0)
        self.successResultOf(self.recovery().run())
        self.assertEqual(self.responses, [])
        self.assertFalse(self.store.rows["theirs"].ended)

    def test_responseNeverSent(self) -> None:
        """
        A callback that ended but whose RESPONSE is not recorded as sent gets
        its RESPONSE, with its stored real_duration; one already answered
        does not.
        """
        self.accept("k6")
        self.store.markEnded("k6", "user2 hung up", 33)
        self.accept("k7")
        self.store.markEnded("k7", "user2 hung up", 44)
        self.store.markResponseSent("k7")
        self.assertEqual(self.successResultOf(self.recovery().run()), (0, 1))
        self.assertEqual(
            [(r.id, r.realDuration) for r in self.responses],
            [("k6", 33)],
        )

    def test_joinedCountsToTheLastHeartbeat(self) -> None:
        """
        A callback joined at 951.0 while the crashed run's heartbeat last
        said "alive" at 991.6 (its own checkpoint is the join's): recovery
        settles its checkpoint to that heartbeat before reading, so its end
        and RESPONSE say real_duration 41, and the CDR's checkpoint_at shows
        the heartbeat used.
        """
        crashed = MemoryStore(
            "srv1", self.clock, rows=self.store.rows, servers=self.store.servers
        )
        crashed.heartbeat(at=899.0)
        self.accept("k1", state="joined", joinedAt=951.0, checkpointAt=951.0)
        crashed.heartbeat(at=991.6)
        self.store.upsertLeg(_leg("k1", 1, "answered"))
        before = len(self.store.writes)
        self.assertEqual(self.successResultOf(self.recovery().run()), (1, 0))
        self.assertEqual(self.store.writes[before][0], "settleCheckpoints")
        record = self.store.rows["k1"]
        self.assertEqual(
            (record.endCause, record.realDuration, record.checkpointAt),
            (RECOVERED, 41, 991.6),
        )
        [response] = self.responses
        self.assertEqual((response.id, response.realDuration), ("k1", 41))

    def test_crashDuringRecoveryCountsTheSame(self) -> None:
        """
        Recovery interrupted after settling (its end not stored) and run
        again, after the new run's heartbeat moved on: the callback still
        counts up to the crashed run's heartbeat, never the downtime or the
        new run's uptime.
        """
        crashed = MemoryStore(
            "srv1", self.clock, rows=self.store.rows, servers=self.store.servers
        )
        crashed.heartbeat(at=899.0)
        self.accept("k1", state="joined", joinedAt=951.0, checkpointAt=951.0)
        crashed.heartbeat(at=991.6)
        markEnded = self.store.markEnded
        self.store.markEnded = lambda *a, **k: fail(StoreUnavailable("down"))
        self.assertEqual(self.successResultOf(self.recovery().run()), (0, 0))
        self.store.heartbeat(at=1000.0)
        self.store.heartbeat(at=4000.0)
        self.store.markEnded = markEnded
        self.assertEqual(self.successResultOf(self.recovery().run()), (1, 0))
        [response] = self.responses
        self.assertEqual((response.id, response.realDuration), ("k1", 41))
