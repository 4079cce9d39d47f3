"""
Tests for L{callback_tw.callback.call}: the state machine of one callback,
with fake legs and a Clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from callback_tw.callback.call import CallbackCall, CallResult, roundSeconds
from callback_tw.callback.errors import CallbackRefused
from callback_tw.callback.manager import CallbackManager
from callback_tw.iif.message import Request
from callback_tw.sip.leg import LegEnd, ReInviteFailed
from tests.siphelpers import farSdp, originVersion


@dataclass
class FakeRtp:
    host: str
    port: int
    closed: bool = False

    def close(self) -> None:
        self.closed = True


class FakeMedia:
    def __init__(self) -> None:
        self.ports: list[FakeRtp] = []

    def openPort(self) -> FakeRtp:
        port = FakeRtp("127.0.0.1", 40000 + 2 * len(self.ports))
        self.ports.append(port)
        return port


@dataclass
class FakeLeg:
    user: str
    offer: str
    listener: object
    name: str
    state: str = "calling"
    remoteSdp: str | None = None
    hangUps: list = field(default_factory=list)
    updates: list = field(default_factory=list)

    def hangUp(self, code=None, text=None) -> None:
        self.hangUps.append((code, text))
        self.state = "ended"

    def reInvite(self, sdp: str) -> Deferred:
        d: Deferred = Deferred()
        self.updates.append((sdp, d))
        return d

    def detach(self) -> None:
        self.detached = True

    # what the far end does
    def answer(self, sdp: str) -> None:
        self.state = "answered"
        self.remoteSdp = sdp
        self.listener.legAnswered(self, sdp)

    def fail(self, code: int, reason: str) -> None:
        self.state = "ended"
        self.listener.legEnded(self, LegEnd(code, reason, True, False))

    def hangUpRemote(self) -> None:
        self.state = "ended"
        self.listener.legEnded(self, LegEnd(200, "remote hang-up", True, True))


class FakeDialer:
    sdpHost = "127.0.0.1"

    def __init__(self) -> None:
        self.legs: list[FakeLeg] = []
        self.fail = False

    def dial(self, user, offer, listener, name="", caller=None):
        if self.fail:
            raise RuntimeError("SIP stack down")
        leg = FakeLeg(user, offer, listener, name)
        leg.caller = caller
        self.legs.append(leg)
        return leg


def request(**kw) -> Request:
    values = dict(callbackId="1234", user1="100", user2="101", duration=60)
    values.update(kw)
    return Request(**values)


PCMU1 = farSdp(port=6000, codec=(0, "PCMU"))
PCMU2 = farSdp(port=7000, codec=(0, "PCMU"), host="127.0.0.2")
PCMA2 = farSdp(port=7000, codec=(8, "PCMA"))


class CallbackCallTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.dialer = FakeDialer()
        self.media = FakeMedia()

    def start(self, duration: float = 60, **kw) -> CallbackCall:
        call = CallbackCall(
            request(**kw), self.dialer, self.media, duration, self.clock
        )
        call.start()
        return call

    def joinedCall(
        self, duration: float = 60, user2At: float = 0.0
    ) -> tuple[CallbackCall, FakeLeg, FakeLeg]:
        call = self.start(duration)
        leg1 = self.dialer.legs[0]
        leg1.answer(PCMU1)
        self.clock.advance(user2At)
        leg2 = self.dialer.legs[1]
        leg2.answer(PCMU2)
        leg1.updates[0][1].callback(farSdp(port=6002, version=2))
        leg2.updates[0][1].callback(PCMU2)
        self.assertEqual(call.state, "joined")
        return call, leg1, leg2

    def test_acceptedAndUser1Called(self) -> None:
        """
        Starting a callback fires C{accepted} at once and calls user1 only,
        with an SDP offer on a real RTP port.
        """
        call = self.start()
        self.assertIsNone(self.successResultOf(call.accepted))
        self.assertEqual([leg.user for leg in self.dialer.legs], ["100"])
        self.assertIn(
            f"m=audio {self.media.ports[0].port} RTP/AVP 0 8 101",
            self.dialer.legs[0].offer,
        )
        self.assertNoResult(call.finished)

    def test_user2CalledAfterUser1Answers(self) -> None:
        """user2 is dialled when user1 answers, not before."""
        self.start()
        self.dialer.legs[0].state = "ringing"
        self.dialer.legs[0].listener.legRinging(self.dialer.legs[0])
        self.clock.advance(5)
        self.assertEqual(len(self.dialer.legs), 1)
        self.dialer.legs[0].answer(PCMU1)
        self.assertEqual([leg.user for leg in self.dialer.legs], ["100", "101"])

    def test_user2DialledWithUser1AsCaller(self) -> None:
        """
        user1 is dialled with no caller of its own; user2 with user1's
        number as the caller it may show (the dialer's caller ID policy
        decides).
        """
        self.start()
        self.dialer.legs[0].answer(PCMU1)
        self.assertEqual(
            [(leg.user, leg.caller) for leg in self.dialer.legs],
            [("100", None), ("101", "100")],
        )

    def test_durationFromUser1Answer(self) -> None:
        """
        The duration timer starts at user1's answer: with duration 10,
        user1 answering at 5 and user2 at 8, both legs are hung up at 15
        and real_duration is 7 (from user2's answer).
        """
        call = self.start(duration=10)
        leg1 = self.dialer.legs[0]
        self.clock.advance(5)
        leg1.answer(PCMU1)
        self.clock.advance(3)
        leg2 = self.dialer.legs[1]
        leg2.answer(PCMU2)
        leg1.updates[0][1].callback(PCMU1)
        leg2.updates[0][1].callback(PCMU2)
        self.clock.advance(6.99)
        self.assertNoResult(call.finished)
        self.clock.advance(0.01)
        result = self.successResultOf(call.finished)
        self.assertEqual(result, CallResult(7, "duration limit"))
        self.assertEqual(leg1.hangUps, [(None, None)])
        self.assertEqual(leg2.hangUps, [(None, None)])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_user1Fails(self) -> None:
        """
        user1 busy / declining / not found / not answering: user2 is never
        called and real_duration is 0.
        """
        for code, reason, word in [
            (486, "Busy Here", "busy"),
            (603, "Decline", "declined"),
            (404, "Not Found", "not found"),
            (408, "no answer", "no answer"),
        ]:
            self.dialer.legs.clear()
            call = self.start()
            self.dialer.legs[0].fail(code, reason)
            result = self.successResultOf(call.finished)
            self.assertEqual(result.realDuration, 0)
            self.assertIn(f"user1 {word} ({code}", result.cause)
            self.assertEqual(len(self.dialer.legs), 1)
            self.assertEqual(self.dialer.legs[0].hangUps, [])
            self.assertTrue(all(p.closed for p in self.media.ports))
            self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_user2FailsByeWithReason(self) -> None:
        """
        When user2 fails, user1 gets a BYE carrying leg 2's status as its
        Reason, the duration timer stops and real_duration is 0.
        """
        call = self.start()
        self.dialer.legs[0].answer(PCMU1)
        self.dialer.legs[1].fail(486, "Busy Here")
        self.assertEqual(self.dialer.legs[0].hangUps, [(486, "Busy Here")])
        result = self.successResultOf(call.finished)
        self.assertEqual(result.realDuration, 0)
        self.assertIn("user2 busy", result.cause)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_joinOffersEachSideTheOther(self) -> None:
        """
        The join re-INVITEs user1 with user2's media under leg 1's origin
        (same session, next version), then user2 with user1's answer under
        leg 2's origin; the RTP ports are released once joined.
        """
        call = self.start()
        leg1 = self.dialer.legs[0]
        leg1.answer(PCMU1)
        leg2 = self.dialer.legs[1]
        leg2.answer(PCMU2)
        self.assertEqual(call.state, "joining")
        offer1, d1 = leg1.updates[0]
        self.assertIn("c=IN IP4 127.0.0.2", offer1)
        self.assertIn("m=audio 7000 RTP/AVP 0", offer1)
        session, version = originVersion(leg1.offer)
        self.assertEqual(originVersion(offer1), (session, version + 1))
        self.assertEqual(leg2.updates, [])
        answer1 = farSdp(port=6002, version=2)
        d1.callback(answer1)
        offer2, d2 = leg2.updates[0]
        self.assertIn("m=audio 6002 RTP/AVP 0", offer2)
        session2, version2 = originVersion(leg2.offer)
        self.assertEqual(originVersion(offer2), (session2, version2 + 1))
        self.assertFalse(any(p.closed for p in self.media.ports))
        d2.callback(PCMU2)
        self.assertEqual(call.state, "joined")
        self.assertTrue(all(p.closed for p in self.media.ports))
        self.assertEqual(len(leg1.updates), 1)

    def test_user2MovesMedia(self) -> None:
        """If user2's answer to the join names another port, user1 is updated again."""
        call = self.start()
        leg1 = self.dialer.legs[0]
        leg1.answer(PCMU1)
        leg2 = self.dialer.legs[1]
        leg2.answer(PCMU2)
        leg1.updates[0][1].callback(PCMU1)
        leg2.updates[0][1].callback(farSdp(port=7100, host="127.0.0.2"))
        self.assertEqual(call.state, "joining")
        self.assertIn("m=audio 7100", leg1.updates[1][0])
        leg1.updates[1][1].callback(PCMU1)
        self.assertEqual(call.state, "joined")

    def test_hangUpAfterJoin(self) -> None:
        """
        Either party hanging up after the join: BYE to the other, timer
        cancelled, real_duration from user2's answer rounded to nearest.
        """
        for hangingUp in (0, 1):
            self.dialer.legs.clear()
            call, leg1, leg2 = self.joinedCall(duration=100, user2At=2)
            self.clock.advance(12.4)
            (leg1, leg2)[hangingUp].hangUpRemote()
            other = (leg1, leg2)[1 - hangingUp]
            self.assertEqual(other.hangUps, [(None, None)])
            result = self.successResultOf(call.finished)
            self.assertEqual(result.realDuration, 12)
            self.assertEqual(result.cause, f"user{hangingUp + 1} hung up")
            self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_durationWhileUser2Rings(self) -> None:
        """The timer firing while user2 rings cancels leg 2 and hangs up leg 1."""
        call = self.start(duration=5)
        leg1 = self.dialer.legs[0]
        leg1.answer(PCMU1)
        leg2 = self.dialer.legs[1]
        leg2.state = "ringing"
        self.clock.advance(5)
        self.assertEqual(leg1.hangUps, [(None, None)])
        self.assertEqual(leg2.hangUps, [(None, None)])
        self.assertEqual(
            self.successResultOf(call.finished), CallResult(0, "duration limit")
        )

    def test_noCommonCodec(self) -> None:
        """
        When the parties' answers share no voice codec the join is not
        attempted: both legs are released with a 488 Reason.
        """
        call = self.start()
        leg1 = self.dialer.legs[0]
        leg1.answer(PCMU1)
        leg2 = self.dialer.legs[1]
        leg2.answer(PCMA2)
        self.assertEqual(leg1.updates, [])
        self.assertEqual(leg1.hangUps, [(488, "Not Acceptable Here")])
        self.assertEqual(leg2.hangUps, [(488, "Not Acceptable Here")])
        result = self.successResultOf(call.finished)
        self.assertEqual(result.realDuration, 0)
        self.assertIn("share no codec", result.cause)

    def test_joinRefused(self) -> None:
        """A join re-INVITE refused by user1 releases both legs with that status."""
        call = self.start()
        leg1 = self.dialer.legs[0]
        leg1.answer(PCMU1)
        leg2 = self.dialer.legs[1]
        leg2.answer(PCMU2)
        leg1.updates[0][1].errback(ReInviteFailed(488, "Not Acceptable Here"))
        self.assertEqual(leg1.hangUps, [(488, "Not Acceptable Here")])
        self.assertEqual(leg2.hangUps, [(488, "Not Acceptable Here")])
        self.assertIn("join failed: 488", self.successResultOf(call.finished).cause)

    def test_cancel(self) -> None:
        """A CANCEL from the AS releases the ringing leg 1; real_duration 0."""
        call = self.start()
        self.assertTrue(call.cancel("cancelled by the application server"))
        self.assertEqual(self.dialer.legs[0].hangUps, [(None, None)])
        self.assertEqual(self.successResultOf(call.finished).realDuration, 0)
        self.assertFalse(call.cancel("again"))

    def test_finishedOnce(self) -> None:
        """Ends arriving after the release change nothing; one result only."""
        call, leg1, leg2 = self.joinedCall()
        self.clock.advance(3)
        leg1.hangUpRemote()
        leg2.listener.legEnded(leg2, LegEnd(200, "hung up", False, True))
        leg2.hangUpRemote()
        self.clock.advance(100)
        self.assertEqual(self.successResultOf(call.finished).realDuration, 3)

    def test_reinviteBeforeJoinAnsweredByUs(self) -> None:
        """Before the join we are the media end: a re-INVITE gets our own SDP."""
        self.start()
        leg1 = self.dialer.legs[0]
        leg1.answer(PCMU1)
        answer = self.successResultOf(leg1.listener.legReInvited(leg1, PCMU1))
        self.assertIn(f"m=audio {self.media.ports[0].port} ", answer)

    def test_reinviteAfterJoinRelayed(self) -> None:
        """
        After the join a party's re-INVITE (hold, say) is offered to the
        other party, and that party's answer returns under our origin.
        """
        call, leg1, leg2 = self.joinedCall()
        hold = farSdp(port=6004, version=3).replace(
            "a=rtpmap:0 PCMU/8000\r\n", "a=rtpmap:0 PCMU/8000\r\na=sendonly\r\n"
        )
        d = call.legReInvited(leg1, hold)
        offer, inner = leg2.updates[-1]
        self.assertIn("a=sendonly", offer)
        inner.callback(
            farSdp(port=7000, version=4).replace(
                "PCMU/8000\r\n", "PCMU/8000\r\na=recvonly\r\n"
            )
        )
        answer = self.successResultOf(d)
        self.assertIn("a=recvonly", answer)
        self.assertEqual(originVersion(answer)[0], originVersion(leg1.offer)[0])

    def test_dialFails(self) -> None:
        """If user1 cannot even be dialled, C{accepted} fails and the result is 0."""
        self.dialer.fail = True
        call = self.start()
        self.assertIn(
            "SIP stack down",
            self.failureResultOf(call.accepted, CallbackRefused).value.reason,
        )
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.successResultOf(call.finished).realDuration, 0)
        self.assertTrue(all(p.closed for p in self.media.ports))


