"""
End-to-end test of what the parties hear: the real server plays its
announcements, ringback and digits over RTP to receivers of this test, whose
ports the SIPp phones put in their SDP answers (C{scenarios/uas_media.xml}).
"""

from __future__ import annotations

import itertools
import math
import statistics
import struct
import time
import wave
from pathlib import Path
from typing import Any

from rtpsynth.RtpUtils import ulaw2linear
from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import TestCase

from callback_tw.config.values import PACKAGED_PROMPTS
from callback_tw.media.prompts import PromptCatalogue
from tests.e2e.loopback import sleep
from tests.e2e.peers import ASClient
from tests.e2e.processes import (
    SIPP,
    ServerProcess,
    SippUAS,
    logProcessOutput,
)
from tests.e2e.siplog import describeMessages, requestsOf

PROMPTS = Path(PACKAGED_PROMPTS)
SCENARIO = Path(__file__).parent / "scenarios" / "uas_media.xml"
RINGBACK = (425, 1.0, 4.0)


class RTPReceiver(DatagramProtocol):
    """Records every RTP packet with its arrival time."""

    def __init__(self) -> None:
        self.packets: list[tuple[float, dict]] = []

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        first, second, seq, ts, ssrc = struct.unpack("!BBHII", data[:12])
        self.packets.append(
            (
                time.time(),
                {
                    "version": first >> 6,
                    "marker": second >> 7,
                    "pt": second & 0x7F,
                    "seq": seq,
                    "ts": ts,
                    "ssrc": ssrc,
                    "payload": data[12:],
                },
            )
        )


def wavSamples(path: Path) -> list[int]:
    with wave.open(str(path)) as w:
        raw = w.readframes(w.getnframes())
    return list(struct.unpack(f"<{len(raw) // 2}h", raw))


def snr(reference: list[int], decoded: list[int]) -> float:
    """Signal-to-noise ratio in dB of C{decoded} against C{reference}."""
    signal = sum(x * x for x in reference)
    noise = sum((x - y) ** 2 for x, y in zip(reference, decoded, strict=False)) or 1
    return 10 * math.log10(signal / noise)


