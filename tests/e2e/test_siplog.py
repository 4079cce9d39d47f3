"""
Tests of L{tests.e2e.siplog}: SIPp's message file parsed as the end-to-end
tests read it, with no process started.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.e2e.siplog import distinct, parseMessageLog, parseSipMessage

SAMPLE_LOG = (
    "----------------------------------------------- 2026-11-27 04:00:36.897641\n"
    "UDP message received [330] bytes :\n"
    "\n"
    "INVITE sip:answer1@127.0.0.1:56376 SIP/2.0\r\n"
    "v: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1\r\n"
    "f: <sip:1000@127.0.0.1>;tag=a\r\n"
    "t: <sip:answer1@127.0.0.1>\r\n"
    "i: call-1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Subject: folded\r\n"
    "  header\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 42\r\n"
    "\r\n"
    "c=IN IP4 1.2.3.4\r\n"
    "m=audio 4000 RTP/AVP 0\r\n"
    "\n\n"
    "----------------------------------------------- 2026-11-27 04:00:37.000001\n"
    "UDP message sent (120 bytes):\n"
    "\n"
    "SIP/2.0 200 OK\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1\n"
    "Call-ID: call-1\n"
    "CSeq: 1 INVITE\n"
    "Content-Length: 0\n"
    "\n"
    "\n"
    "----------------------------------------------- 2026-11-27 04:00:38.500000\n"
    "UDP message received [90] bytes :\n"
    "\n"
    "ACK sip:answer1@127.0.0.1:56376 SIP/2.0\n"
    "Call-ID: call-1\n"
    "CSeq: 1 ACK\n"
    "Content-Length: 0\n"
    "\n"
    "Unexpected UDP message received:\n"
    "\n"
    "ACK sip:answer1@127.0.0.1:56376 SIP/2.0\n"
    "Call-ID: call-1\n"
    "\n"
)


class MessageLogParserTests(SynchronousTestCase):
    """
    L{parseMessageLog} and L{parseSipMessage} read SIPp's message file.
    """

    def test_entries(self) -> None:
        """
        Each logged message becomes one L{SipMessage} with its direction,
        first line, method or status, time, headers and body; a message SIPp
        also logged as unexpected is returned once.
        """
        messages = parseMessageLog(SAMPLE_LOG)
        self.assertEqual(
            [(m.direction, m.methodOrStatus, m.firstLine) for m in messages],
            [
                ("received", "INVITE", "INVITE sip:answer1@127.0.0.1:56376 SIP/2.0"),
                ("sent", "200", "SIP/2.0 200 OK"),
                ("received", "ACK", "ACK sip:answer1@127.0.0.1:56376 SIP/2.0"),
            ],
        )
        self.assertAlmostEqual(messages[1].time - messages[0].time, 0.10236, places=5)
        self.assertAlmostEqual(messages[2].time - messages[0].time, 1.602359, places=5)
        invite, ok, ack = messages
        self.assertEqual(invite.method, "INVITE")
        self.assertIsNone(invite.status)
        self.assertEqual(ok.status, 200)
        self.assertIsNone(ok.method)
        self.assertEqual(ack.body, "")

    def test_headers(self) -> None:
        """
        Header names are lower-case with compact forms expanded; folded lines
        are joined; the body is cut at Content-Length.
        """
        invite = parseMessageLog(SAMPLE_LOG)[0]
        self.assertEqual(invite.callId, "call-1")
        self.assertEqual(
            invite.headers["via"], ["SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1"]
        )
        self.assertEqual(invite.header("FROM"), "<sip:1000@127.0.0.1>;tag=a")
        self.assertEqual(invite.header("subject"), "folded header")
        self.assertEqual(invite.cseqMethod, "INVITE")
        self.assertEqual(invite.requestUser, "answer1")
        self.assertEqual(invite.body, "c=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 0\r\n")
        self.assertEqual(invite.mediaAddress(), ("1.2.3.4", 4000))
        self.assertEqual(invite.payloadTypes(), [0])
        self.assertIsNone(invite.header("contact"))

    def test_repeatedHeaders(self) -> None:
        """
        A header that appears twice keeps both values, in order.
        """
        message = parseSipMessage(
            b"SIP/2.0 180 Ringing\r\nVia: a\r\nVia: b\r\nCSeq: 7 INVITE\r\n\r\n",
            "sent",
            5.0,
        )
        self.assertEqual(message.headers["via"], ["a", "b"])
        self.assertEqual(message.status, 180)
        self.assertEqual(message.cseqMethod, "INVITE")
        self.assertEqual(message.time, 5.0)

    def test_distinctDropsRetransmissions(self) -> None:
        """
        L{distinct} drops a repeated message (same direction, first line,
        Call-ID, CSeq, Via), keeping the first.
        """
        text = "SIP/2.0 200 OK\r\nVia: v\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n"
        first = parseSipMessage(text, "sent", 1.0)
        again = parseSipMessage(text, "sent", 1.5)
        other = parseSipMessage(text.replace("1 INVITE", "2 INVITE"), "sent", 2.0)
        self.assertEqual(distinct([first, again, other]), [first, other])
