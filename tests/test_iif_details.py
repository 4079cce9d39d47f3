"""
Tests for C{[peer NAME] response_details}: what a RESPONSE carries after
C{real_duration} when the peer asks for it, live and re-sent from the store.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from callback_tw.callback.call import CallResult
from callback_tw.iif.message import Response, formatResponse, parseServerReply
from callback_tw.iif.peers import Peer
from callback_tw.iif.signing import sign, verify
from callback_tw.store.records import endWord
from tests.iifhelpers import PEER, makeProtocol
from tests.storehelpers import MemoryStore

REQUEST = b"REQUEST: id=1234;user1=100;user2=101;duration=3600;"
ACK_OK = b"ACK: id=1234;code=ok;"

#: A callback that talked 5 s: user1 answered at 1000.5, user2 at 1002,
#: joined at 1003.25 (after the announcements), user2 hung up at 1008.25.
TALKED = CallResult(
    5,
    "user2 hung up",
    {"leg1Status": 200, "leg1Reason": "user2 hung up", "leg2Status": 200},
    {
        "answered1At": 1000.5,
        "answered2At": 1002.0,
        "joinedAt": 1003.25,
        "endedAt": 1008.25,
    },
)
TALKED_DETAILED = (
    b"RESPONSE: id=1234;real_duration=5;cause=user2_hangup;answer1=1000500;"
    b"answer2=1002000;joined=1003250;ended=1008250;status1=200;status2=200;"
)

#: user2 busy: never answered, never joined.
BUSY = CallResult(
    0,
    "user2 busy (486 Busy Here)",
    {"leg1Status": 200, "leg2Status": 486, "leg2Reason": "Busy Here"},
    {"answered1At": 1000.5, "endedAt": 1004.0},
)
BUSY_DETAILED = (
    b"RESPONSE: id=1234;real_duration=0;cause=user2_failed;answer1=1000500;"
    b"answer2=;joined=;ended=1004000;status1=200;status2=486;"
)


class DetailsTests(SynchronousTestCase):
    """The live RESPONSE, with and without details."""

    def finish(self, peer: Peer, result: CallResult, **kw):
        protocol, transport, manager, clock = makeProtocol(peers=[peer], **kw)
        protocol.datagramReceived(REQUEST, PEER)
        manager.calls[0].finished.callback(result)
        return protocol, transport

    def test_offByDefault(self) -> None:
        """Without response_details the RESPONSE is the spec's, exactly."""
        _, transport = self.finish(Peer("as1", *PEER), TALKED)
        self.assertEqual(
            transport.written,
            [(ACK_OK, PEER), (b"RESPONSE: id=1234;real_duration=5;", PEER)],
        )

    def test_on(self) -> None:
        """
        With response_details the cause word, the moments in unix ms and
        both legs' statuses follow real_duration, exactly.
        """
        _, transport = self.finish(Peer("as1", *PEER, responseDetails=True), TALKED)
        self.assertEqual(transport.written, [(ACK_OK, PEER), (TALKED_DETAILED, PEER)])

    def test_absentMomentsEmpty(self) -> None:
        """Moments that did not happen are present and empty."""
        _, transport = self.finish(Peer("as1", *PEER, responseDetails=True), BUSY)
        self.assertEqual(transport.written[-1], (BUSY_DETAILED, PEER))

    def test_storedAsSent(self) -> None:
        """The store keeps the moments the RESPONSE reported."""
        protocol, _ = self.finish(Peer("as1", *PEER, responseDetails=True), TALKED)
        record = protocol.store.rows["1234"]
        self.assertEqual(
            (record.endedAt, record.endCause, record.realDuration),
            (1008.25, "user2 hung up", 5),
        )

    def test_signed(self) -> None:
        """A keyed peer gets the detailed RESPONSE signed as usual."""
        key = b"k" * 32
        peer = Peer("as1", *PEER, key=key, responseDetails=True)
        protocol, transport, manager, clock = makeProtocol(peers=[peer], now=1000)
        protocol.datagramReceived(sign(REQUEST, key, 1000), PEER)
        manager.calls[0].finished.callback(TALKED)
        data, addr = transport.written[-1]
        self.assertEqual(verify(data, key, 1000, 30), TALKED_DETAILED)

    def test_repeatedAfterRestartSame(self) -> None:
        """
        The same REQUEST after a restart gets the RESPONSE again from the
        store, with the same details.
        """
        peer = Peer("as1", *PEER, responseDetails=True)
        protocol, transport = self.finish(peer, TALKED)
        store = protocol.store
        protocol2, transport2, manager2, _ = makeProtocol(
            peers=[peer],
            store=MemoryStore(store.serverId, rows=store.rows, legRows=store.legRows),
        )
        protocol2.datagramReceived(REQUEST, PEER)
        self.assertEqual(transport2.written, [(ACK_OK, PEER), (TALKED_DETAILED, PEER)])
        self.assertEqual(manager2.calls, [])

    def test_resentFromStoreSame(self) -> None:
        """A RESPONSE re-sent from the store (recovery) carries the same details."""
        peer = Peer("as1", *PEER, responseDetails=True)
        protocol, transport = self.finish(peer, BUSY)
        protocol.resendResponse(protocol.store.rows["1234"])
        self.assertEqual(transport.written[-1], (BUSY_DETAILED, PEER))

    def test_resentWithoutDetails(self) -> None:
        """A peer without response_details gets the spec's RESPONSE re-sent."""
        protocol, transport = self.finish(Peer("as1", *PEER), TALKED)
        protocol.resendResponse(protocol.store.rows["1234"])
        self.assertEqual(
            transport.written[-1], (b"RESPONSE: id=1234;real_duration=5;", PEER)
        )