class MediaEndToEndTests(TestCase):
    timeout = 90

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        if SIPP is None:
            raise self.skipTest("sipp is not installed (Debian package sip-tester)")
        self.catalogue = PromptCatalogue.load(str(PROMPTS))
        self.rtp1, self.rtp2 = RTPReceiver(), RTPReceiver()
        ports = []
        for receiver in (self.rtp1, self.rtp2):
            port = reactor.listenUDP(0, receiver, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            ports.append(port.getHost().port)
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        self.uas = SippUAS(
            str(directory),
            scenario=SCENARIO,
            extraArgs=["-key", "rtp1", str(ports[0]), "-key", "rtp2", str(ports[1])],
        )
        self.addCleanup(
            lambda: logProcessOutput(self.uas, self.id()) if self.uas.pid else None
        )
        self.addCleanup(self.uas.stop)
        yield self.uas.start()
        self.client = ASClient(reactor)
        self.client.start()
        self.addCleanup(self.client.stop)
        on, off = RINGBACK[1], RINGBACK[2]
        self.server = ServerProcess(
            str(directory),
            self.uas.port,
            self.client.port,
            default_ann_id1="00080002",
            ringback_frequency=RINGBACK[0],
        )
        self.server.sections["media"]["ringback_cadence"] = f"{on},{off}"
        self.client.defaultTarget = self.server.iifAddress
        self.addCleanup(
            lambda: (
                logProcessOutput(self.server, self.id()) if self.server.pid else None
            )
        )
        self.addCleanup(self.server.stop)
        yield self.server.start()

    def assertOneStream(self, packets: list[dict]) -> None:
        """One SSRC, version 2, PCMU, sequence +1 and timestamp +160 per packet."""
        self.assertEqual({p["ssrc"] for p in packets}.__len__(), 1)
        self.assertEqual({p["version"] for p in packets}, {2})
        self.assertEqual({p["pt"] for p in packets}, {0})
        for a, b in itertools.pairwise(packets):
            self.assertEqual(b["seq"], (a["seq"] + 1) % 65536)
            self.assertEqual(b["ts"], (a["ts"] + 160) % 2**32)

    def assertPaced(self, times: list[float]) -> None:
        """20 ms apart, without drift: the median gap and the whole span."""
        gaps = [b - a for a, b in itertools.pairwise(times)]
        self.assertLess(abs(statistics.median(gaps) - 0.020), 0.003, gaps)
        # Absolute deadlines: the whole run lasts n x 20 ms; sleeping 20 ms
        # after each send would add every delay up.
        self.assertLess(abs(times[-1] - times[0] - 0.020 * (len(times) - 1)), 0.15)

    def assertSounds(self, payloads: list[bytes], wav: Path) -> None:
        """The decoded audio is the prompt file's (G.711 quantisation aside)."""
        reference = wavSamples(wav)
        decoded = list(ulaw2linear(b"".join(payloads)))[: len(reference)]
        self.assertEqual(len(decoded), len(reference))
        self.assertGreater(snr(reference, decoded), 30)

    @defer.inlineCallbacks
    def test_announcementsRingbackDigitsThenJoin(self) -> Any:
        """
        user1 hears ann_id1 (the default 00080002) from its answer, then
        ringback until the join; user2, answering 4 s later, hears ann_id2
        then ann_digit2 digit by digit; the join re-INVITEs go out after
        the last digit, and no RTP is sent after them.
        """
        self.client.request(
            "m1", "media1", "media2", duration=30, ann_id2="00080003", ann_digit2="42"
        )
        self.assertEqual((yield self.client.expectAck("m1")), "ok")
        yield sleep(reactor, 9)
        self.client.send("CANCEL: id=m1;")
        realDuration, _ = yield self.client.expectResponse("m1", timeout=10)

        one = [p for _, p in self.rtp1.packets]
        two = [p for _, p in self.rtp2.packets]
        ann1 = list(self.catalogue.announcement("00080002", "PCMU"))
        ringback = list(self.catalogue.ringback(*RINGBACK, "PCMU"))
        ann2 = list(self.catalogue.announcement("00080003", "PCMU"))
        digits = list(self.catalogue.digits("42", "PCMU"))

        # user1: the announcement, then ringback, as one paced RTP stream.
        self.assertGreater(len(one), len(ann1) + 50)
        self.assertOneStream(one)
        self.assertEqual([p["payload"] for p in one[: len(ann1)]], ann1)
        self.assertSounds(
            [p["payload"] for p in one[: len(ann1)]], PROMPTS / "00080002.wav"
        )
        rest = [p["payload"] for p in one[len(ann1) :]]
        self.assertEqual(
            rest, (ringback * (len(rest) // len(ringback) + 1))[: len(rest)]
        )
        self.assertEqual([i for i, p in enumerate(one) if p["marker"]], [0, len(ann1)])
        self.assertPaced([t for t, _ in self.rtp1.packets][: len(ann1)])

        # user2: ann_id2, then the digits.
        self.assertOneStream(two)
        self.assertEqual([p["payload"] for p in two], ann2 + digits)
        self.assertSounds(
            [p["payload"] for p in two[: len(ann2)]], PROMPTS / "00080003.wav"
        )
        self.assertPaced([t for t, _ in self.rtp2.packets])

        # Order: user1's announcement, user2's announcement, then the join.
        call1 = self.uas.callTo("media1")
        reinvites1 = requestsOf(call1, "INVITE", "received")
        self.assertEqual(len(reinvites1), 2, describeMessages(call1))
        join = reinvites1[1].time
        lastTo2 = self.rtp2.packets[-1][0]
        self.assertLess(self.rtp1.packets[0][0], self.rtp2.packets[0][0])
        self.assertGreaterEqual(join, lastTo2 - 0.05)
        # user1 heard ringback until the join, and nothing after it.
        self.assertGreaterEqual(self.rtp1.packets[-1][0], lastTo2 - 0.1)
        self.assertLessEqual(self.rtp1.packets[-1][0], join + 0.1)
        self.assertLessEqual(lastTo2, join + 0.1)
        self.assertGreater(realDuration, 0)

    @defer.inlineCallbacks
    def test_unknownAnnouncementRefused(self) -> Any:
        """A REQUEST naming an announcement with no file: code=fail, no INVITE."""
        self.client.request("m2", "media1", "media2", duration=30, ann_id1="12345678")
        self.assertEqual((yield self.client.expectAck("m2")), "fail")
        yield sleep(reactor, 1)
        self.assertEqual(requestsOf(self.uas.messages(), "INVITE"), [])
        self.assertEqual(self.rtp1.packets, [])

    @defer.inlineCallbacks
    def test_user1HearsWholeAnnouncementWhenUser2AnswersAtOnce(self) -> Any:
        """
        user2 (media3) answers at once and has no announcement: user1 still
        receives every packet of 00080002 before the join, which follows
        its last packet within 100 ms.
        """
        self.client.request("m3", "media1", "media3", duration=30)
        self.assertEqual((yield self.client.expectAck("m3")), "ok")
        yield sleep(reactor, 5)
        self.client.send("CANCEL: id=m3;")
        yield self.client.expectResponse("m3", timeout=10)

        ann1 = list(self.catalogue.announcement("00080002", "PCMU"))
        one = [p for _, p in self.rtp1.packets]
        self.assertGreaterEqual(len(one), len(ann1))
        self.assertEqual([p["payload"] for p in one[: len(ann1)]], ann1)
        self.assertEqual(self.rtp2.packets, [])
        lastAnn = self.rtp1.packets[len(ann1) - 1][0]
        call1 = self.uas.callTo("media1")
        call2 = self.uas.callTo("media3")
        answered2 = requestsOf(call2, "ACK", "received")[0].time
        self.assertLess(answered2, self.rtp1.packets[0][0] + 0.5)
        reinvites1 = requestsOf(call1, "INVITE", "received")
        self.assertEqual(len(reinvites1), 2, describeMessages(call1))
        join = reinvites1[1].time
        self.assertGreaterEqual(join, lastAnn - 0.005)
        self.assertLessEqual(join, lastAnn + 0.1)
        # Nothing was sent to user1 after the join.
        self.assertLessEqual(self.rtp1.packets[-1][0], join + 0.05)
