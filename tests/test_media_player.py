"""
Tests for L{callback_tw.media.player}: the RTP packets a leg receives (header
fields, steps, marker bits, payloads) and when they are sent, on a
L{task.Clock}; and one short run over real loopback UDP.
"""

from __future__ import annotations

import errno
import math
import os
import struct
import wave
from array import array
from itertools import pairwise

from rtpsynth.RtpUtils import linear2ulaw, ulaw2linear
from twisted.internet import defer, reactor
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from callback_tw.media.player import PlayResult, RTPScheduler, RTPStream, choosePtime
from callback_tw.media.prompts import PromptCatalogue

REMOTE = ("127.0.0.1", 40000)


def frames(count: int, start: int = 0) -> list[bytes]:
    """Distinguishable 160-byte frames: frame i is filled with byte (start + i)."""
    return [bytes([(start + i) % 256]) * 160 for i in range(count)]


def parse(packet: bytes) -> dict:
    first, second, seq, ts, ssrc = struct.unpack("!BBHII", packet[:12])
    return {
        "version": first >> 6,
        "padding": (first >> 5) & 1,
        "extension": (first >> 4) & 1,
        "csrcCount": first & 0x0F,
        "marker": second >> 7,
        "payloadType": second & 0x7F,
        "seq": seq,
        "ts": ts,
        "ssrc": ssrc,
        "payload": packet[12:],
    }


