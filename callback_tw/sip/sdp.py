# -*- test-case-name: tests.test_sip_sdp -*-
"""
The SDP this server writes and the little it needs to read.

The server is an offerer twice per leg: once with its own RTP port (to play
announcements) and once per join re-INVITE, where it offers the other
party's media (RFC 3725). sippy sends a body as given and does not manage the
origin line, so each leg keeps one L{SdpSession}: one C{o=} session id, and a
version that goes up by one with every new offer (RFC 4566 5.2, RFC 3264 8).
Parsing uses sippy's own SDP classes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sippy.SdpBody import SdpBody
from sippy.SdpMedia import MTAudio

from callback_tw.media.codecs import (
    NOT_VOICE,
    SAMPLE_RATE,
    STATIC_NAMES,
    TELEPHONE_EVENT_PT,
    TELEPHONE_EVENTS,
    VOICE_CODECS,
)


class SdpError(ValueError):
    """An SDP body that has no usable audio stream."""


@dataclass(frozen=True)
class AudioStream:
    """
    The first audio stream of an SDP body, as far as this server cares.

    @ivar address: where the party receives RTP (c= line)
    @ivar port: RTP port (m= line); 0 means the stream is rejected
    @ivar codecs: encoding names in the order of the m= line, upper case
        (e.g. C{("PCMU", "TELEPHONE-EVENT")})
    @ivar payloadTypes: the payload type of each codec, same order
    @ivar ptime: packetisation time in ms (a=ptime), 20 when absent
    """

    address: str
    port: int
    codecs: tuple[str, ...]
    payloadTypes: tuple[int, ...]
    ptime: int = 20

    def audioCodecs(self) -> set[str]:
        """Codec names that carry voice (not telephone-event / comfort noise)."""
        return {c for c in self.codecs if c not in NOT_VOICE}

    def firstVoiceCodec(self) -> tuple[str, int] | None:
        """The first voice codec of the m= line, as (name, payload type)."""
        for name, pt in zip(self.codecs, self.payloadTypes, strict=True):
            if name not in NOT_VOICE:
                return name, pt
        return None


def parseAudio(text: str) -> AudioStream:
    """
    Read the first audio stream of an SDP body.

    @raise SdpError: no audio m= line, or no connection address.
    """
    try:
        body = SdpBody(text)
    except Exception as e:
        raise SdpError(f"unparsable SDP: {e}") from e
    sessionAddress = body.c_header.addr if body.c_header is not None else None
    for section in body.sections:
        media = section.m_header
        if media is None or media.type is not MTAudio:
            continue
        address = (
            section.c_header.addr if section.c_header is not None else sessionAddress
        )
        if address is None:
            raise SdpError("audio stream without a connection address")
        names: dict[int, str] = {}
        ptime = 20
        for header in section.a_headers:
            if header.name == "rtpmap" and header.value:
                pt, _, encoding = header.value.partition(" ")
                try:
                    names[int(pt)] = encoding.split("/")[0].upper()
                except ValueError:
                    continue
            elif header.name == "ptime" and header.value:
                try:
                    ptime = int(header.value)
                except ValueError:
                    pass
        payloadTypes = tuple(int(x) for x in media.formats)
        codecs = tuple(
            names.get(pt, STATIC_NAMES.get(pt, f"PT{pt}")) for pt in payloadTypes
        )
        return AudioStream(address, int(media.port), codecs, payloadTypes, ptime)
    raise SdpError("no audio stream in SDP")


def sharedVoiceCodecs(a: AudioStream, b: AudioStream) -> set[str]:
    """
    The voice codecs two answers have in common.

    A join offers each party the other's media; when their answers share no
    voice codec, neither can decode the other, so the join is not attempted.
    """
    return a.audioCodecs() & b.audioCodecs()


class SdpSession:
    """
    The origin (o=) of one leg's SDP session, as RFC 3264 wants it: the same
    session id throughout, the version one higher with every changed offer.
    """

    def __init__(self, address: str, sessionId: int | None = None) -> None:
        self.address = address
        self.sessionId = (
            sessionId if sessionId is not None else random.randrange(1, 2**31)
        )
        self.version = self.sessionId

    def _origin(self) -> str:
        return (
            f"o=callback_tw {self.sessionId} {self.version} IN IP4 {self.address}\r\n"
        )

    def offer(self, rtpAddress: str, rtpPort: int) -> str:
        """Our own media: the voice codecs and telephone-event on C{rtpPort}."""
        pts = " ".join(str(c.payloadType) for c in VOICE_CODECS)
        lines = [
            "v=0\r\n",
            self._origin(),
            "s=callback_tw\r\n",
            f"c=IN IP4 {rtpAddress}\r\n",
            "t=0 0\r\n",
            f"m=audio {rtpPort} RTP/AVP {pts} {TELEPHONE_EVENT_PT}\r\n",
        ]
        lines += [
            f"a=rtpmap:{c.payloadType} {c.name}/{c.clockRate}\r\n" for c in VOICE_CODECS
        ]
        lines += [
            f"a=rtpmap:{TELEPHONE_EVENT_PT} telephone-event/{SAMPLE_RATE}\r\n",
            f"a=fmtp:{TELEPHONE_EVENT_PT} {TELEPHONE_EVENTS}\r\n",
            "a=ptime:20\r\n",
            "a=sendrecv\r\n",
        ]
        return "".join(lines)

    def relay(self, otherSdp: str) -> str:
        """
        The other party's SDP, offered on this leg: its media lines as they
        are, under this leg's origin with the next version.
        """
        self.version += 1
        out = []
        for line in otherSdp.replace("\r\n", "\n").split("\n"):
            if not line.strip():
                continue
            if line.startswith("o="):
                out.append(self._origin())
            else:
                out.append(line.rstrip("\r") + "\r\n")
        if not any(line.startswith("o=") for line in out):
            out.insert(1, self._origin())
        return "".join(out)
