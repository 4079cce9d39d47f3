# -*- test-case-name: tests.test_media_player -*-
"""
RTP announcement and ringback player: G.711 frames out to one leg, paced by
the reactor.

One L{RTPScheduler} serves every stream of the process with a single
reactor timer: each tick sends what is due on every active stream, which
costs far less CPU than a thread or a LoopingCall per stream (figures in
docs/decisions.md). Deadlines are absolute (stream start + n * ptime on a 10 ms grid of
the scheduler), never "sleep 20 ms after each send", so nothing drifts.

Headers come from rtpsynth's C{RtpSynth} (version 2, SSRC, sequence,
timestamp, marker bit), seeded from the OS random source; the payloads are
the ready-encoded frames of L{callback_tw.media.prompts}.
"""

from __future__ import annotations

import enum
import math
import random
from collections import deque
from collections.abc import Sequence
from typing import Any

from rtpsynth.RtpSynth import RtpSynth, set_randfunc
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from callback_tw.media.codecs import SAMPLE_RATE, SILENCE_BY_PAYLOAD_TYPE

__all__ = ["PlayResult", "RTPScheduler", "RTPStream", "choosePtime"]

_SLOT = 0.010
"""Scheduler grid in seconds: every supported ptime is a multiple of it."""

_GRID_SLOTS = 2
"""A new stream starts on the 20 ms grid, so all 20 ms streams share ticks."""

_SAMPLES_PER_MS = SAMPLE_RATE // 1000

_random = random.SystemRandom()


def _randomWord() -> int:
    return _random.getrandbits(32)


class PlayResult(enum.Enum):
    """
    What a L{RTPStream.play} or L{RTPStream.loop} Deferred fires with. It never
    errbacks, so callers chaining announcements need no error handling.
    """

    COMPLETED = "completed"
    """Every frame was sent (a loop: a later play/loop took over)."""

    INTERRUPTED = "interrupted"
    """The stream was stopped first (hang-up, join, shutdown)."""


def choosePtime(offered: int | None) -> int:
    """
    The packet time to use for a remote SDP's C{a=ptime} (None if absent):
    20 ms by default, otherwise the offer rounded to a multiple of 10 ms
    within 10..200 ms (the scheduler's grid).
    """
    if offered is None or offered <= 0:
        return 20
    return min(200, max(10, 10 * round(offered / 10)))


class _Item:
    """One queued play or loop: its payloads and where we are in them."""

    __slots__ = ("payloads", "position", "loop", "deferred", "started")

    def __init__(
        self, payloads: Sequence[bytes], loop: bool, deferred: Deferred
    ) -> None:
        self.payloads = payloads
        self.position = 0
        self.loop = loop
        self.deferred = deferred
        self.started = False


class RTPScheduler:
    """
    The shared clock of all RTP streams: one reactor timer, armed for the
    earliest deadline of any active stream, and not armed at all when no
    stream is playing.

    @ivar maxBurst: how many packets one stream may send in a single tick
        when the reactor was late; older overdue packets are skipped (their
        audio and timestamps are passed over) instead of bursting into the
        remote's jitter buffer.
    """

    _log = Logger()

    def __init__(self, reactor: Any = None, maxBurst: int = 3) -> None:
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        self._reactor = reactor
        self.maxBurst = maxBurst
        self._epoch = reactor.seconds()
        self._active: dict[RTPStream, None] = {}
        self._call: Any = None
        self._callSlot: int | None = None
        self._ticking = False

    def __len__(self) -> int:
        """The number of streams currently sending."""
        return len(self._active)

    def stopAll(self) -> None:
        """Stop every active stream (shutdown); their plays fire INTERRUPTED."""
        for stream in list(self._active):
            stream.stop()

    def _nowSlot(self) -> float:
        return (self._reactor.seconds() - self._epoch) / _SLOT

    def _activate(self, stream: RTPStream) -> None:
        self._active[stream] = None
        if not self._ticking:
            self._arm(stream._nextSlot)

    def _deactivate(self, stream: RTPStream) -> None:
        self._active.pop(stream, None)
        if not self._active and self._call is not None:
            self._call.cancel()
            self._call = self._callSlot = None

    def _arm(self, slot: int) -> None:
        """Make sure a tick happens at C{slot} (or earlier)."""
        if self._call is not None:
            if self._callSlot <= slot:
                return
            self._call.cancel()
        delay = max(0.0, self._epoch + slot * _SLOT - self._reactor.seconds())
        self._call = self._reactor.callLater(delay, self._tick)
        self._callSlot = slot

    def _tick(self) -> None:
        self._call = self._callSlot = None
        now = math.floor(self._nowSlot() + 1e-6)
        done: list[tuple[Deferred, PlayResult]] = []
        earliest = None
        self._ticking = True
        try:
            for stream in list(self._active):
                if stream._nextSlot <= now:
                    try:
                        stillActive = stream._sendDue(now, self.maxBurst, done)
                    except Exception:
                        self._log.failure(
                            "RTP stream to {remote} failed; stopped",
                            remote=stream.remote,
                        )
                        stream._halt(done)
                        continue
                    if not stillActive:
                        self._active.pop(stream, None)
                        continue
                if earliest is None or stream._nextSlot < earliest:
                    earliest = stream._nextSlot
        finally:
            self._ticking = False
        # Fire after the sends: a callback may queue, stop or start streams.
        for deferred, result in done:
            deferred.callback(result)
        # Streams (re)started by those callbacks armed the timer themselves;
        # arm for the earliest of the others (a stream the callbacks stopped
        # costs one empty tick at most).
        if self._active:
            if earliest is None:
                earliest = min(s._nextSlot for s in self._active)
            self._arm(earliest)


