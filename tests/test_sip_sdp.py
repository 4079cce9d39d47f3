"""
Tests for L{callback_tw.sip.sdp}: the offers the server writes, the relay of
the other party's media under a leg's own origin, and reading an answer's
audio stream.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from callback_tw.sip.sdp import (
    SdpError,
    SdpSession,
    parseAudio,
    sharedVoiceCodecs,
)
from tests.siphelpers import farSdp, originVersion


class OfferTests(SynchronousTestCase):
    def test_offer(self) -> None:
        """
        Our offer lists PCMU, PCMA and telephone-event (101, events 0-15) on
        the given address and port, 20 ms, sendrecv.
        """
        sdp = SdpSession("192.0.2.1", sessionId=7).offer("192.0.2.2", 40000)
        self.assertEqual(
            sdp,
            "v=0\r\n"
            "o=callback_tw 7 7 IN IP4 192.0.2.1\r\n"
            "s=callback_tw\r\n"
            "c=IN IP4 192.0.2.2\r\n"
            "t=0 0\r\n"
            "m=audio 40000 RTP/AVP 0 8 101\r\n"
            "a=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:8 PCMA/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\n"
            "a=fmtp:101 0-15\r\n"
            "a=ptime:20\r\n"
            "a=sendrecv\r\n",
        )

    def test_offerParsesBack(self) -> None:
        """What we offer, we read back as the same voice codecs and port."""
        audio = parseAudio(SdpSession("192.0.2.1").offer("192.0.2.2", 40000))
        self.assertEqual(
            (audio.address, audio.port, audio.codecs, audio.payloadTypes),
            ("192.0.2.2", 40000, ("PCMU", "PCMA", "TELEPHONE-EVENT"), (0, 8, 101)),
        )
        self.assertEqual(audio.audioCodecs(), {"PCMU", "PCMA"})


class RelayTests(SynchronousTestCase):
    def test_relayKeepsMediaUnderOurOrigin(self) -> None:
        """
        The other party's SDP is offered as it is, but under this leg's
        origin (our session id), with the version one higher each time.
        """
        session = SdpSession("192.0.2.1", sessionId=5)
        other = farSdp(port=6100, version=9, host="192.0.2.9")
        first = session.relay(other)
        second = session.relay(other)
        self.assertEqual(originVersion(first), ("5", 6))
        self.assertEqual(originVersion(second), ("5", 7))
        self.assertEqual(
            first.split("\r\n")[2:], other.split("\r\n")[2:], "media lines kept"
        )

    def test_relayWithoutOrigin(self) -> None:
        """An SDP with no o= line gets ours after v=."""
        session = SdpSession("192.0.2.1", sessionId=5)
        relayed = session.relay("v=0\nc=IN IP4 192.0.2.9\nm=audio 6000 RTP/AVP 8\n")
        self.assertEqual(
            relayed,
            "v=0\r\n"
            "o=callback_tw 5 6 IN IP4 192.0.2.1\r\n"
            "c=IN IP4 192.0.2.9\r\n"
            "m=audio 6000 RTP/AVP 8\r\n",
        )


class ParseAudioTests(SynchronousTestCase):
    def test_staticPayloadWithoutRtpmap(self) -> None:
        """
        A static payload type without rtpmap gets its RFC 3551 name; a
        dynamic one without rtpmap is named by its number; ptime is read.
        """
        audio = parseAudio(
            "v=0\r\no=x 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\n"
            "t=0 0\r\nm=audio 6000 RTP/AVP 18 8 13 97\r\na=ptime:30\r\n"
        )
        self.assertEqual(audio.codecs, ("G729", "PCMA", "CN", "PT97"))
        self.assertEqual(audio.ptime, 30)
        self.assertEqual(audio.firstVoiceCodec(), ("G729", 18))
        self.assertEqual(audio.audioCodecs(), {"G729", "PCMA", "PT97"})

    def test_mediaConnectionAddress(self) -> None:
        """A c= line in the media section wins over the session's."""
        audio = parseAudio(
            "v=0\r\no=x 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\n"
            "t=0 0\r\nm=audio 6000 RTP/AVP 0\r\nc=IN IP4 192.0.2.10\r\n"
        )
        self.assertEqual((audio.address, audio.ptime), ("192.0.2.10", 20))

    def test_onlyTelephoneEvent(self) -> None:
        """An answer with no voice codec has no first voice codec."""
        audio = parseAudio(farSdp(codec=(101, "telephone-event")))
        self.assertIsNone(audio.firstVoiceCodec())

    def test_noAudio(self) -> None:
        """An SDP without an audio stream, or not SDP at all, is an SdpError."""
        video = farSdp().replace("m=audio", "m=video")
        self.assertRaises(SdpError, parseAudio, video)
        self.assertRaises(SdpError, parseAudio, "")

    def test_sharedVoiceCodecs(self) -> None:
        """Two answers share the voice codecs both list, not telephone-event."""
        a = parseAudio(SdpSession("192.0.2.1").offer("192.0.2.1", 40000))
        b = parseAudio(farSdp(codec=(8, "PCMA")))
        c = parseAudio(farSdp(codec=(18, "G729")))
        self.assertEqual(sharedVoiceCodecs(a, b), {"PCMA"})
        self.assertEqual(sharedVoiceCodecs(b, c), set())