class RoundingTests(SynchronousTestCase):
    def test_roundSeconds(self) -> None:
        """real_duration rounds to the nearest second, halves up."""
        self.assertEqual(
            [roundSeconds(x) for x in (0, 0.49, 0.5, 1.5, 2.5, 179.6, -0.1)],
            [0, 0, 1, 2, 3, 180, 0],
        )


class CallbackManagerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.dialer = FakeDialer()
        self.manager = CallbackManager(
            self.dialer, FakeMedia(), maxCalls=2, maxDuration=100, reactor=self.clock
        )

    def test_maxCalls(self) -> None:
        """One callback over max_calls is refused; a slot frees when one ends."""
        self.manager.startCallback(request(callbackId="a"))
        self.manager.startCallback(request(callbackId="b"))
        self.assertRaises(
            CallbackRefused, self.manager.startCallback, request(callbackId="c")
        )
        self.dialer.legs[0].fail(486, "Busy Here")
        self.manager.startCallback(request(callbackId="c"))
        self.assertEqual(sorted(self.manager.active), ["b", "c"])

    def test_runningIdRefused(self) -> None:
        """A second callback with a running id is refused."""
        self.manager.startCallback(request(callbackId="a"))
        self.assertRaises(
            CallbackRefused,
            self.manager.startCallback,
            request(callbackId="a", user2="102"),
        )

    def test_durationZeroMeansCap(self) -> None:
        """
        duration=0 means the cap (max_duration). Larger values never reach the
        manager: the IIF codec refuses them (tests.test_iif_protocol
        test_durationCappedByMaxDuration, tests.test_service).
        """
        call = self.manager.startCallback(request(callbackId="d0", duration=0))
        call.legs["leg1"].answer(PCMU1)
        self.assertEqual(max(c.getTime() for c in self.clock.getDelayedCalls()), 100)
        call.cancel("test")

    def test_cannotCallUser1Refused(self) -> None:
        """
        When user1 cannot even be called, the callback is refused (the AS gets
        code=fail) and nothing of it stays running.
        """
        self.dialer.fail = True
        exc = self.assertRaises(
            CallbackRefused, self.manager.startCallback, request(callbackId="a")
        )
        self.assertIn("SIP stack down", exc.reason)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.manager.active, {})
        self.assertIsNone(self.manager.runningCallback("a"))

    def test_runningCallback(self) -> None:
        """A running callback is found by its id until it ends."""
        call = self.manager.startCallback(request(callbackId="a"))
        self.assertIs(self.manager.runningCallback("a"), call)
        self.assertIsNone(self.manager.runningCallback("b"))
        call.cancel("test")
        self.assertIsNone(self.manager.runningCallback("a"))

    def test_cancelCallback(self) -> None:
        """cancelCallback releases a running id and says False for others."""
        call = self.manager.startCallback(request(callbackId="a"))
        self.assertFalse(self.manager.cancelCallback("zzz"))
        self.assertTrue(self.manager.cancelCallback("a"))
        self.assertEqual(self.successResultOf(call.finished).realDuration, 0)
        self.assertFalse(self.manager.cancelCallback("a"))

    def test_releaseAll(self) -> None:
        """
        releaseAll hangs up every callback, each has reported its result
        when it returns, and new ones are refused afterwards.
        """
        a = self.manager.startCallback(request(callbackId="a"))
        b = self.manager.startCallback(request(callbackId="b"))
        self.assertEqual(self.manager.releaseAll(), 2)
        self.assertEqual(self.dialer.legs[0].hangUps, [(None, None)])
        self.assertEqual(self.successResultOf(a.finished).cause, "server shutting down")
        self.successResultOf(b.finished)
        self.assertRaises(
            CallbackRefused, self.manager.startCallback, request(callbackId="c")
        )


