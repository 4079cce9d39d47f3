"""
Tests for what a running callback writes to the store: its progress, its
legs' dialogs and, through the manager, the server's heartbeat every second
(what a joined callback's talk time counts up to after a crash).
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from callback_tw.callback.call import CallbackCall
from callback_tw.callback.manager import CallbackManager
from callback_tw.sip.dialogs import DialogStage, DialogState
from callback_tw.store import NewCallback
from tests.storehelpers import MemoryStore
from tests.test_callback_call import (
    PCMU1,
    PCMU2,
    FakeDialer,
    FakeMedia,
    farSdp,
    request,
)


def _state(stage: str, cseq: int = 2) -> DialogState:
    return DialogState(
        callId="c1@127.0.0.1",
        localTag="l1",
        remoteTag=None if stage == "trying" else "r1",
        localURI="sip:1000@127.0.0.1",
        remoteURI="sip:100@127.0.0.1",
        remoteTarget="sip:100@127.0.0.1:5070",
        routeSet=("<sip:p@127.0.0.1;lr>",),
        nextCSeq=cseq,
        inviteBranch="z9hG4bK-1",
        inviteCSeq=1,
        destination="127.0.0.1:5070",
        viaProvider=False,
        state=DialogStage(stage),
    )


class CallbackStoreTests(SynchronousTestCase):
    """
    Each step of a callback is written to the store as it happens.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(100)
        self.store = MemoryStore(clock=self.clock)
        self.store.accept(
            NewCallback("1234", "as1", "127.0.0.1:6000", "100", "101", 60)
        )
        self.dialer = FakeDialer()

    def start(self) -> CallbackCall:
        call = CallbackCall(
            request(), self.dialer, FakeMedia(), 60, self.clock, store=self.store
        )
        call.start()
        return call

    def test_progress(self) -> None:
        """
        calling1, user1's answer (and user2 called), user2's answer, the join:
        each is stored with its time.
        """
        self.start()
        self.assertEqual(self.store.rows["1234"].state, "calling1")
        leg1 = self.dialer.legs[0]
        self.clock.advance(2)
        leg1.answer(PCMU1)
        record = self.store.rows["1234"]
        self.assertEqual(
            (record.state, record.answered1At, record.called2At),
            ("calling2", 102.0, 102.0),
        )
        self.clock.advance(3)
        leg2 = self.dialer.legs[1]
        leg2.answer(PCMU2)
        self.assertEqual(self.store.rows["1234"].answered2At, 105.0)
        self.clock.advance(1)
        leg1.updates[0][1].callback(farSdp(port=6002, version=2))
        leg2.updates[0][1].callback(PCMU2)
        record = self.store.rows["1234"]
        self.assertEqual(
            (record.state, record.joinedAt, record.checkpointAt),
            ("joined", 106.0, 106.0),
        )

    def test_legDialogs(self) -> None:
        """
        A leg's dialog is stored (upserted) each time it changes, under the
        callback's id and the leg's number.
        """
        call = self.start()
        leg1 = self.dialer.legs[0]
        call.legDialogChanged(leg1, _state("ringing"))
        call.legDialogChanged(leg1, _state("answered", cseq=3))
        [dialog] = self.store.legRows.values()
        self.assertEqual((dialog.callbackId, dialog.leg), ("1234", 1))
        self.assertEqual((dialog.state, dialog.nextCSeq), ("answered", 3))
        self.assertEqual(dialog.routeSet, ("<sip:p@127.0.0.1;lr>",))

    def test_endValues(self) -> None:
        """
        The result carries the legs' final statuses: user2's busy, and the
        BYE we sent user1.
        """
        call = self.start()
        self.dialer.legs[0].answer(PCMU1)
        self.dialer.legs[1].fail(486, "Busy Here")
        result = self.successResultOf(call.finished)
        self.assertEqual(
            result.values,
            {
                "leg2Status": 486,
                "leg2Reason": "Busy Here",
                "leg1Status": 200,
                "leg1Reason": "user2 busy (486 Busy Here)",
            },
        )

    def test_oneHeartbeatWaitsAtATime(self) -> None:
        """
        While the store holds a heartbeat back (down), the ticks after it
        queue nothing more; when it fails, one warning says so, and the
        next tick writes again.
        """
        from twisted.internet.defer import Deferred
        from twisted.logger import globalLogPublisher

        from callback_tw.store.errors import StoreUnavailable

        waiting: list[Deferred] = []

        class HeldStore:
            def heartbeat(self) -> Deferred:
                d: Deferred = Deferred()
                waiting.append(d)
                return d

        manager = CallbackManager(
            self.dialer, FakeMedia(), 10, 3600, self.clock, store=HeldStore()
        )
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        for _ in range(3600):
            manager.heartbeat()
            self.clock.advance(1)
        self.assertEqual(len(waiting), 1)
        waiting[0].errback(StoreUnavailable("store sqlite:///x.db is closed"))
        warnings = [e for e in events if "heartbeat not stored" in e["log_format"]]
        self.assertEqual(len(warnings), 1)
        manager.heartbeat()
        self.assertEqual(len(waiting), 2)
        waiting[1].callback(None)
        manager.heartbeat()
        self.assertEqual(len(waiting), 3)

    def test_heartbeatWhileJoined(self) -> None:
        """
        The manager's heartbeat writes the server's time once, however many
        callbacks run; after a crash, recovery's settling makes it the
        checkpoint of every joined callback, and only of those.
        """
        manager = CallbackManager(
            self.dialer, FakeMedia(), 10, 3600, self.clock, store=self.store
        )
        # The service starts the heartbeat before the IIF serves.
        manager.heartbeat()
        self.store.accept(NewCallback("2", "as1", "127.0.0.1:6000", "100", "101", 60))
        manager.startCallback(request())
        manager.startCallback(request(callbackId="2"))
        leg1, other = self.dialer.legs
        leg1.answer(PCMU1)
        leg2 = self.dialer.legs[2]
        leg2.answer(PCMU2)
        leg1.updates[0][1].callback(farSdp(port=6002, version=2))
        leg2.updates[0][1].callback(PCMU2)
        self.clock.advance(1)
        before = len(self.store.writes)
        manager.heartbeat()
        self.assertEqual(
            self.store.writes[before:], [("heartbeat", "srv1", {"aliveAt": 101.0})]
        )
        self.assertEqual(self.successResultOf(self.store.settleCheckpoints()), 1)
        self.assertEqual(self.store.rows["1234"].checkpointAt, 101.0)
        self.assertIsNone(self.store.rows["2"].checkpointAt)
