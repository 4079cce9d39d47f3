# -*- test-case-name: tests.test_callback_announcer -*-
"""
What each party hears before the join.

- user1 answers: announcement C{ann_id1} (or the configured default), then
  ringback until the join. The duration timer and the call to user2 start at
  user1's answer, not after the announcement (the spec).
- user2 answers: C{ann_id2} (if given), then C{ann_digit2} spoken digit by
  digit (if given), then silence until the join: user2 has answered a call,
  and ringback would tell it the call is still being placed.
- The join waits until every announcement has been heard in full: user1's
  and user2's both (L{Playback.done} of each).

Audio goes out of the leg's own RTP port to the address and port of the
leg's SDP answer, in the codec the answer chose (PCMU or PCMA).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from callback_tw.callback.errors import CallbackRefused
from callback_tw.media.codecs import PAYLOAD_TYPES
from callback_tw.media.player import RTPScheduler, RTPStream, choosePtime
from callback_tw.media.prompts import PromptCatalogue
from callback_tw.sip.sdp import SdpError, parseAudio


class Playback:
    """
    The media of one leg before the join.

    @ivar done: fires when what was asked for has been played (or the
        playback was stopped); never errbacks.
    """

    def __init__(self, stream: RTPStream | None, done: Deferred) -> None:
        self.stream = stream
        self.done = done

    def stop(self) -> None:
        """Stop sending (join, hang-up); C{done} fires if it has not yet."""
        if self.stream is not None:
            self.stream.stop()


class Announcer:
    """
    Plays announcements, digits and ringback on the legs of callbacks.

    @param defaultAnnId1: played to user1 when the REQUEST names no
        C{ann_id1}; empty for none.
    @param ringback: (frequency Hz, on s, off s), or None for no ringback.
    """

    _log = Logger()

    def __init__(
        self,
        catalogue: PromptCatalogue,
        scheduler: RTPScheduler,
        defaultAnnId1: str = "",
        ringback: tuple[float, float, float] | None = None,
    ) -> None:
        self._catalogue = catalogue
        self._scheduler = scheduler
        self._defaultAnnId1 = defaultAnnId1
        self._ringback = ringback

    def checkRequest(self, request: Any) -> None:
        """
        Refuse a REQUEST naming an announcement that has no file, before
        any call is placed.
        """
        for name, annId in (("ann_id1", request.annId1), ("ann_id2", request.annId2)):
            if annId is not None and not self._catalogue.hasAnnouncement(annId):
                raise CallbackRefused(f"{name}={annId}: no such announcement")

    def _stream(self, call: Any, rtp: Any, sdp: str) -> tuple[RTPStream | None, str]:
        try:
            audio = parseAudio(sdp)
        except SdpError as e:
            self._log.warn(
                "callback {id}: no announcement, {error}", id=call.callbackId, error=e
            )
            return None, ""
        first = audio.firstVoiceCodec()
        if first is None or first[0] not in PAYLOAD_TYPES or audio.port == 0:
            self._log.warn(
                "callback {id}: no announcement, answer chose {codec}",
                id=call.callbackId,
                codec=first,
            )
            return None, ""
        codec, pt = first
        stream = RTPStream(
            self._scheduler,
            rtp,
            (audio.address, audio.port),
            pt,
            choosePtime(audio.ptime),
        )
        return stream, codec

    def announceUser1(self, call: Any, leg: Any, rtp: Any, sdp: str) -> Playback:
        """user1 answered: its announcement, then ringback until stopped."""
        stream, codec = self._stream(call, rtp, sdp)
        if stream is None:
            return Playback(None, succeed(None))
        annId = call.request.annId1 or self._defaultAnnId1
        done: Deferred = succeed(None)
        if annId:
            self._log.debug(
                "callback {id} playing {ann} to user1", id=call.callbackId, ann=annId
            )
            done = stream.play(self._catalogue.announcement(annId, codec))
        if self._ringback is not None:
            frequency, on, off = self._ringback
            stream.loop(self._catalogue.ringback(frequency, on, off, codec))
        return Playback(stream, done)

    def announceUser2(self, call: Any, leg: Any, rtp: Any, sdp: str) -> Playback:
        """user2 answered: ann_id2, then ann_digit2; C{done} when both played."""
        request = call.request
        if request.annId2 is None and request.annDigit2 is None:
            return Playback(None, succeed(None))
        stream, codec = self._stream(call, rtp, sdp)
        if stream is None:
            return Playback(None, succeed(None))
        done: Deferred = succeed(None)
        if request.annId2 is not None:
            self._log.debug(
                "callback {id} playing {ann} to user2",
                id=call.callbackId,
                ann=request.annId2,
            )
            done = stream.play(self._catalogue.announcement(request.annId2, codec))
        if request.annDigit2 is not None:
            self._log.debug(
                "callback {id} speaking {digits} to user2",
                id=call.callbackId,
                digits=request.annDigit2,
            )
            done = stream.play(self._catalogue.digits(request.annDigit2, codec))
        return Playback(stream, done)
