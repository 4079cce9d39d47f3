# -*- test-case-name: tests.test_sip_sdp,tests.test_media_player -*-
"""
The codec facts the server relies on, in one place: which voice codecs it
offers and plays (G.711 u-law and A-law), their static RTP payload types,
clock rate and silence byte, the telephone-event payload it offers, and the
names that do not carry voice.

The SDP writer and reader (L{callback_tw.sip.sdp}), the prompt catalogue,
the RTP player and the announcer all read them from here, so adding a codec
or moving telephone-event is one change. This module imports nothing else
of callback_tw.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "COMFORT_NOISE",
    "NOT_VOICE",
    "PAYLOAD_TYPES",
    "PCMA",
    "PCMU",
    "SAMPLE_RATE",
    "SILENCE",
    "SILENCE_BY_PAYLOAD_TYPE",
    "STATIC_NAMES",
    "TELEPHONE_EVENT",
    "TELEPHONE_EVENT_PT",
    "TELEPHONE_EVENTS",
    "VOICE_CODECS",
    "Codec",
]

SAMPLE_RATE = 8000
"""G.711 sample and RTP clock rate; one sample is one byte on the wire."""


@dataclass(frozen=True)
class Codec:
    """
    One voice codec this server can play.

    @ivar name: the encoding name as in an SDP rtpmap, upper case.
    @ivar payloadType: its static RTP payload type (RFC 3551).
    @ivar clockRate: its RTP clock rate in Hz.
    @ivar silence: the byte that encodes a zero sample (used for padding).
    """

    name: str
    payloadType: int
    clockRate: int
    silence: int


PCMU = Codec("PCMU", 0, SAMPLE_RATE, 0xFF)
PCMA = Codec("PCMA", 8, SAMPLE_RATE, 0xD5)

VOICE_CODECS: tuple[Codec, ...] = (PCMU, PCMA)
"""The codecs offered (in this order of preference) and prompts are encoded to."""

PAYLOAD_TYPES: Mapping[str, int] = {c.name: c.payloadType for c in VOICE_CODECS}
"""Payload type of each voice codec, by name."""

SILENCE: Mapping[str, int] = {c.name: c.silence for c in VOICE_CODECS}
"""Silence byte of each voice codec, by name."""

SILENCE_BY_PAYLOAD_TYPE: Mapping[int, int] = {
    c.payloadType: c.silence for c in VOICE_CODECS
}
"""Silence byte of each voice codec, by payload type."""

TELEPHONE_EVENT = "TELEPHONE-EVENT"
"""RFC 4733 DTMF events, as the upper-cased rtpmap name."""

TELEPHONE_EVENT_PT = 101
"""The dynamic payload type offered for telephone-event."""

TELEPHONE_EVENTS = "0-15"
"""The events offered (fmtp): the 16 DTMF digits."""

COMFORT_NOISE = "CN"
"""RFC 3389 comfort noise."""

NOT_VOICE = frozenset({TELEPHONE_EVENT, COMFORT_NOISE})
"""Payload names an m= line may list that carry no voice."""

STATIC_NAMES: Mapping[int, str] = {
    0: "PCMU",
    3: "GSM",
    4: "G723",
    8: "PCMA",
    9: "G722",
    13: "CN",
    18: "G729",
}
"""RFC 3551 static payload types, for m= lines without an rtpmap."""
