"""
Tests for L{callback_tw.sip.sdp}: the offers a leg makes, the other party's
SDP relayed under the leg's own origin, and what is read from an answer.
"""

from twisted.trial.unittest import SynchronousTestCase

from callback_tw.sip.sdp import (
    AudioStream,
    SdpError,
    SdpSession,
    parseAudio,
    sharedVoiceCodecs,
)

_HEAD = "v=0\r\no=phone 7 7 IN IP4 198.51.100.7\r\ns=-\r\n"


def _sdp(*lines: str) -> str:
    """A body with a valid session head and then C{lines}, CRLF-terminated."""
    return _HEAD + "".join(line + "\r\n" for line in lines)


def _origin(body: str) -> list[str]:
    """The fields of the (single) o= line of C{body}."""
    origins = [line for line in body.split("\r\n") if line.startswith("o=")]
    if len(origins) != 1:
        raise AssertionError(f"expected one o= line, got {origins!r}")
    return origins[0][2:].split()


def _stream(*codecs: str) -> AudioStream:
    """An answer with C{codecs}, in order, on dynamic payload types."""
    return AudioStream(
        "192.0.2.9", 4000, tuple(codecs), tuple(range(96, 96 + len(codecs)))
    )


class OfferTests(SynchronousTestCase):
    """
    L{SdpSession.offer}: the server's own media on a leg's RTP port.
    """

    def test_offerOnOwnPort(self) -> None:
        """
        The offer names the RTP address and port given, offers PCMU, PCMA
        and telephone-event at 20 ms, and reads back as exactly that.
        """
        session = SdpSession("192.0.2.1", sessionId=42)
        offer = session.offer("192.0.2.5", 40000)
        self.assertIn("c=IN IP4 192.0.2.5\r\n", offer)
        self.assertIn("m=audio 40000 RTP/AVP 0 8 101\r\n", offer)
        self.assertIn("a=rtpmap:101 telephone-event/8000\r\n", offer)
        self.assertTrue(offer.endswith("\r\n"))
        self.assertNotIn("\n", offer.replace("\r\n", ""))
        self.assertEqual(
            parseAudio(offer),
            AudioStream(
                "192.0.2.5",
                40000,
                ("PCMU", "PCMA", "TELEPHONE-EVENT"),
                (0, 8, 101),
                20,
            ),
        )

    def test_origin(self) -> None:
        """
        The o= line carries the session's id and version and the session's
        own address (not the RTP address).
        """
        session = SdpSession("192.0.2.1", sessionId=42)
        offer = session.offer("192.0.2.5", 40000)
        self.assertEqual(
            _origin(offer), ["callback_tw", "42", "42", "IN", "IP4", "192.0.2.1"]
        )

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
    """
    L{SdpSession.relay}: during the join each leg is offered the other
    party's media under its own origin, one version higher each time
    (RFC 3264 8).
    """

    def setUp(self) -> None:
        self.session = SdpSession("192.0.2.1", sessionId=1000)
        self.other = _sdp(
            "c=IN IP4 203.0.113.4", "t=0 0", "m=audio 5004 RTP/AVP 8", "a=sendrecv"
        )

    def test_mediaKeptOriginReplaced(self) -> None:
        """
        Every line of the other party's SDP is kept in order except its o=
        line, which becomes this leg's origin with the next version.
        """
        relayed = self.session.relay(self.other)
        self.assertEqual(
            relayed,
            "v=0\r\n"
            "o=callback_tw 1000 1001 IN IP4 192.0.2.1\r\n"
            "s=-\r\n"
            "c=IN IP4 203.0.113.4\r\n"
            "t=0 0\r\n"
            "m=audio 5004 RTP/AVP 8\r\n"
            "a=sendrecv\r\n",
        )
        stream = parseAudio(relayed)
        self.assertEqual((stream.address, stream.port), ("203.0.113.4", 5004))

    def test_versionUpByOneEachTime(self) -> None:
        """
        Each relay (and only a relay) raises the version by one; the session
        id stays.
        """
        first = self.session.offer("192.0.2.5", 40000)
        second = self.session.relay(self.other)
        third = self.session.relay(self.other)
        self.assertEqual([_origin(b)[1] for b in (first, second, third)], ["1000"] * 3)
        self.assertEqual(
            [_origin(b)[2] for b in (first, second, third)], ["1000", "1001", "1002"]
        )
        self.assertEqual(self.session.version, 1002)

    def test_bareNewlinesAndBlankLines(self) -> None:
        """
        A body with bare LF line ends comes out with CRLF, blank lines
        dropped.
        """
        relayed = self.session.relay(
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

    def test_originAddedWhenMissing(self) -> None:
        """
        A body without an o= line gets this leg's origin right after v=.
        """
        relayed = self.session.relay("v=0\r\ns=-\r\nm=audio 7 RTP/AVP 0\r\n")
        self.assertEqual(
            relayed.split("\r\n")[:3],
            ["v=0", "o=callback_tw 1000 1001 IN IP4 192.0.2.1", "s=-"],
        )


class ParseAudioTests(SynchronousTestCase):
    """
    L{parseAudio} reads the first audio stream of an answer.
    """

    def test_mediaConnectionWins(self) -> None:
        """
        A c= line in the audio section wins over the session's; the order of
        the m= line is kept, rtpmap names are upper-cased, a=ptime is read.
        """
        stream = parseAudio(
            _sdp(
                "c=IN IP4 192.0.2.1",
                "t=0 0",
                "m=audio 6000 RTP/AVP 8 0",
                "c=IN IP4 192.0.2.2",
                "a=rtpmap:8 pcma/8000",
                "a=ptime:30",
            )
        )
        self.assertEqual(
            stream, AudioStream("192.0.2.2", 6000, ("PCMA", "PCMU"), (8, 0), 30)
        )

    def test_sessionConnection(self) -> None:
        """
        Without a c= line of its own the audio stream uses the session's.
        """
        stream = parseAudio(
            _sdp("c=IN IP4 192.0.2.1", "t=0 0", "m=audio 6000 RTP/AVP 0")
        )
        self.assertEqual((stream.address, stream.port), ("192.0.2.1", 6000))

    def test_namesWithoutRtpmap(self) -> None:
        """
        Static payload types without an rtpmap get their RFC 3551 names; a
        dynamic one without an rtpmap is named C{PT<n>}; a malformed rtpmap
        or ptime is ignored (ptime then 20).
        """
        stream = parseAudio(
            _sdp(
                "c=IN IP4 192.0.2.1",
                "t=0 0",
                "m=audio 6000 RTP/AVP 18 3 9 13 96 97",
                "a=rtpmap:96 opus/48000/2",
                "a=rtpmap:x y",
                "a=ptime:soon",
            )
        )
        self.assertEqual(stream.codecs, ("G729", "GSM", "G722", "CN", "OPUS", "PT97"))
        self.assertEqual(stream.payloadTypes, (18, 3, 9, 13, 96, 97))
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

    def test_errors(self) -> None:
        """
        No audio stream, an audio stream without any connection address, and
        a body that is not SDP raise L{SdpError} (a L{ValueError}).
        """
        bodies = [
            _sdp("c=IN IP4 192.0.2.1", "t=0 0", "m=video 5000 RTP/AVP 31"),
            _sdp("t=0 0", "m=audio 6000 RTP/AVP 0"),
            "this is not SDP",
            "",
        ]
        for body in bodies:
            self.assertRaises(SdpError, parseAudio, body)
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
        L{AudioStream.firstVoiceCodec} is the first voice codec of the m=
        line with its payload type, or C{None} when there is none.
        """
        self.assertEqual(
            _stream("TELEPHONE-EVENT", "CN", "PCMA", "PCMU").firstVoiceCodec(),
            ("PCMA", 98),
        )
        self.assertIsNone(_stream("TELEPHONE-EVENT", "CN").firstVoiceCodec())

    def test_shared(self) -> None:
        """
        L{sharedVoiceCodecs} is what both answers can decode, whatever the
        order.
        """
        self.assertEqual(
            sharedVoiceCodecs(_stream("PCMU", "PCMA"), _stream("G729", "PCMA")),
            {"PCMA"},
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