class RecordingTransport:
    """A UDP transport that records (time, parsed packet, address)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, dict, tuple[str, int]]] = []

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((self.clock.seconds(), parse(data), addr))

    @property
    def packets(self) -> list[dict]:
        return [p for _, p, _ in self.sent]

    @property
    def times(self) -> list[float]:
        return [t for t, _, _ in self.sent]


class PlayerTestMixin:
    def setUp(self) -> None:
        self.clock = Clock()
        self.scheduler = RTPScheduler(reactor=self.clock)
        self.transport = RecordingTransport(self.clock)

    def stream(
        self, ptime: int = 20, payloadType: int = 0, transport=None
    ) -> RTPStream:
        return RTPStream(
            self.scheduler, transport or self.transport, REMOTE, payloadType, ptime
        )

    def elapse(self, seconds: float, step: float = 0.001) -> None:
        """Let C{seconds} pass in small steps, as a real reactor would."""
        self.clock.advance(0)
        for _ in range(round(seconds / step)):
            self.clock.advance(step)

    def assertSteps(self, packets: list[dict], tsStep: int = 160) -> None:
        for a, b in pairwise(packets):
            self.assertEqual(b["seq"], (a["seq"] + 1) % 65536)
            self.assertEqual(b["ts"], (a["ts"] + tsStep) % 2**32)
            self.assertEqual(b["ssrc"], a["ssrc"])


class PacketTests(PlayerTestMixin, SynchronousTestCase):
    def test_headerAndPayload(self) -> None:
        """
        Each packet is RTP version 2 without padding, extension or CSRCs,
        carries the payload type, the frames in order, goes to the remote
        address, and only the first has the marker bit.
        """
        stream = self.stream(payloadType=8)
        stream.play(frames(5))
        self.elapse(0.2)
        packets = self.transport.packets
        self.assertEqual(len(packets), 5)
        for p in packets:
            self.assertEqual(
                (
                    p["version"],
                    p["padding"],
                    p["extension"],
                    p["csrcCount"],
                    p["payloadType"],
                ),
                (2, 0, 0, 0, 8),
            )
        self.assertEqual([p["payload"] for p in packets], frames(5))
        self.assertEqual([p["marker"] for p in packets], [1, 0, 0, 0, 0])
        self.assertEqual({a for _, _, a in self.transport.sent}, {REMOTE})
        self.assertSteps(packets)

    def test_randomStart(self) -> None:
        """
        Every stream starts with its own random SSRC, sequence number and
        timestamp (not the same values in every process or every stream).
        """
        starts = []
        for _ in range(4):
            transport = RecordingTransport(self.clock)
            self.stream(transport=transport).play(frames(1))
            self.elapse(0.03)
            p = transport.packets[0]
            starts.append((p["ssrc"], p["seq"], p["ts"]))
        self.assertEqual(len({s[0] for s in starts}), 4)
        self.assertGreater(len({s[1] for s in starts}), 1)
        self.assertGreater(len({s[2] for s in starts}), 1)

    def test_sequenceWraps(self) -> None:
        """Sequence numbers wrap from 65535 to 0 and timestamps keep stepping."""
        stream = self.stream()
        stream.loop(frames(1))
        self.elapse(70000 * 0.02, step=0.02)
        stream.stop()
        self.assertSteps(self.transport.packets)

    def test_ptime(self) -> None:
        """
        With a=ptime:30 the 20 ms frames are re-cut into 240-byte payloads,
        the last padded with silence of the codec; timestamps step by 240 and
        packets leave every 30 ms.
        """
        stream = self.stream(ptime=30, payloadType=8)
        source = frames(4)  # 640 bytes -> 240 + 240 + 160 and 80 of padding
        stream.play(source)
        self.elapse(0.2)
        packets = self.transport.packets
        self.assertEqual([len(p["payload"]) for p in packets], [240, 240, 240])
        self.assertEqual(
            b"".join(p["payload"] for p in packets), b"".join(source) + b"\xd5" * 80
        )
        self.assertSteps(packets, tsStep=240)
        times = self.transport.times
        self.assertEqual([round(b - a, 6) for a, b in pairwise(times)], [0.03, 0.03])

    def test_loopWithPtime(self) -> None:
        """
        A loop cut into 40 ms packets stays seamless across the wrap: the
        payloads are the cycle repeated, not padded at each end.
        """
        stream = self.stream(ptime=40)
        cycle = frames(3)
        stream.loop(cycle)
        self.elapse(0.5)
        stream.stop()
        audio = b"".join(p["payload"] for p in self.transport.packets)
        self.assertEqual(audio, (b"".join(cycle) * 10)[: len(audio)])
        self.assertGreaterEqual(len(audio), 320 * 12)

    def test_rejectsUnknownPayloadTypeAndPtime(self) -> None:
        """Only PCMU/PCMA, and ptimes on the scheduler's 10 ms grid."""
        self.assertRaises(ValueError, self.stream, payloadType=18)
        self.assertRaises(ValueError, self.stream, ptime=25)
        self.assertRaises(ValueError, self.stream, ptime=0)

    def test_choosePtime(self) -> None:
        """An SDP's ptime is honoured on the 10 ms grid; none means 20 ms."""
        self.assertEqual(
            [choosePtime(p) for p in (None, 0, 20, 30, 25, 44, 5, 1000)],
            [20, 20, 20, 30, 20, 40, 10, 200],
        )


