"""
Tests for L{callback_tw.sip.sdp}: the offers the server writes, the relay of
the other party's media under a leg's own origin, and reading an answer's
audio stream.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from callback_tw.sip.sdp import (
    AudioStream,
    SdpError,
    SdpSession,
    parseAudio,
    sharedVoiceCodecs,
)
from tests.siphelpers import farSdp, originVersion

_HEAD = "v=0\r\no=phone 7 7 IN IP4 198.51.100.7\r\ns=-\r\n"


def _sdp(*lines: str) -> str:
    """A body with a valid session head and then C{lines}, CRLF-terminated."""
    return _HEAD + "".join(line + "\r\n" for line in lines)


def _stream(*codecs: str) -> AudioStream:
    """An answer with C{codecs}, in order, on dynamic payload types."""
    return AudioStream(
        "192.0.2.9", 4000, tuple(codecs), tuple(range(96, 96 + len(codecs)))
    )


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

    def test_randomSessionIds(self) -> None:
        """
        Without a given id each session draws its own, so two legs' sessions
        are told apart by the far end.
        """
        ids = {SdpSession("192.0.2.1").sessionId for _ in range(20)}
        self.assertGreater(len(ids), 1)
        for sessionId in ids:
            self.assertGreaterEqual(sessionId, 1)
            self.assertLess(sessionId, 2**31)


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

    def test_onlyRelaysRaiseTheVersion(self) -> None:
        """
        An offer of our own media keeps the version; each relay raises it by
        one, and the session id never changes.
        """
        session = SdpSession("192.0.2.1", sessionId=1000)
        first = session.offer("192.0.2.5", 40000)
        again = session.offer("192.0.2.5", 40000)
        relayed = session.relay(farSdp())
        self.assertEqual(
            [originVersion(b) for b in (first, again, relayed)],
            [("1000", 1000), ("1000", 1000), ("1000", 1001)],
        )

    def test_bareNewlinesAndBlankLines(self) -> None:
        """
        A body with bare LF line ends comes out with CRLF, blank lines
        dropped, every other line kept in order.
        """
        session = SdpSession("192.0.2.1", sessionId=1000)
        relayed = session.relay(
            "v=0\no=x 9 9 IN IP4 9.9.9.9\ns=-\n\nc=IN IP4 9.9.9.9\nt=0 0\n"
            "m=audio 7 RTP/AVP 0\n\n"
        )
        self.assertEqual(
            relayed,
            "v=0\r\n"
            "o=callback_tw 1000 1001 IN IP4 192.0.2.1\r\n"
            "s=-\r\n"
            "c=IN IP4 9.9.9.9\r\n"
            "t=0 0\r\n"
            "m=audio 7 RTP/AVP 0\r\n",
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

    def test_sessionConnection(self) -> None:
        """
        Without a c= line of its own the audio stream uses the session's.
        """
        stream = parseAudio(
            _sdp("c=IN IP4 192.0.2.1", "t=0 0", "m=audio 6000 RTP/AVP 0")
        )
        self.assertEqual((stream.address, stream.port), ("192.0.2.1", 6000))

    def test_rtpmapNamesAndMalformedAttributes(self) -> None:
        """
        rtpmap names are upper-cased; a malformed rtpmap or ptime is ignored
        (the name then comes from the payload type, ptime is 20).
        """
        stream = parseAudio(
            _sdp(
                "c=IN IP4 192.0.2.1",
                "t=0 0",
                "m=audio 6000 RTP/AVP 8 96 97",
                "a=rtpmap:8 pcma/8000",
                "a=rtpmap:96 opus/48000/2",
                "a=rtpmap:x y",
                "a=ptime:soon",
            )
        )
        self.assertEqual(stream.codecs, ("PCMA", "OPUS", "PT97"))
        self.assertEqual(stream.payloadTypes, (8, 96, 97))
        self.assertEqual(stream.ptime, 20)

    def test_firstAudioStream(self) -> None:
        """
        A video stream before the audio is skipped; of two audio streams the
        first is read.
        """
        stream = parseAudio(
            _sdp(
                "c=IN IP4 192.0.2.1",
                "t=0 0",
                "m=video 5000 RTP/AVP 31",
                "m=audio 6000 RTP/AVP 0",
                "m=audio 7000 RTP/AVP 8",
            )
        )
        self.assertEqual((stream.port, stream.codecs), (6000, ("PCMU",)))

    def test_rejectedStream(self) -> None:
        """
        A rejected stream (port 0) is returned as it is: port 0.
        """
        stream = parseAudio(_sdp("c=IN IP4 192.0.2.1", "t=0 0", "m=audio 0 RTP/AVP 0"))
        self.assertEqual(stream.port, 0)

    def test_unusable(self) -> None:
        """
        An audio stream without any connection address, and text that is not
        SDP, raise L{SdpError} (a L{ValueError}).
        """
        self.assertRaises(SdpError, parseAudio, _sdp("t=0 0", "m=audio 6000 RTP/AVP 0"))
        self.assertRaises(SdpError, parseAudio, "this is not SDP")
        self.assertTrue(issubclass(SdpError, ValueError))


class VoiceCodecTests(SynchronousTestCase):
    """
    Which codecs carry voice: telephone-event and comfort noise do not.
    """

    def test_audioCodecs(self) -> None:
        """
        L{AudioStream.audioCodecs} leaves out telephone-event and CN.
        """
        stream = _stream("TELEPHONE-EVENT", "PCMA", "CN", "PCMU")
        self.assertEqual(stream.audioCodecs(), {"PCMA", "PCMU"})

    def test_firstVoiceCodec(self) -> None:
        """
        L{AudioStream.firstVoiceCodec} skips telephone-event and CN and gives
        the first voice codec with its payload type.
        """
        self.assertEqual(
            _stream("TELEPHONE-EVENT", "CN", "PCMA", "PCMU").firstVoiceCodec(),
            ("PCMA", 98),
        )

    def test_onlyEventsInCommon(self) -> None:
        """
        Two answers that share only telephone-event and CN share no voice
        codec: the set is empty (the join is not attempted).
        """
        self.assertEqual(
            sharedVoiceCodecs(
                _stream("PCMU", "TELEPHONE-EVENT", "CN"),
                _stream("PCMA", "TELEPHONE-EVENT", "CN"),
            ),
            set(),
        )