class RTPStream:
    """
    The RTP sender of one leg: plays announcements and loops ringback to the
    address and port of the leg's SDP answer.

    Plays and loops queue in order and follow each other without a gap
    (announcement, then digits; or announcement, then ringback). A loop
    repeats until L{stop}, or until a later L{play}/L{loop} is queued, which
    takes over at the next packet. Between queued items and after the queue
    runs dry the stream keeps its SSRC and sequence, and timestamps advance
    with real time, so a later play continues the same RTP stream.

    @ivar remote: (host, port) the packets go to; the host must be an IP
        address (Twisted's UDP write does not resolve names).
    @ivar payloadType: 0 (PCMU) or 8 (PCMA).
    @ivar ptime: milliseconds of audio per packet.
    @ivar sent: packets handed to the transport.
    @ivar dropped: packets the transport refused (e.g. EAGAIN) or skipped
        because the reactor was too late.
    """

    _log = Logger()

    def __init__(
        self,
        scheduler: RTPScheduler,
        transport: Any,
        remote: tuple[str, int],
        payloadType: int,
        ptime: int = 20,
    ) -> None:
        """
        @param transport: anything with Twisted's UDP
            C{write(data: bytes, addr: tuple[str, int])}, normally the leg's
            own RTP port (L{callback_tw.media.rtp.RTPPort}).
        @param ptime: a multiple of 10 in 10..200 (see L{choosePtime}).
        @raise ValueError: for another payload type or ptime.
        """
        if payloadType not in SILENCE_BY_PAYLOAD_TYPE:
            raise ValueError(f"payload type {payloadType} is not PCMU (0) or PCMA (8)")
        if not (isinstance(ptime, int) and 10 <= ptime <= 200 and ptime % 10 == 0):
            raise ValueError(f"ptime {ptime!r} ms is not a multiple of 10 in 10..200")
        self._scheduler = scheduler
        self._transport = transport
        self.remote = remote
        self.payloadType = payloadType
        self.ptime = ptime
        self.sent = 0
        self.dropped = 0
        self._payloadBytes = ptime * _SAMPLES_PER_MS
        self._stepSlots = round(ptime / (_SLOT * 1000))
        # RtpSynth's default random source is an unseeded C rand(): every
        # process would start with the same SSRC. Ours comes from the OS.
        set_randfunc(_randomWord)
        self._synth = RtpSynth(SAMPLE_RATE, ptime)
        self._queue: deque[_Item] = deque()
        self._nextSlot: int | None = None
        self._stopped = False
        self._writeFailed = False

    def play(self, frames: Sequence[bytes]) -> Deferred:
        """
        Queue C{frames} (20 ms G.711 payloads, e.g. from the catalogue) to be
        played once.

        @return: a Deferred that fires with L{PlayResult.COMPLETED} after the
            last packet was sent (at once for no frames), or
            L{PlayResult.INTERRUPTED} if the stream is stopped before (at once
            if it is already stopped).
        """
        return self._enqueue(frames, loop=False)

    def loop(self, frames: Sequence[bytes]) -> Deferred:
        """
        Queue C{frames} to be repeated seamlessly (one ringback cadence).

        @return: a Deferred firing L{PlayResult.INTERRUPTED} on L{stop}, or
            L{PlayResult.COMPLETED} when a later play/loop takes over.
        @raise ValueError: if C{frames} is empty.
        """
        if not any(frames):
            raise ValueError("cannot loop nothing")
        return self._enqueue(frames, loop=True)

    def stop(self) -> None:
        """
        Stop sending for good and let go of the transport: queued and current
        plays fire L{PlayResult.INTERRUPTED}. Call it before the leg's port is
        closed (join, hang-up). Idempotent; play/loop afterwards are no-ops
        that fire INTERRUPTED.
        """
        done: list[tuple[Deferred, PlayResult]] = []
        self._halt(done)
        for deferred, result in done:
            deferred.callback(result)

    @property
    def playing(self) -> bool:
        """Whether anything is queued or being sent."""
        return bool(self._queue)

    # --- internals ---

    def _halt(self, done: list[tuple[Deferred, PlayResult]]) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._scheduler._deactivate(self)
        while self._queue:
            done.append((self._queue.popleft().deferred, PlayResult.INTERRUPTED))
        self._transport = None
        self._log.debug(
            "RTP stream to {remote} stopped after {sent} packets ({dropped} dropped)",
            remote=self.remote,
            sent=self.sent,
            dropped=self.dropped,
        )

    def _enqueue(self, frames: Sequence[bytes], loop: bool) -> Deferred:
        if self._stopped:
            return succeed(PlayResult.INTERRUPTED)
        payloads = self._rechunk(frames, loop)
        if not payloads:
            return succeed(PlayResult.COMPLETED)
        deferred = Deferred()
        idle = not self._queue
        self._queue.append(_Item(payloads, loop, deferred))
        if idle:
            self._resume()
        return deferred

    def _rechunk(self, frames: Sequence[bytes], loop: bool) -> Sequence[bytes]:
        """Payloads of exactly ptime each; the catalogue's 20 ms frames as is."""
        size = self._payloadBytes
        if all(len(f) == size for f in frames):
            return frames
        audio = b"".join(frames)
        if loop:
            # Repeat the cycle until it divides into whole packets, so the
            # loop stays seamless (bounded: frames are whole samples).
            repeat = size // math.gcd(len(audio), size)
            if repeat <= 16:
                audio *= repeat
        short = -len(audio) % size
        if short:
            audio += bytes([SILENCE_BY_PAYLOAD_TYPE[self.payloadType]]) * short
        return [audio[i : i + size] for i in range(0, len(audio), size)]

    def _resume(self) -> None:
        """Start sending after being idle: on the grid, and in the stream's phase."""
        now = math.ceil(self._scheduler._nowSlot() - 1e-6)
        if self._nextSlot is None:
            self._nextSlot = -(-now // _GRID_SLOTS) * _GRID_SLOTS
        elif self._nextSlot < now:
            # Keep the timestamp in step with the silent time that passed.
            missed = -(-(now - self._nextSlot) // self._stepSlots)
            self._skipTimestamps(missed)
            self._nextSlot += missed * self._stepSlots
        self._scheduler._activate(self)

    def _skipTimestamps(self, packets: int) -> None:
        while packets > 0:
            chunk = min(packets, 1 << 20)
            self._synth.skip(chunk)
            packets -= chunk

    def _sendDue(
        self, now: int, maxBurst: int, done: list[tuple[Deferred, PlayResult]]
    ) -> bool:
        """
        Send every packet due by slot C{now}, oldest first.

        @return: whether the stream still has something queued.
        """
        due = (now - self._nextSlot) // self._stepSlots + 1
        if due > maxBurst:
            late = due - maxBurst
            self._skipAudio(late, done)
            if not self._queue:
                return False
            due = maxBurst
        queue = self._queue
        synth = self._synth
        for _ in range(due):
            item = queue[0]
            while item.loop and len(queue) > 1:
                # A loop gives way to whatever was queued after it.
                queue.popleft()
                done.append((item.deferred, PlayResult.COMPLETED))
                item = queue[0]
            if not item.started:
                item.started = True
                synth.set_mbt(1)
            payload = item.payloads[item.position]
            packet = synth.next_pkt(len(payload), self.payloadType, payload)
            self._nextSlot += self._stepSlots
            try:
                self._transport.write(packet, self.remote)
            except OSError as e:
                self.dropped += 1
                if not self._writeFailed:
                    self._writeFailed = True
                    self._log.warn(
                        "RTP to {remote}: send failed ({error}); dropping packets",
                        remote=self.remote,
                        error=e,
                    )
            else:
                self.sent += 1
            item.position += 1
            if item.position == len(item.payloads):
                if item.loop:
                    item.position = 0
                else:
                    queue.popleft()
                    done.append((item.deferred, PlayResult.COMPLETED))
                    if not queue:
                        return False
        return True

    def _skipAudio(self, packets: int, done: list[tuple[Deferred, PlayResult]]) -> None:
        """Pass over C{packets} overdue packets: their audio and timestamps."""
        self.dropped += packets
        queue = self._queue
        skipped = 0
        while queue and skipped < packets:
            item = queue[0]
            if item.loop and len(queue) > 1:
                queue.popleft()
                done.append((item.deferred, PlayResult.COMPLETED))
                continue
            step = packets - skipped
            if item.loop:
                item.position = (item.position + step) % len(item.payloads)
            else:
                step = min(step, len(item.payloads) - item.position)
                item.position += step
                if item.position == len(item.payloads):
                    queue.popleft()
                    done.append((item.deferred, PlayResult.COMPLETED))
            skipped += step
        self._skipTimestamps(skipped)
        self._nextSlot += skipped * self._stepSlots