class CodecTests(SynchronousTestCase):
    """L{formatResponse} and L{parseServerReply} with details."""

    def test_roundTrip(self) -> None:
        """The AS side parses the details by name; empty stays empty."""
        reply = parseServerReply(BUSY_DETAILED)
        self.assertEqual(reply, Response("1234", 0))
        self.assertEqual(
            reply.details,
            {
                "cause": "user2_failed",
                "answer1": "1000500",
                "answer2": "",
                "joined": "",
                "ended": "1004000",
                "status1": "200",
                "status2": "486",
            },
        )
        self.assertEqual(
            parseServerReply(b"RESPONSE: id=1;real_duration=0;").details, {}
        )

    def test_onlyTheDocumentedDetails(self) -> None:
        """Unknown names, another order or framing characters are refused."""
        details = [
            ("cause", "duration"),
            ("answer1", "1"),
            ("answer2", "2"),
            ("joined", "3"),
            ("ended", "4"),
            ("status1", "200"),
            ("status2", "200"),
        ]
        self.assertTrue(formatResponse("1", 1, details).endswith(b"status2=200;"))
        self.assertRaises(ValueError, formatResponse, "1", 1, details[1:])
        self.assertRaises(ValueError, formatResponse, "1", 1, details[::-1])
        bad = [("cause", "a;b=c")] + details[1:]
        self.assertRaises(ValueError, formatResponse, "1", 1, bad)


class EndWordTests(SynchronousTestCase):
    """L{endWord}: each end cause a callback writes, as one word."""

    def test_words(self) -> None:
        """Every cause text of callback.call and recovery maps to its word."""
        for cause, word in [
            ("duration limit", "duration"),
            ("user1 hung up", "user1_hangup"),
            ("user2 hung up", "user2_hangup"),
            ("user1 busy (486 Busy Here)", "user1_failed"),
            ("user2 no answer (408 no answer)", "user2_failed"),
            ("cannot call user2: no free RTP port", "user2_failed"),
            ("join failed: 488 Not Acceptable Here", "join_failed"),
            (
                "join failed: user1 did not answer the re-INVITE within 8 s",
                "join_failed",
            ),
            ("user1 and user2 share no codec: join not attempted", "join_failed"),
            ("unusable SDP: no m=audio", "join_failed"),
            ("cancelled by the application server", "cancelled"),
            ("server shutting down", "shutdown"),
            ("recovered", "recovered"),
            ("error: boom", "error"),
            (None, ""),
        ]:
            self.assertEqual(endWord(cause), word, cause)