class PacingTests(PlayerTestMixin, SynchronousTestCase):
    def test_absoluteDeadlines(self) -> None:
        """
        Packet n leaves at the first tick at or after start + n * 20 ms, even
        when the reactor wakes up irregularly: lateness never accumulates.
        """
        stream = self.stream()
        stream.play(frames(200))
        steps = [0.003, 0.011, 0.007, 0.019, 0.013]
        i = 0
        while stream.playing:
            self.clock.advance(steps[i % len(steps)])
            i += 1
        times = self.transport.times
        self.assertEqual(len(times), 200)
        for n, t in enumerate(times):
            deadline = n * 0.02  # played at 0, on the grid
            self.assertTrue(
                deadline - 1e-9 <= t < deadline + 0.019 + 1e-9, (n, t, deadline)
            )

    def test_firstPacketOnTheGrid(self) -> None:
        """
        A stream starts on the scheduler's 20 ms grid, so streams started at
        different moments share one reactor timer and tick together.
        """
        other = RecordingTransport(self.clock)
        self.stream().play(frames(10))
        self.clock.advance(0.007)
        self.stream(transport=other).play(frames(10))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.elapse(0.3)
        self.assertApproximates(other.times[0], 0.02, 1e-9)
        self.assertEqual(self.transport.times[1:], other.times[:9])

    def test_lateReactorSendsWhatIsDue(self) -> None:
        """
        When the reactor is late by less than the burst bound, every overdue
        packet is sent at once, in order, with nothing skipped.
        """
        stream = self.stream()
        stream.play(frames(10))
        self.clock.advance(0)
        self.clock.advance(0.05)  # packets for 20 and 40 ms are overdue
        packets = self.transport.packets
        self.assertEqual([p["payload"][0] for p in packets], [0, 1, 2])
        self.assertSteps(packets)
        self.assertEqual(stream.dropped, 0)

    def test_veryLateReactorSkips(self) -> None:
        """
        When the reactor is very late, only the last few overdue packets are
        sent (no long burst); the skipped audio is passed over and the
        timestamps of what is sent still match the time it stands for.
        """
        stream = self.stream()
        stream.play(frames(50))
        self.clock.advance(0)
        self.clock.advance(0.2)  # ten packets are due
        packets = self.transport.packets
        self.assertEqual([p["payload"][0] for p in packets], [0, 8, 9, 10])
        first = packets[0]
        self.assertEqual(
            [(p["ts"] - first["ts"]) % 2**32 for p in packets], [0, 1280, 1440, 1600]
        )
        self.assertEqual(
            [(p["seq"] - first["seq"]) % 65536 for p in packets], [0, 1, 2, 3]
        )
        self.assertEqual(stream.dropped, 7)
        self.elapse(1.0)
        self.assertEqual(len(self.transport.packets), 50 - 7)

    def test_nothingScheduledWhenIdle(self) -> None:
        """No timer runs while no stream has anything to send."""
        self.assertEqual(self.clock.getDelayedCalls(), [])
        stream = self.stream()
        stream.play(frames(3))
        self.elapse(0.1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        stream.play(frames(3))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        stream.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class QueueTests(PlayerTestMixin, SynchronousTestCase):
    def test_playFiresAfterLastPacket(self) -> None:
        """The play's Deferred fires COMPLETED right after its last packet."""
        stream = self.stream()
        d = stream.play(frames(3))
        self.clock.advance(0)
        self.clock.advance(0.02)
        self.assertNoResult(d)
        self.clock.advance(0.02)
        self.assertEqual(self.successResultOf(d), PlayResult.COMPLETED)
        self.assertEqual(len(self.transport.packets), 3)

    def test_queuedPlaysFollowWithoutGap(self) -> None:
        """
        A second play queued behind the first (announcement, then digits)
        starts at the next 20 ms deadline, continuing sequence and timestamp,
        with the marker bit on its first packet.
        """
        stream = self.stream()
        first = stream.play(frames(3))
        second = stream.play(frames(2, start=100))
        self.elapse(0.2)
        packets = self.transport.packets
        self.assertEqual([p["payload"][0] for p in packets], [0, 1, 2, 100, 101])
        self.assertEqual([p["marker"] for p in packets], [1, 0, 0, 1, 0])
        self.assertSteps(packets)
        times = self.transport.times
        self.assertEqual([round(b - a, 6) for a, b in pairwise(times)], [0.02] * 4)
        self.assertEqual(self.successResultOf(first), PlayResult.COMPLETED)
        self.assertEqual(self.successResultOf(second), PlayResult.COMPLETED)

    def test_playChainedFromCallbackIsSeamless(self) -> None:
        """
        A play started from the callback of the previous one (the caller
        chaining Deferreds) also follows at the next deadline.
        """
        stream = self.stream()
        stream.play(frames(2)).addCallback(lambda _: stream.play(frames(2, start=50)))
        self.elapse(0.2)
        times = self.transport.times
        self.assertEqual(
            [p["payload"][0] for p in self.transport.packets], [0, 1, 50, 51]
        )
        self.assertEqual([round(b - a, 6) for a, b in pairwise(times)], [0.02] * 3)
        self.assertSteps(self.transport.packets)

    def test_loopUntilStop(self) -> None:
        """
        An announcement then a ringback loop: the loop repeats seamlessly
        until stop(), which fires its Deferred INTERRUPTED, sends nothing
        more and leaves no timer behind.
        """
        stream = self.stream()
        announcement = stream.play(frames(2, start=200))
        ringback = stream.loop(frames(3))
        self.elapse(0.2)
        self.assertEqual(self.successResultOf(announcement), PlayResult.COMPLETED)
        self.assertNoResult(ringback)
        stream.stop()
        self.assertEqual(self.successResultOf(ringback), PlayResult.INTERRUPTED)
        count = len(self.transport.packets)
        self.elapse(0.2)
        self.assertEqual(len(self.transport.packets), count)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        payloads = [p["payload"][0] for p in self.transport.packets]
        self.assertEqual(payloads[:8], [200, 201, 0, 1, 2, 0, 1, 2])
        self.assertEqual(
            [p["marker"] for p in self.transport.packets[:6]], [1, 0, 1, 0, 0, 0]
        )
        self.assertSteps(self.transport.packets)

    def test_loopGivesWayToLaterPlay(self) -> None:
        """A play queued behind a loop ends the loop at the next packet."""
        stream = self.stream()
        ringback = stream.loop(frames(3))
        self.elapse(0.05)
        self.assertNoResult(ringback)
        after = stream.play(frames(1, start=99))
        self.clock.advance(0.02)
        self.assertEqual(self.successResultOf(ringback), PlayResult.COMPLETED)
        self.assertEqual(self.transport.packets[-1]["payload"][0], 99)
        self.assertEqual(self.transport.packets[-1]["marker"], 1)
        self.assertEqual(self.successResultOf(after), PlayResult.COMPLETED)

    def test_stopInterruptsEverythingQueued(self) -> None:
        """
        stop() in the middle of an announcement fires it and everything
        queued behind it INTERRUPTED (no errback); plays asked for later fire
        INTERRUPTED at once and send nothing.
        """
        stream = self.stream()
        first = stream.play(frames(10))
        second = stream.play(frames(10))
        self.elapse(0.05)
        stream.stop()
        stream.stop()
        self.assertEqual(self.successResultOf(first), PlayResult.INTERRUPTED)
        self.assertEqual(self.successResultOf(second), PlayResult.INTERRUPTED)
        count = len(self.transport.packets)
        self.assertEqual(
            self.successResultOf(stream.play(frames(2))), PlayResult.INTERRUPTED
        )
        self.elapse(0.1)
        self.assertEqual(len(self.transport.packets), count)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_emptyPlayCompletesAtOnce(self) -> None:
        """Playing no frames (e.g. an empty digit string) completes at once."""
        stream = self.stream()
        self.assertEqual(self.successResultOf(stream.play([])), PlayResult.COMPLETED)
        self.assertRaises(ValueError, stream.loop, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_resumeAfterSilence(self) -> None:
        """
        A play after the stream was idle continues the same RTP stream: same
        SSRC, next sequence number, and a timestamp advanced by the silent
        time, marked as a new talk-spurt.
        """
        stream = self.stream()
        stream.play(frames(2))
        self.elapse(0.1)
        self.clock.advance(1.0)
        stream.play(frames(2))
        self.elapse(0.1)
        a, b, c, d = self.transport.packets
        self.assertEqual((c["seq"] - b["seq"]) % 65536, 1)
        self.assertEqual(c["ssrc"], a["ssrc"])
        elapsed = self.transport.times[2] - self.transport.times[0]
        self.assertEqual((c["ts"] - a["ts"]) % 2**32, round(elapsed * 8000))
        self.assertEqual(c["marker"], 1)

    def test_stopAll(self) -> None:
        """Shutdown stops every stream and leaves no timer."""
        one, two = self.stream(), self.stream(transport=RecordingTransport(self.clock))
        d1, d2 = one.loop(frames(1)), two.play(frames(100))
        self.elapse(0.05)
        self.assertEqual(len(self.scheduler), 2)
        self.scheduler.stopAll()
        self.assertEqual(self.successResultOf(d1), PlayResult.INTERRUPTED)
        self.assertEqual(self.successResultOf(d2), PlayResult.INTERRUPTED)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class FailingTransport:
    def __init__(self, error: Exception) -> None:
        self.error = error
        self.attempts = 0

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.attempts += 1
        raise self.error


class ErrorTests(PlayerTestMixin, SynchronousTestCase):
    def test_sendErrorDropsPacket(self) -> None:
        """
        A send the kernel refuses (EAGAIN) loses that packet only: the play
        goes on in time, the loss is counted and logged once.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        transport = FailingTransport(BlockingIOError(errno.EAGAIN, "busy"))
        stream = self.stream(transport=transport)
        d = stream.play(frames(5))
        self.elapse(0.2)
        self.assertEqual(self.successResultOf(d), PlayResult.COMPLETED)
        self.assertEqual((transport.attempts, stream.dropped, stream.sent), (5, 5, 0))
        self.assertEqual(len([e for e in events if e["log_level"].name == "warn"]), 1)

    def test_brokenTransportStopsOnlyItsStream(self) -> None:
        """
        A transport failing with a bug (not a socket error) stops its own
        stream, logged, while other streams keep playing.
        """
        broken = self.stream(transport=FailingTransport(AttributeError("socket")))
        good = self.stream()
        d = broken.play(frames(5))
        ok = good.play(frames(5))
        self.elapse(0.2)
        self.assertEqual(self.successResultOf(d), PlayResult.INTERRUPTED)
        self.assertEqual(self.successResultOf(ok), PlayResult.COMPLETED)
        self.assertEqual(len(self.transport.packets), 5)
        self.assertEqual(len(self.flushLoggedErrors(AttributeError)), 1)


class Receiver(DatagramProtocol):
    def __init__(self, expected: int) -> None:
        self.packets: list[bytes] = []
        self.expected = expected
        self.complete: defer.Deferred = defer.Deferred()

    def datagramReceived(self, datagram: bytes, addr) -> None:
        self.packets.append(datagram)
        if len(self.packets) == self.expected:
            self.complete.callback(None)


class LoopbackTests(TestCase):
    timeout = 20

    @defer.inlineCallbacks
    def test_onePromptOverUDP(self) -> None:
        """
        A 1-second prompt played over real loopback UDP arrives as 50 PCMU
        packets with +1 sequence and +160 timestamp steps, whose audio
        decodes back to the prompt file within G.711 quantisation.
        """
        folder = self.mktemp()
        os.makedirs(os.path.join(folder, "digits"))
        samples = [
            round(12000 * math.sin(2 * math.pi * (300 + 1500 * n / 8000) * n / 8000))
            for n in range(8000)
        ]
        for name in ["00000042"] + [f"digits/{d}" for d in range(10)]:
            with wave.open(os.path.join(folder, f"{name}.wav"), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(8000)
                w.writeframes(array("h", samples).tobytes())
        catalogue = PromptCatalogue.load(folder)

        receiver = Receiver(50)
        listening = reactor.listenUDP(0, receiver, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        sending = reactor.listenUDP(0, DatagramProtocol(), interface="127.0.0.1")
        self.addCleanup(sending.stopListening)

        stream = RTPStream(
            RTPScheduler(), sending, ("127.0.0.1", listening.getHost().port), 0
        )
        result = yield stream.play(catalogue.announcement("00000042", "PCMU"))
        self.assertEqual(result, PlayResult.COMPLETED)
        yield receiver.complete
        yield deferLater(reactor, 0.05, lambda: None)  # nothing more arrives

        packets = [parse(p) for p in receiver.packets]
        self.assertEqual(len(packets), 50)
        self.assertEqual({p["payloadType"] for p in packets}, {0})
        for a, b in pairwise(packets):
            self.assertEqual(b["seq"], (a["seq"] + 1) % 65536)
            self.assertEqual(b["ts"], (a["ts"] + 160) % 2**32)
        audio = b"".join(p["payload"] for p in packets)
        self.assertEqual(audio, linear2ulaw(array("h", samples)))
        decoded = ulaw2linear(audio)
        self.assertTrue(
            all(
                abs(s - d) <= max(32, abs(s) >> 4)
                for s, d in zip(samples, decoded[: len(samples)], strict=True)
            )
        )
