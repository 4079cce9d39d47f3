"""
Tests for L{callback_tw.callback.announcer} within a callback: what each
party hears before the join, and when the join happens.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from callback_tw.callback.announcer import Announcer
from callback_tw.callback.call import CallbackCall
from callback_tw.callback.errors import CallbackRefused
from callback_tw.callback.manager import CallbackManager
from callback_tw.config.values import PACKAGED_PROMPTS
from callback_tw.media.player import RTPScheduler
from callback_tw.media.prompts import PromptCatalogue
from tests.siphelpers import farSdp
from tests.test_callback_call import FakeDialer, request
from tests.test_media_player import parse

PROMPTS = PACKAGED_PROMPTS
_catalogue: PromptCatalogue | None = None


def catalogue() -> PromptCatalogue:
    global _catalogue
    if _catalogue is None:
        _catalogue = PromptCatalogue.load(PROMPTS)
    return _catalogue


class RecordingRtp:
    """An RTP port stand-in that records the packets written through it."""

    def __init__(self, clock: Clock, port: int) -> None:
        self.clock = clock
        self.host = "127.0.0.1"
        self.port = port
        self.sent: list[tuple[float, dict, tuple[str, int]]] = []
        self.closed = False

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        assert not self.closed, "packet written to a closed port"
        self.sent.append((self.clock.seconds(), parse(data), addr))

    def close(self) -> None:
        self.closed = True


class RecordingMedia:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.ports: list[RecordingRtp] = []

    def openPort(self) -> RecordingRtp:
        port = RecordingRtp(self.clock, 40000 + 2 * len(self.ports))
        self.ports.append(port)
        return port


USER1 = farSdp(port=6000, codec=(0, "PCMU"))
USER2_PCMU = farSdp(port=7000, codec=(0, "PCMU"))


class AnnouncerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.dialer = FakeDialer()
        self.media = RecordingMedia(self.clock)
        self.announcer = Announcer(
            catalogue(), RTPScheduler(self.clock), "00080002", ringback=(425, 1.0, 4.0)
        )

    def start(self, **kw) -> CallbackCall:
        call = CallbackCall(
            request(**kw), self.dialer, self.media, 60, self.clock, self.announcer
        )
        call.start()
        return call

    def elapse(self, seconds: float) -> None:
        for _ in range(round(seconds / 0.01)):
            self.clock.advance(0.01)

    def test_user1HearsAnnouncementThenRingback(self) -> None:
        """
        user1 hears the default announcement from its answer on, in the
        codec its answer chose, at the address of its answer, then ringback
        (a new talk-spurt, marker bit set) — while user2 is already being
        called.
        """
        self.start()
        self.dialer.legs[0].answer(USER1)
        self.assertEqual([leg.user for leg in self.dialer.legs], ["100", "101"])
        ann = catalogue().announcement("00080002", "PCMU")
        ring = catalogue().ringback(425, 1.0, 4.0, "PCMU")
        self.elapse(len(ann) * 0.02 + 0.5)
        sent = self.media.ports[0].sent
        self.assertEqual({addr for _, _, addr in sent}, {("127.0.0.1", 6000)})
        packets = [p for _, p, _ in sent]
        self.assertEqual({p["payloadType"] for p in packets}, {0})
        self.assertEqual([p["payload"] for p in packets[: len(ann)]], list(ann))
        self.assertEqual(packets[0]["marker"], 1)
        self.assertEqual(packets[len(ann)]["marker"], 1)
        self.assertEqual(
            [p["payload"] for p in packets[len(ann) :]],
            list(ring[: len(packets) - len(ann)]),
        )

    def test_requestAnnId1(self) -> None:
        """ann_id1 in the REQUEST replaces the default."""
        self.start(annId1="00080003")
        self.dialer.legs[0].answer(USER1)
        ann = catalogue().announcement("00080003", "PCMU")
        self.elapse(0.5)
        payloads = [p["payload"] for _, p, _ in self.media.ports[0].sent]
        self.assertEqual(payloads, list(ann[: len(payloads)]))

    def test_user2AnnouncementDigitsThenJoin(self) -> None:
        """
        user2 hears ann_id2 then ann_digit2 in its codec (PCMA here); the
        join re-INVITE goes out only after the last digit, and user1 hears
        ringback until then.
        """
        call = self.start(annId2="00080003", annDigit2="42")
        leg1 = self.dialer.legs[0]
        leg1.answer(USER1)
        leg2 = self.dialer.legs[1]
        leg2.answer(USER2_PCMU)
        expected = list(catalogue().announcement("00080003", "PCMU")) + list(
            catalogue().digits("42", "PCMU")
        )
        self.elapse(len(expected) * 0.02 - 0.1)
        self.assertEqual(leg1.updates, [])
        self.assertEqual(call.state, "joining")
        self.elapse(0.3)
        self.assertEqual(len(leg1.updates), 1)
        packets = [p for _, p, _ in self.media.ports[1].sent]
        self.assertEqual([p["payload"] for p in packets], expected)
        self.assertEqual(
            {addr for _, _, addr in self.media.ports[1].sent}, {("127.0.0.1", 7000)}
        )
        lastToUser1 = max(t for t, _, _ in self.media.ports[0].sent)
        lastToUser2 = max(t for t, _, _ in self.media.ports[1].sent)
        self.assertGreaterEqual(lastToUser1, lastToUser2 - 0.021)
        # The join stopped user1's ringback.
        count = len(self.media.ports[0].sent)
        self.elapse(1)
        self.assertEqual(len(self.media.ports[0].sent), count)

    def test_pcmaAnswer(self) -> None:
        """A leg whose answer chose PCMA hears A-law (payload type 8)."""
        self.start(annId2="00080003")
        self.dialer.legs[0].answer(farSdp(port=6000, codec=(8, "PCMA")))
        self.elapse(0.2)
        self.assertEqual(
            {p["payloadType"] for _, p, _ in self.media.ports[0].sent}, {8}
        )
        payloads = [p["payload"] for _, p, _ in self.media.ports[0].sent]
        self.assertEqual(
            payloads,
            list(catalogue().announcement("00080002", "PCMA")[: len(payloads)]),
        )

    def test_hangUpDuringAnnouncement(self) -> None:
        """
        user1 hanging up during its announcement ends the callback as
        usual: one result, the media stopped, nothing left scheduled.
        """
        call = self.start()
        leg1 = self.dialer.legs[0]
        leg1.answer(USER1)
        self.elapse(0.5)
        leg1.hangUpRemote()
        result = self.successResultOf(call.finished)
        self.assertEqual(result.realDuration, 0)
        count = len(self.media.ports[0].sent)
        self.elapse(1)
        self.assertEqual(len(self.media.ports[0].sent), count)
        self.assertTrue(all(p.closed for p in self.media.ports))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_user2HangsUpDuringAnnouncement(self) -> None:
        """user2 hanging up while it hears ann_id2: BYE to user1, no join, result 0."""
        call = self.start(annId2="00080003")
        leg1 = self.dialer.legs[0]
        leg1.answer(USER1)
        leg2 = self.dialer.legs[1]
        leg2.answer(USER2_PCMU)
        self.elapse(0.7)
        leg2.hangUpRemote()
        self.assertEqual(leg1.hangUps, [(None, None)])
        self.elapse(5)
        self.assertEqual(leg1.updates, [])
        self.assertEqual(self.successResultOf(call.finished).realDuration, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_user1AnnouncementHeardInFull(self) -> None:
        """
        user2 answering at once (no announcement of its own) does not cut
        user1's announcement: user1 receives every packet of 00080002, and
        the join re-INVITE goes out within 100 ms after its last packet.
        """
        call = self.start()
        leg1 = self.dialer.legs[0]
        leg1.answer(USER1)
        self.dialer.legs[1].answer(USER2_PCMU)
        ann = catalogue().announcement("00080002", "PCMU")
        self.assertEqual(call.state, "joining")
        while not leg1.updates:
            self.elapse(0.01)
            self.assertLess(self.clock.seconds(), 10)
        joinAt = self.clock.seconds()
        sent = [(t, p["payload"]) for t, p, _ in self.media.ports[0].sent]
        self.assertEqual([payload for _, payload in sent[: len(ann)]], list(ann))
        lastAnnPacket = sent[len(ann) - 1][0]
        self.assertLessEqual(joinAt - lastAnnPacket, 0.1)
        self.assertGreaterEqual(joinAt, lastAnnPacket)

    def test_joinWaitsForUser2LongerAnnouncement(self) -> None:
        """
        With ann_id2 + ann_digit2 longer than user1's announcement, the join
        waits for user2's last digit (within 100 ms), user1 hearing
        ringback after its announcement until then.
        """
        call = self.start(annId2="00080003", annDigit2="4242")
        leg1 = self.dialer.legs[0]
        leg1.answer(USER1)
        self.dialer.legs[1].answer(USER2_PCMU)
        ann1 = catalogue().announcement("00080002", "PCMU")
        toUser2 = list(catalogue().announcement("00080003", "PCMU")) + list(
            catalogue().digits("4242", "PCMU")
        )
        self.assertGreater(len(toUser2), len(ann1))
        while not leg1.updates:
            self.elapse(0.01)
            self.assertLess(self.clock.seconds(), 20)
        joinAt = self.clock.seconds()
        self.assertEqual(call.state, "joining")
        sent2 = self.media.ports[1].sent
        self.assertEqual([p["payload"] for _, p, _ in sent2], toUser2)
        self.assertLessEqual(joinAt - sent2[-1][0], 0.1)
        ring = catalogue().ringback(425, 1.0, 4.0, "PCMU")
        heard1 = [p["payload"] for _, p, _ in self.media.ports[0].sent]
        self.assertEqual(heard1[: len(ann1)], list(ann1))
        self.assertEqual(heard1[len(ann1) :], list(ring[: len(heard1) - len(ann1)]))

    def test_user1HangsUpDuringUser2Announcement(self) -> None:
        """
        user1 hanging up while user2 hears ann_id2: BYE to user2, no join,
        real_duration 0.
        """
        call = self.start(annId2="00080003")
        leg1 = self.dialer.legs[0]
        leg1.answer(USER1)
        leg2 = self.dialer.legs[1]
        leg2.answer(USER2_PCMU)
        self.elapse(1.5)
        leg1.hangUpRemote()
        self.assertEqual(leg2.hangUps, [(None, None)])
        self.elapse(5)
        self.assertEqual(leg2.updates, [])
        self.assertEqual(self.successResultOf(call.finished).realDuration, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_talkTimeAfterAnnouncement(self) -> None:
        """
        ann_id2 and ann_digit2 (4.4 s, longer than user1's 2.6 s) before a
        5 s conversation report 5: announcement time is not talk time.
        """
        call = self.start(annId2="00080003", annDigit2="4242")
        leg1 = self.dialer.legs[0]
        leg1.answer(USER1)
        leg2 = self.dialer.legs[1]
        leg2.answer(USER2_PCMU)
        while not leg1.updates:
            self.elapse(0.01)
        self.assertGreaterEqual(self.clock.seconds(), 3)
        leg1.updates[0][1].callback(farSdp(port=6002, version=2))
        leg2.updates[0][1].callback(USER2_PCMU)
        self.assertEqual(call.state, "joined")
        self.elapse(5)
        leg2.hangUpRemote()
        self.assertEqual(self.successResultOf(call.finished).realDuration, 5)

    def test_noDefault(self) -> None:
        """With no default and no ann_id1, user1 hears only ringback."""
        self.announcer = Announcer(
            catalogue(), RTPScheduler(self.clock), "", ringback=(425, 1.0, 4.0)
        )
        self.start()
        self.dialer.legs[0].answer(USER1)
        self.elapse(0.2)
        payloads = [p["payload"] for _, p, _ in self.media.ports[0].sent]
        self.assertEqual(
            payloads, list(catalogue().ringback(425, 1.0, 4.0, "PCMU")[: len(payloads)])
        )

    def test_unknownAnnouncementRefused(self) -> None:
        """A REQUEST naming an announcement without a file is refused; no call."""
        manager = CallbackManager(
            self.dialer,
            self.media,
            10,
            100,
            self.clock,
            self.announcer,
            self.announcer.checkRequest,
        )
        for kw in ({"annId1": "12345678"}, {"annId2": "99999999"}):
            exc = self.assertRaises(
                CallbackRefused, manager.startCallback, request(**kw)
            )
            self.assertIn("no such announcement", exc.reason)
        self.assertEqual(self.dialer.legs, [])
