"""
End-to-end tests: the real server (C{twistd -n callback}, real UDP ports)
against a SIPp UAS that plays every far-end phone (C{etc/sipp/phones.xml}) and
an application server on loopback (L{ASClient}).

Each test checks the wire: the SIP messages SIPp logged (what the peer
server, and so the phones, received and sent, with timestamps) and the IIF
datagrams the application server received.  The phone a leg reaches is
chosen by the user name: C{answer*}, C{hangup<N>*}, C{late<N>*}, C{busy*},
C{decline*}, C{notfound*}, C{ring*}, C{pcma*}, C{glare*}.

Direction in the SIPp log is SIPp's: "received" was sent by the server.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from tests.e2e.harness import startCallbackWorld
from tests.e2e.loopback import portIsBound, sleep, waitOrFail
from tests.e2e.peers import ASClient
from tests.e2e.processes import SIPP
from tests.e2e.siplog import (
    SipMessage,
    describeMessages,
    distinct,
    requestsOf,
    responsesOf,
)

REASON = re.compile(r'^SIP\s*;\s*cause\s*=\s*(\d{3})\s*;\s*text\s*=\s*"[^"]*"', re.I)


def _sdpOrigin(message: SipMessage) -> tuple[str, str, int, str]:
    """
    (username, session id, version, address) of the o= line.
    """
    fields = message.sdpLines("o")[0].split()
    return fields[0], fields[1], int(fields[2]), fields[-1]


def _callEnded(messages: list[SipMessage]) -> bool:
    """
    Whether a call is over on the wire: a BYE answered 200, or a final
    failure to the first INVITE that was ACKed.
    """
    if any(m.status == 200 and m.cseqMethod == "BYE" for m in messages):
        return True
    invites = [m for m in messages if m.method == "INVITE"]
    if not invites:
        return False
    first = invites[0].header("cseq")
    failed = any(
        m.status is not None and m.status >= 300 and m.header("cseq") == first
        for m in messages
    )
    return failed and any(m.method == "ACK" for m in messages)


class CallbackEndToEndTests(TestCase):
    """
    The callback, end to end: IIF REQUEST in, SIP legs out to the peer
    server, joined by re-INVITEs, released, RESPONSE out.
    """

    timeout = 60

    if SIPP is None:
        skip = "sipp is not installed (Debian package sip-tester)"

    @defer.inlineCallbacks
    def startWorld(self, **overrides: Any) -> Any:
        """
        Start SIPp, the AS client and the server (config C{overrides}).
        """
        world = yield startCallbackWorld(self, reactor, **overrides)
        self.world = world
        self.uas = world.uas
        self.client = world.client
        self.server = world.server
        return world

    # -- helpers reading SIPp's log

    def call(self, user: str) -> list[SipMessage]:
        """
        The messages of the one call to C{user}, without retransmissions.
        """
        return distinct(self.uas.callTo(user))

    def assertNoCallTo(self, *users: str) -> None:
        for user in users:
            calls = self.uas.callsTo(user)
            self.assertEqual(
                calls,
                [],
                f"{user} was called:\n{describeMessages(self.uas.messages())}",
            )

    def waitForLog(
        self, predicate: Callable[[], Any], timeout: float = 10.0, what: str = ""
    ) -> Any:
        """
        Poll SIPp's message log until C{predicate()} is true.
        """
        return waitOrFail(
            self,
            predicate,
            f"SIPp log: {what or predicate}",
            lambda: f"log:\n{describeMessages(distinct(self.uas.messages()))}",
            timeout,
        )

    def waitEnded(self, *users: str, timeout: float = 10.0) -> Any:
        """
        Wait until the calls to C{users} are over on the wire.
        """
        return self.waitForLog(
            lambda: all(_callEnded(self.call(user)) for user in users),
            timeout,
            f"end of the calls to {', '.join(users)}",
        )

    def waitJoined(self, user1: str, user2: str, timeout: float = 10.0) -> Any:
        """
        Wait until both legs have a second INVITE (the join) answered 200 and
        ACKed.
        """

        def joined(user: str) -> bool:
            messages = self.call(user)
            return len(responsesOf(messages, "INVITE", 200, "sent")) >= 2 and (
                len(requestsOf(messages, "ACK", "received")) >= 2
            )

        return self.waitForLog(
            lambda: joined(user1) and joined(user2),
            timeout,
            f"join of {user1} and {user2}",
        )

    @defer.inlineCallbacks
    def requestOk(
        self, callbackId: str, user1: str, user2: str, duration: int = 3600
    ) -> Any:
        """
        Send a REQUEST and check that it is ACKed with code=ok.
        """
        self.client.request(callbackId, user1, user2, duration)
        code = yield self.client.expectAck(callbackId)
        self.assertEqual(code, "ok", f"REQUEST {callbackId} refused")

    def assertReason(self, bye: SipMessage, cause: int | None) -> None:
        reason = bye.header("reason")
        self.assertIsNotNone(reason, f"BYE without Reason: {bye.describe()}")
        match = REASON.match(reason)
        self.assertIsNotNone(
            match, f"Reason not 'SIP;cause=N;text=\"...\"': {reason!r}"
        )
        if cause is not None:
            self.assertEqual(int(match.group(1)), cause, reason)

    # -- the tests

    @defer.inlineCallbacks
    def test_joinedThenUser2HangsUp(self) -> Any:
        """
        answer1 then hangup2: ACK code=ok; user1 INVITEd from the default
        caller with a PCMU/PCMA/telephone-event offer on a real port; user2
        INVITEd only after user1's 200; the join re-INVITEs carry the other
        side's SDP under the server's own o= with a higher version; user2's
        BYE is answered and passed on to user1; the RESPONSE carries the
        talk time (user2's 200 to its BYE, rounded): 2.
        """
        yield self.startWorld()
        yield self.requestOk("1234", "answer1", "hangup2")
        realDuration, _ = yield self.client.expectResponse("1234", timeout=15)
        yield self.waitEnded("answer1", "hangup2")
        leg1, leg2 = self.call("answer1"), self.call("hangup2")
        log = describeMessages(leg1 + leg2)

        invites1 = requestsOf(leg1, "INVITE", "received")
        invites2 = requestsOf(leg2, "INVITE", "received")
        self.assertEqual(len(invites1), 2, log)
        self.assertEqual(len(invites2), 2, log)
        for invite, user in ((invites1[0], "answer1"), (invites2[0], "hangup2")):
            self.assertTrue(
                invite.firstLine.startswith(
                    f"INVITE sip:{user}@127.0.0.1:{self.uas.port}"
                ),
                invite.firstLine,
            )
            self.assertRegex(invite.header("from"), r"<sip:1000@[^>]*>")
            self.assertEqual(invite.header("content-type"), "application/sdp")
            pts = invite.payloadTypes()
            self.assertIn(0, pts)
            self.assertIn(8, pts)
            rtpmaps = " ".join(invite.sdpLines("a"))
            self.assertIn("PCMU/8000", rtpmaps)
            self.assertIn("PCMA/8000", rtpmaps)
            self.assertIn("telephone-event/8000", rtpmaps)
            host, port = invite.mediaAddress()
            self.assertEqual(host, "127.0.0.1")
            self.assertGreater(port, 0)

        ok1 = responsesOf(leg1, "INVITE", 200, "sent")
        ok2 = responsesOf(leg2, "INVITE", 200, "sent")
        self.assertEqual(len(ok1), 2, log)
        self.assertEqual(len(ok2), 2, log)
        # user2 is called only once user1 has answered.
        self.assertGreaterEqual(invites2[0].time, ok1[0].time, log)
        # The two phones answered on different SDP ports, so the join is visible.
        self.assertNotEqual(ok1[0].mediaAddress(), ok2[0].mediaAddress())

        # Join: user1 gets user2's SDP, after user2 answered...
        reinvite1, reinvite2 = invites1[1], invites2[1]
        self.assertGreaterEqual(reinvite1.time, ok2[0].time, log)
        self.assertEqual(reinvite1.mediaAddress(), ok2[0].mediaAddress(), log)
        self.assertEqual(reinvite1.payloadTypes()[:1], [0])
        # ...then user2 gets user1's new answer.
        self.assertGreaterEqual(reinvite2.time, ok1[1].time, log)
        self.assertEqual(reinvite2.mediaAddress(), ok1[1].mediaAddress(), log)
        # Each re-INVITE keeps the server's origin for that leg, new version.
        for first, again in ((invites1[0], reinvite1), (invites2[0], reinvite2)):
            user, session, version, address = _sdpOrigin(first)
            user2, session2, version2, address2 = _sdpOrigin(again)
            self.assertEqual((user, session, address), (user2, session2, address2))
            self.assertGreater(version2, version)

        # Release: user2 hung up; BYE 200ed, then BYE to user1 only.
        byeFrom2 = requestsOf(leg2, "BYE", "sent")
        self.assertEqual(len(byeFrom2), 1, log)
        self.assertEqual(len(responsesOf(leg2, "BYE", 200, "received")), 1, log)
        self.assertEqual(requestsOf(leg2, "BYE", "received"), [], log)
        byeTo1 = requestsOf(leg1, "BYE", "received")
        self.assertEqual(len(byeTo1), 1, log)
        self.assertGreaterEqual(byeTo1[0].time, byeFrom2[0].time)
        self.assertEqual(requestsOf(leg1, "BYE", "sent"), [], log)

        talk = byeFrom2[0].time - ok2[0].time
        self.assertEqual(round(talk), 2, f"phone timing off: {talk:.3f} s")
        self.assertEqual(realDuration, round(talk))
        yield self.client.expectNone("RESPONSE", 0.5)

    @defer.inlineCallbacks
    def test_durationLimit(self) -> Any:
        """
        The duration timer counts from user1's answer: with duration=2 and
        both answering at once, both get a BYE 2 s after user1's 200 and
        real_duration is 2; with duration=3 and user2 answering 1 s late
        (late1), the BYEs come 3 s after user1's 200 and real_duration is 2.
        """
        yield self.startWorld()
        yield self.requestOk("d1", "answer1", "answer2", duration=2)
        yield self.requestOk("d2", "answer3", "late1", duration=3)
        (r1, _), (r2, _) = yield defer.gatherResults(
            [self.client.expectResponse("d1"), self.client.expectResponse("d2")]
        )
        yield self.waitEnded("answer1", "answer2", "answer3", "late1")
        for user1, user2, duration, realDuration in (
            ("answer1", "answer2", 2, r1),
            ("answer3", "late1", 3, r2),
        ):
            leg1, leg2 = self.call(user1), self.call(user2)
            log = describeMessages(leg1 + leg2)
            answered1 = responsesOf(leg1, "INVITE", 200, "sent")[0]
            answered2 = responsesOf(leg2, "INVITE", 200, "sent")[0]
            for leg in (leg1, leg2):
                byes = requestsOf(leg, "BYE", "received")
                self.assertEqual(len(byes), 1, log)
                self.assertEqual(requestsOf(leg, "BYE", "sent"), [], log)
                late = byes[0].time - (answered1.time + duration)
                self.assertGreater(
                    late, -0.05, f"BYE {late:.3f} s before the limit\n{log}"
                )
                self.assertLess(late, 0.5, f"BYE {late:.3f} s after the limit\n{log}")
            bye = requestsOf(leg1, "BYE", "received")[0]
            self.assertEqual(realDuration, round(bye.time - answered2.time), log)
        self.assertEqual((r1, r2), (2, 2))

    @defer.inlineCallbacks
    def test_user1Fails(self) -> Any:
        """
        user1 busy (486), declining (603) or not found (404): the failure is
        ACKed, user2 is never called and real_duration is 0.
        """
        yield self.startWorld()
        cases = [
            ("f1", "busy1", 486),
            ("f2", "decline1", 603),
            ("f3", "notfound1", 404),
        ]
        for callbackId, user1, _ in cases:
            yield self.requestOk(callbackId, user1, f"answer2{callbackId}")
        results = yield defer.gatherResults(
            [self.client.expectResponse(c) for c, _, _ in cases]
        )
        self.assertEqual([duration for duration, _ in results], [0, 0, 0])
        yield self.waitEnded(*[user1 for _, user1, _ in cases])
        for _, user1, status in cases:
            leg1 = self.call(user1)
            self.assertEqual(
                [m.methodOrStatus for m in leg1],
                ["INVITE", "100", str(status), "ACK"],
                describeMessages(leg1),
            )
        yield sleep(reactor, 0.3)
        self.assertNoCallTo(*[f"answer2{c}" for c, _, _ in cases])

    @defer.inlineCallbacks
    def test_noAnswer(self) -> Any:
        """
        A leg that rings past no_answer_timeout (2 s) is CANCELled 2 s after
        its INVITE: for user1, user2 is never called; for user2, user1 gets a
        BYE with a Reason header.  Both report real_duration=0.
        """
        yield self.startWorld(no_answer_timeout=2)
        yield self.requestOk("n1", "ring1", "answer9")
        yield self.requestOk("n2", "answer1", "ring2")
        results = yield defer.gatherResults(
            [self.client.expectResponse("n1"), self.client.expectResponse("n2")]
        )
        self.assertEqual([d for d, _ in results], [0, 0])
        yield self.waitEnded("ring1", "ring2", "answer1")
        for user in ("ring1", "ring2"):
            leg = self.call(user)
            log = describeMessages(leg)
            invite = requestsOf(leg, "INVITE", "received")[0]
            cancels = requestsOf(leg, "CANCEL", "received")
            self.assertEqual(len(cancels), 1, log)
            waited = cancels[0].time - invite.time
            self.assertGreater(waited, 1.95, log)
            self.assertLess(waited, 2.6, log)
            self.assertEqual(len(responsesOf(leg, "INVITE", 487, "sent")), 1, log)
            self.assertEqual(len(requestsOf(leg, "ACK", "received")), 1, log)
        self.assertNoCallTo("answer9")
        leg1 = self.call("answer1")
        byes = requestsOf(leg1, "BYE", "received")
        self.assertEqual(len(byes), 1, describeMessages(leg1))
        self.assertReason(byes[0], None)
        self.assertEqual(len(requestsOf(leg1, "INVITE", "received")), 1)

    @defer.inlineCallbacks
    def test_user2Fails(self) -> Any:
        """
        user2 busy (486) or declining (603): user1, who answered, gets a BYE
        carrying C{Reason: SIP;cause=<status>;text="..."}, no re-INVITE is
        sent, and real_duration is 0.
        """
        yield self.startWorld()
        yield self.requestOk("u1", "answer1", "busy2")
        yield self.requestOk("u2", "answer3", "decline4")
        results = yield defer.gatherResults(
            [self.client.expectResponse("u1"), self.client.expectResponse("u2")]
        )
        self.assertEqual([d for d, _ in results], [0, 0])
        yield self.waitEnded("answer1", "busy2", "answer3", "decline4")
        for user1, user2, status in (
            ("answer1", "busy2", 486),
            ("answer3", "decline4", 603),
        ):
            leg1, leg2 = self.call(user1), self.call(user2)
            log = describeMessages(leg1 + leg2)
            failure = responsesOf(leg2, "INVITE", status, "sent")
            self.assertEqual(len(failure), 1, log)
            byes = requestsOf(leg1, "BYE", "received")
            self.assertEqual(len(byes), 1, log)
            self.assertGreaterEqual(byes[0].time, failure[0].time)
            self.assertReason(byes[0], status)
            self.assertEqual(len(requestsOf(leg1, "INVITE", "received")), 1, log)

    @defer.inlineCallbacks
    def test_durationExpiresWhileUser2Rings(self) -> Any:
        """
        With duration=2 and user2 still ringing when it expires, user2's
        INVITE is CANCELled and user1 gets a BYE, both about 2 s after user1's
        answer; real_duration is 0.
        """
        yield self.startWorld()
        yield self.requestOk("r1", "answer1", "ring2", duration=2)
        realDuration, _ = yield self.client.expectResponse("r1")
        self.assertEqual(realDuration, 0)
        yield self.waitEnded("answer1", "ring2")
        leg1, leg2 = self.call("answer1"), self.call("ring2")
        log = describeMessages(leg1 + leg2)
        answered1 = responsesOf(leg1, "INVITE", 200, "sent")[0]
        released = [
            requestsOf(leg1, "BYE", "received"),
            requestsOf(leg2, "CANCEL", "received"),
        ]
        for messages in released:
            self.assertEqual(len(messages), 1, log)
            late = messages[0].time - (answered1.time + 2)
            self.assertGreater(late, -0.05, log)
            self.assertLess(late, 0.5, log)
        self.assertEqual(len(responsesOf(leg2, "INVITE", 487, "sent")), 1, log)
        self.assertEqual(requestsOf(leg2, "BYE", "received"), [], log)

    @defer.inlineCallbacks
    def test_noCommonCodec(self) -> Any:
        """
        user1 answers PCMU only and user2 PCMA only: the join is not
        attempted (no re-INVITE to either), both legs get a BYE, and
        real_duration is 0.
        """
        yield self.startWorld()
        yield self.requestOk("c1", "answer1", "pcma2")
        realDuration, _ = yield self.client.expectResponse("c1")
        self.assertEqual(realDuration, 0)
        yield self.waitEnded("answer1", "pcma2")
        for user in ("answer1", "pcma2"):
            leg = self.call(user)
            log = describeMessages(leg)
            self.assertEqual(len(requestsOf(leg, "INVITE", "received")), 1, log)
            self.assertEqual(len(requestsOf(leg, "BYE", "received")), 1, log)
            self.assertEqual(requestsOf(leg, "BYE", "sent"), [], log)

    @defer.inlineCallbacks
    def test_glareRetried(self) -> Any:
        """
        user1 answers the first join re-INVITE 491: the server ACKs it, waits
        the RFC 3261 back-off (2.1 to 4 s: it owns the Call-ID), re-INVITEs
        again, and the join completes (user2 then gets user1's new SDP); the
        callback then runs to user2's hang-up as usual, its real_duration
        counted from the join (the 5 s of hangup5 less the back-off).
        """
        yield self.startWorld()
        yield self.requestOk("g1", "glare1", "hangup5")
        yield self.waitJoined("glare1", "hangup5", timeout=10)
        realDuration, _ = yield self.client.expectResponse("g1", timeout=10)
        yield self.waitEnded("glare1", "hangup5")
        leg1, leg2 = self.call("glare1"), self.call("hangup5")
        log = describeMessages(leg1 + leg2)
        invites1 = requestsOf(leg1, "INVITE", "received")
        self.assertEqual(len(invites1), 3, log)
        pending = responsesOf(leg1, "INVITE", 491, "sent")
        self.assertEqual(len(pending), 1, log)
        self.assertEqual(pending[0].header("cseq"), invites1[1].header("cseq"))
        backOff = invites1[2].time - pending[0].time
        self.assertGreaterEqual(backOff, 2.05, log)
        self.assertLessEqual(backOff, 4.2, log)
        # The retry carries user2's SDP again, with a new o= version.
        ok2 = responsesOf(leg2, "INVITE", 200, "sent")[0]
        self.assertEqual(invites1[2].mediaAddress(), ok2.mediaAddress())
        self.assertGreater(_sdpOrigin(invites1[2])[2], _sdpOrigin(invites1[0])[2])
        okRetry = responsesOf(leg1, "INVITE", 200, "sent")[1]
        invites2 = requestsOf(leg2, "INVITE", "received")
        self.assertEqual(len(invites2), 2, log)
        self.assertGreaterEqual(invites2[1].time, okRetry.time)
        self.assertEqual(invites2[1].mediaAddress(), okRetry.mediaAddress())
        bye = requestsOf(leg2, "BYE", "sent")[0]
        # real_duration is talk time: from the join's completion (user2's
        # 200 to its re-INVITE), after the back-off, not from user2's answer.
        joined = [
            m
            for m in responsesOf(leg2, "INVITE", 200, "sent")
            if m.header("cseq") == invites2[1].header("cseq")
        ][0]
        self.assertEqual(realDuration, round(bye.time - joined.time))
        self.assertLessEqual(realDuration, 5 - 2)

    @defer.inlineCallbacks
    def test_duplicateRequest(self) -> Any:
        """
        UDP repeats datagrams: the same REQUEST again gets the same ACK and
        no second call, both while the callback runs and after it ended (then
        the RESPONSE is repeated too); the same id with other parameters gets
        code=fail.
        """
        yield self.startWorld()
        text = self.client.request("dup", "answer1", "hangup1", 60)
        self.client.send(text)
        codes = yield defer.gatherResults(
            [self.client.expectAck("dup"), self.client.expectAck("dup")]
        )
        self.assertEqual(codes, ["ok", "ok"])
        self.client.request("dup", "answer1", "answer7", 60)
        code = yield self.client.expectAck("dup")
        self.assertEqual(code, "fail")
        realDuration, _ = yield self.client.expectResponse("dup")
        self.assertEqual(realDuration, 1)
        yield self.client.expectNone(lambda t: t.startswith("RESPONSE"), 0.3)

        self.client.send(text)
        code = yield self.client.expectAck("dup")
        self.assertEqual(code, "ok")
        again, _ = yield self.client.expectResponse("dup")
        self.assertEqual(again, realDuration)
        self.client.request("dup", "answer1", "answer8", 60)
        code = yield self.client.expectAck("dup")
        self.assertEqual(code, "fail")
        yield self.client.expectNone(lambda t: t.startswith("RESPONSE"), 0.5)

        self.assertEqual(len(self.uas.callsTo("answer1")), 1)
        self.assertEqual(len(self.uas.callsTo("hangup1")), 1)
        self.assertNoCallTo("answer7", "answer8")
        self.assertEqual(len(requestsOf(self.call("answer1"), "INVITE", "received")), 2)

    @defer.inlineCallbacks
    def test_invalidRequests(self) -> Any:
        """
        Invalid REQUESTs get C{ACK: id=<id>;code=fail;} (C{id=} empty when no
        id can be read), exactly in the spec's form, and place no call.
        """
        yield self.startWorld()
        bad = [
            ("b1", "REQUEST: id=b1;user1=answer1;duration=10;"),
            ("b2", "request: id=b2;user1=answer2;user2=answer3;duration=10;"),
            ("b3", "REQUEST: id=b3;user1=ans wer;user2=answer4;duration=10;"),
            ("b4", "REQUEST: id=b4;user1=answer5;user2=answer6;duration=-1;"),
            (
                "b5",
                "REQUEST: id=b5;user1=answer5;user2=answer6;duration=10;duration=10;",
            ),
            ("b6", "REQUEST: id=b6;user1=answer5;user2=answer6;duration=864000;"),
            (
                "b7",
                "REQUEST: id=b7;user1=answer5;user2=answer6;duration=10;ann_id1=123;",
            ),
            (
                "b8",
                "REQUEST: id=b8;user1=answer5;user2=answer6;duration=10;pad="
                + "x" * 1100
                + ";",
            ),
        ]
        for callbackId, text in bad:
            self.client.send(text)
            got = yield self.client.expect(
                lambda t, i=callbackId: f"id={i};" in t, timeout=3
            )
            self.assertEqual(got, f"ACK: id={callbackId};code=fail;", text[:80])
        self.client.send("HELLO")
        got = yield self.client.expect("ACK", timeout=3)
        self.assertEqual(got, "ACK: id=;code=fail;")
        yield sleep(reactor, 0.5)
        self.assertEqual(self.uas.messages(), [])

    @defer.inlineCallbacks
    def test_nonPeerIgnored(self) -> Any:
        """
        A REQUEST from a port that is not a configured peer server gets no
        answer at all and places no call; the same id from the peer then
        works, and the stranger hears nothing of it.
        """
        yield self.startWorld()
        stranger = ASClient(reactor, server=self.server.iifAddress).start()
        self.addCleanup(stranger.stop)
        stranger.request("np1", "answer1", "hangup1", 60)
        yield stranger.expectNone(lambda t: True, 1.0)
        self.assertEqual(self.uas.messages(), [])
        yield self.requestOk("np1", "answer1", "hangup1", 60)
        realDuration, _ = yield self.client.expectResponse("np1")
        self.assertEqual(realDuration, 1)
        self.assertEqual(stranger.received, [])

    @defer.inlineCallbacks
    def test_cancelCommand(self) -> Any:
        """
        C{CANCEL: id=...;} for a running callback gets code=ok and releases
        it: a joined call gets BYE on both legs and its talk time in the
        RESPONSE; a callback whose user2 rings gets CANCEL to user2, BYE to
        user1 and real_duration=0.  An unknown or finished id gets code=fail.
        """
        yield self.startWorld()
        yield self.requestOk("x1", "answer1", "answer2")
        yield self.requestOk("x2", "answer3", "ring4")
        yield self.waitJoined("answer1", "answer2")
        yield self.waitForLog(
            lambda: responsesOf(self.call("ring4"), "INVITE", 180, "sent"),
            what="180 from ring4",
        )
        # While user2 rings, the server holds the RTP port its offer named.
        offer = requestsOf(self.call("ring4"), "INVITE", "received")[0]
        self.assertTrue(portIsBound(offer.mediaAddress()[1]), offer.body)
        yield sleep(reactor, 1.0)
        self.client.send("CANCEL: id=x1;")
        self.client.send("CANCEL: id=x2;")
        codes = yield defer.gatherResults(
            [self.client.expectAck("x1"), self.client.expectAck("x2")]
        )
        self.assertEqual(codes, ["ok", "ok"])
        (r1, _), (r2, _) = yield defer.gatherResults(
            [self.client.expectResponse("x1"), self.client.expectResponse("x2")]
        )
        yield self.waitEnded("answer1", "answer2", "answer3", "ring4")
        for user in ("answer1", "answer2", "answer3"):
            leg = self.call(user)
            self.assertEqual(
                len(requestsOf(leg, "BYE", "received")), 1, describeMessages(leg)
            )
        ring = self.call("ring4")
        self.assertEqual(
            len(requestsOf(ring, "CANCEL", "received")), 1, describeMessages(ring)
        )
        answered2 = responsesOf(self.call("answer2"), "INVITE", 200, "sent")[0]
        bye = requestsOf(self.call("answer1"), "BYE", "received")[0]
        self.assertEqual(r1, round(bye.time - answered2.time))
        self.assertEqual(r2, 0)

        self.client.send("CANCEL: id=x1;")
        self.client.send("CANCEL: id=nope;")
        codes = yield defer.gatherResults(
            [self.client.expectAck("x1"), self.client.expectAck("nope")]
        )
        self.assertEqual(codes, ["fail", "fail"])

    @defer.inlineCallbacks
    def test_twentyConcurrentCallbacks(self) -> Any:
        """
        20 callbacks requested at once all complete: 20 ACK code=ok, each
        pair joined, 20 RESPONSEs with each pair's own talk time (user2 hangs
        up 1 s after answering: 1).
        """
        yield self.startWorld()
        ids = [f"c{n:02d}" for n in range(20)]
        for n, callbackId in enumerate(ids):
            self.client.request(callbackId, f"answer{n}", f"hangup1-{n}", 60)
        codes = yield defer.gatherResults([self.client.expectAck(c) for c in ids])
        self.assertEqual(codes, ["ok"] * 20)
        results = yield defer.gatherResults(
            [self.client.expectResponse(c, timeout=30) for c in ids]
        )
        users = [u for n in range(20) for u in (f"answer{n}", f"hangup1-{n}")]
        yield self.waitEnded(*users, timeout=15)
        for n, (realDuration, _) in enumerate(results):
            leg1, leg2 = self.call(f"answer{n}"), self.call(f"hangup1-{n}")
            log = describeMessages(leg1 + leg2)
            self.assertEqual(len(requestsOf(leg1, "INVITE", "received")), 2, log)
            self.assertEqual(len(requestsOf(leg2, "INVITE", "received")), 2, log)
            answered2 = responsesOf(leg2, "INVITE", 200, "sent")[0]
            bye = requestsOf(leg2, "BYE", "sent")[0]
            self.assertEqual(realDuration, round(bye.time - answered2.time), log)
            self.assertEqual(realDuration, 1, log)
        yield self.client.expectNone("RESPONSE", 0.3)

    @defer.inlineCallbacks
    def test_sigtermReleasesActiveCallbacks(self) -> Any:
        """
        SIGTERM while callbacks are active: before the process exits, a joined
        callback gets BYE on both legs, one with user2 ringing gets BYE and
        CANCEL, one with user1 ringing gets CANCEL, and the AS gets the three
        RESPONSEs; the exit takes no SIGKILL and less than shutdown_timeout.
        """
        yield self.startWorld(shutdown_timeout=4)
        yield self.requestOk("s1", "answer1", "answer2")
        yield self.requestOk("s2", "answer3", "ring4")
        yield self.requestOk("s3", "ring5", "answer6")
        yield self.waitJoined("answer1", "answer2")
        yield self.waitForLog(
            lambda: responsesOf(self.call("ring4"), "INVITE", 180, "sent")
            and responsesOf(self.call("ring5"), "INVITE", 180, "sent"),
            what="180 from ring4 and ring5",
        )
        start = time.time()
        yield self.server.stop()
        elapsed = time.time() - start
        self.assertNotEqual(self.server.exitSignal, 9, self.server.output[-3000:])
        self.assertLess(elapsed, 4.0 + 1.0, self.server.output[-3000:])
        # The server is gone: whatever arrives now was sent before it exited.
        results = yield defer.gatherResults(
            [self.client.expectResponse(c, timeout=2) for c in ("s1", "s2", "s3")]
        )
        self.assertEqual([d for d, _ in results][1:], [0, 0])
        yield self.waitForLog(
            lambda: all(
                requestsOf(self.call(u), "BYE", "received")
                for u in ("answer1", "answer2", "answer3")
            )
            and all(
                requestsOf(self.call(u), "CANCEL", "received")
                for u in ("ring4", "ring5")
            ),
            timeout=3,
            what="BYE/CANCEL on every leg",
        )
        self.assertNoCallTo("answer6")