class JoinTests(SynchronousTestCase):
    """
    The join: talk time counts from its completion, and it fails fast
    (C{join_timeout}).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.dialer = FakeDialer()
        self.media = FakeMedia()

    def start(self, joinTimeout: float = 8.0, duration: float = 60) -> CallbackCall:
        call = CallbackCall(
            request(),
            self.dialer,
            self.media,
            duration,
            self.clock,
            joinTimeout=joinTimeout,
        )
        call.start()
        return call

    def bothAnswered(self, **kw) -> tuple[CallbackCall, FakeLeg, FakeLeg]:
        call = self.start(**kw)
        leg1 = self.dialer.legs[0]
        leg1.answer(PCMU1)
        leg2 = self.dialer.legs[1]
        leg2.answer(PCMU2)
        return call, leg1, leg2

    def test_talkTimeFromJoin(self) -> None:
        """
        real_duration counts from the join's completion (user2's answer to
        its re-INVITE), not from user2's answer: joined 2.5 s after user2
        answered and released 5.4 s later, it reports 5.
        """
        call, leg1, leg2 = self.bothAnswered()
        self.clock.advance(1)
        leg1.updates[0][1].callback(farSdp(port=6002, version=2))
        self.clock.advance(1.5)
        leg2.updates[0][1].callback(PCMU2)
        self.assertEqual(call.state, "joined")
        self.clock.advance(5.4)
        leg1.hangUpRemote()
        result = self.successResultOf(call.finished)
        self.assertEqual(result.realDuration, 5)
        self.assertEqual(
            result.times,
            {"answered1At": 0, "answered2At": 0, "joinedAt": 2.5, "endedAt": 7.9},
        )

    def test_durationBeforeJoinReportsZero(self) -> None:
        """The duration limit reached during the join: never connected, 0."""
        call, leg1, leg2 = self.bothAnswered(duration=5, joinTimeout=8)
        self.clock.advance(4)
        leg1.updates[0][1].callback(farSdp(port=6002, version=2))
        self.clock.advance(1)
        result = self.successResultOf(call.finished)
        self.assertEqual(result, CallResult(0, "duration limit"))
        self.assertNotIn("joinedAt", result.times)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_user1ReInviteNeverAnswered(self) -> None:
        """
        user1 never answers the join re-INVITE: after join_timeout both legs
        get a BYE with Reason 408, real_duration 0, cause "join failed...",
        user2 is never re-INVITEd and nothing stays scheduled.
        """
        call, leg1, leg2 = self.bothAnswered(joinTimeout=3)
        self.clock.advance(2.99)
        self.assertNoResult(call.finished)
        self.clock.advance(0.01)
        self.assertEqual(leg1.hangUps, [(408, "Request Timeout")])
        self.assertEqual(leg2.hangUps, [(408, "Request Timeout")])
        self.assertEqual(leg2.updates, [])
        result = self.successResultOf(call.finished)
        self.assertEqual(result.realDuration, 0)
        self.assertEqual(
            result.cause,
            "join failed: user1 did not answer the re-INVITE within 3 s",
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])
        # The leg fails the abandoned re-INVITE when it ends: nothing changes.
        leg1.updates[0][1].errback(ReInviteFailed(487, "hung up"))
        self.assertEqual(leg1.hangUps, [(408, "Request Timeout")])

    def test_user2ReInviteNeverAnswered(self) -> None:
        """
        The limit applies to each re-INVITE: user1 answering late (7 s)
        does not shorten user2's 8 s; user2 silent for 8 s ends the callback.
        """
        call, leg1, leg2 = self.bothAnswered()
        self.clock.advance(7)
        leg1.updates[0][1].callback(farSdp(port=6002, version=2))
        self.clock.advance(7.9)
        self.assertNoResult(call.finished)
        self.clock.advance(0.1)
        self.assertEqual(leg1.hangUps, [(408, "Request Timeout")])
        self.assertEqual(leg2.hangUps, [(408, "Request Timeout")])
        result = self.successResultOf(call.finished)
        self.assertEqual(result.realDuration, 0)
        self.assertTrue(result.cause.startswith("join failed: user2"))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_joinFailureAnswer(self) -> None:
        """
        A failure answer to user2's re-INVITE ends the callback at once with
        that status as both BYEs' Reason, real_duration 0, the timer gone.
        """
        call, leg1, leg2 = self.bothAnswered()
        leg1.updates[0][1].callback(farSdp(port=6002, version=2))
        leg2.updates[0][1].errback(ReInviteFailed(500, "Server Internal Error"))
        self.assertEqual(leg1.hangUps, [(500, "Server Internal Error")])
        self.assertEqual(leg2.hangUps, [(500, "Server Internal Error")])
        result = self.successResultOf(call.finished)
        self.assertEqual(result.realDuration, 0)
        self.assertEqual(result.cause, "join failed: 500 Server Internal Error")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_joinedCancelsTimeout(self) -> None:
        """Once joined no join timer is left: only the duration timer runs."""
        call, leg1, leg2 = self.bothAnswered(duration=30)
        leg1.updates[0][1].callback(farSdp(port=6002, version=2))
        leg2.updates[0][1].callback(PCMU2)
        self.assertEqual(call.state, "joined")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(30)
        self.assertEqual(self.successResultOf(call.finished).realDuration, 30)
