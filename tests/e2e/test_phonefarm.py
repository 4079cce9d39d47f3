"""
The SIPp phone farm (C{etc/sipp/phones.xml}) driven by a small scripted UAC,
with no callback server.

They prove the farm right before the end-to-end tests rely on it: if a phone
kind misbehaves here, a failing end-to-end test would blame the server.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from tests.e2e.loopback import sleep
from tests.e2e.peers import DatagramPeer
from tests.e2e.processes import SIPP, SippUAS, startManaged
from tests.e2e.siplog import (
    SipMessage,
    distinct,
    parseSipMessage,
    requestsOf,
    responsesOf,
)

_counter = itertools.count(1)

OFFER = (
    "v=0\r\n"
    "o=uac 1 {version} IN IP4 127.0.0.1\r\n"
    "s=-\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "m=audio {port} RTP/AVP 0 8 101\r\n"
    "a=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
)


class MiniUAC(DatagramPeer):
    """
    A scripted SIP UAC, just enough to drive the phone farm: one dialog at a
    time, every message written out in full so the test controls the bytes.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__(reactor, defaultTarget=target)
        self.callId = ""
        self.fromTag = ""
        self.toTag = ""
        self.user = ""
        self.cseq = 0
        self.inviteBranch = ""
        self.offerVersion = 0

    def _branch(self) -> str:
        return f"z9hG4bK-mini-{next(_counter)}"

    def _headers(
        self, method: str, cseq: int, branch: str, body: str, withToTag: bool = True
    ) -> str:
        to = f"<sip:{self.user}@127.0.0.1:{self.defaultTarget[1]}>"
        if withToTag and self.toTag:
            to += f";tag={self.toTag}"
        lines = [
            f"{method} sip:{self.user}@127.0.0.1:{self.defaultTarget[1]} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch={branch};rport",
            f"From: <sip:1000@127.0.0.1:{self.port}>;tag={self.fromTag}",
            f"To: {to}",
            f"Call-ID: {self.callId}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:1000@127.0.0.1:{self.port}>",
            "Max-Forwards: 70",
        ]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return "\r\n".join(lines) + "\r\n\r\n" + body

    def _offer(self) -> str:
        self.offerVersion += 1
        return OFFER.format(version=self.offerVersion, port=self.port + 1000)

    def invite(self, user: str) -> None:
        self.user = user
        self.callId = f"mini-{next(_counter)}-{time.time()}@127.0.0.1"
        self.fromTag = f"t{next(_counter)}"
        self.toTag = ""
        self.cseq = 1
        self.inviteBranch = self._branch()
        self.lastInvite = self._headers(
            "INVITE", 1, self.inviteBranch, self._offer(), withToTag=False
        )
        self.send(self.lastInvite)

    def retransmitInvite(self) -> None:
        """
        Send the last initial INVITE again, byte for byte (a lost response).
        """
        self.send(self.lastInvite)

    def reinvite(self) -> None:
        self.cseq += 1
        self.inviteBranch = self._branch()
        self.send(self._headers("INVITE", self.cseq, self.inviteBranch, self._offer()))

    def ack(self, response: SipMessage) -> None:
        """
        ACK a final response: a new transaction for a 2xx, the INVITE's own
        branch for a failure (RFC 3261 17.1.1.3).
        """
        if not self.toTag:
            self.toTag = _tag(response.header("to") or "")
        branch = self._branch() if response.status // 100 == 2 else self.inviteBranch
        self.send(self._headers("ACK", self.cseq, branch, ""))

    def cancel(self) -> None:
        self.send(
            self._headers("CANCEL", self.cseq, self.inviteBranch, "", withToTag=False)
        )

    def bye(self) -> None:
        self.cseq += 1
        self.lastBye = self._headers("BYE", self.cseq, self._branch(), "")
        self.send(self.lastBye)

    def answerBye(self, bye: SipMessage) -> None:
        lines = [
            "SIP/2.0 200 OK",
            *[f"Via: {v}" for v in bye.headers["via"]],
            f"From: {bye.header('from')}",
            f"To: {bye.header('to')}",
            f"Call-ID: {bye.callId}",
            f"CSeq: {bye.header('cseq')}",
            "Content-Length: 0",
        ]
        self.send("\r\n".join(lines) + "\r\n\r\n")

    def expectSip(self, predicate: Any, timeout: float = 5.0) -> defer.Deferred:
        """
        Fire with the next L{SipMessage} of the current call for which
        C{predicate(message)} is true.
        """
        callId = self.callId

        def match(text: str) -> bool:
            message = parseSipMessage(text)
            return message.callId == callId and predicate(message)

        d = self.expect(match, timeout)
        d.addCallback(parseSipMessage)
        return d

    def expectStatus(
        self, status: int, cseqMethod: str = "INVITE", timeout: float = 5.0
    ) -> defer.Deferred:
        return self.expectSip(
            lambda m: m.status == status and m.cseqMethod == cseqMethod, timeout
        )

    def expectRequest(self, method: str, timeout: float = 5.0) -> defer.Deferred:
        return self.expectSip(lambda m: m.method == method, timeout)


def _tag(header: str) -> str:
    for param in header.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.lower() == "tag":
            return value
    return ""


class PhoneFarmTests(TestCase):
    """
    The SIPp phone farm, driven by L{MiniUAC}, does what C{phones.xml} promises
    for each kind of phone, and its message log parses into what was sent.
    """

    timeout = 30

    if SIPP is None:
        skip = "sipp is not installed (Debian package sip-tester)"

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        self.uas = SippUAS(str(directory), lifetime=60)
        yield startManaged(self, self.uas)
        self.uac = MiniUAC(("127.0.0.1", self.uas.port))
        self.uac.start()
        self.addCleanup(self.uac.stop)

    @defer.inlineCallbacks
    def _answered(self, user: str) -> Any:
        """
        INVITE C{user}, expect 100, 180 and 200, ACK the 200; fire with the 200.
        """
        self.uac.invite(user)
        yield self.uac.expectStatus(100)
        yield self.uac.expectStatus(180)
        ok = yield self.uac.expectStatus(200)
        self.uac.ack(ok)
        return ok

    @defer.inlineCallbacks
    def _reinvited(self) -> Any:
        self.uac.reinvite()
        ok = yield self.uac.expectStatus(200)
        self.uac.ack(ok)
        return ok

    @defer.inlineCallbacks
    def _hungUp(self) -> Any:
        self.uac.bye()
        yield self.uac.expectStatus(200, "BYE")

    @defer.inlineCallbacks
    def test_answerAcceptsReinvitesUntilBye(self) -> Any:
        """
        An answer* phone answers 200 with PCMU and telephone-event on the
        farm's media port, then answers two re-INVITEs with SDP whose o=
        version went up, then 200s a BYE; the message log holds every one of
        those messages in order, in the right direction.
        """
        ok = yield self._answered("answer1")
        self.assertEqual(ok.mediaAddress(), ("127.0.0.1", self.uas.mediaPort))
        self.assertEqual(ok.payloadTypes(), [0, 101])
        self.assertIn("0 PCMU/8000", ok.sdpLines("a")[0])
        self.assertTrue(_tag(ok.header("to")))
        first = yield self._reinvited()
        second = yield self._reinvited()
        versions = [int(m.sdpLines("o")[0].split()[2]) for m in (ok, first, second)]
        self.assertEqual(versions, sorted(versions))
        self.assertEqual(len(set(versions)), 3, versions)
        self.assertEqual(second.mediaAddress(), ("127.0.0.1", self.uas.mediaPort))
        yield self._hungUp()

        log = self.uas.callTo("answer1")
        summary = [(m.direction, m.methodOrStatus, m.cseqMethod) for m in distinct(log)]
        self.assertEqual(
            summary,
            [
                ("received", "INVITE", "INVITE"),
                ("sent", "100", "INVITE"),
                ("sent", "180", "INVITE"),
                ("sent", "200", "INVITE"),
                ("received", "ACK", "ACK"),
                ("received", "INVITE", "INVITE"),
                ("sent", "200", "INVITE"),
                ("received", "ACK", "ACK"),
                ("received", "INVITE", "INVITE"),
                ("sent", "200", "INVITE"),
                ("received", "ACK", "ACK"),
                ("received", "BYE", "BYE"),
                ("sent", "200", "BYE"),
            ],
        )
        invite = log[0]
        self.assertEqual(invite.requestUser, "answer1")
        self.assertEqual(invite.mediaAddress(), ("127.0.0.1", self.uac.port + 1000))
        self.assertEqual(invite.payloadTypes(), [0, 8, 101])
        times = [m.time for m in log]
        self.assertEqual(times, sorted(times))
        self.assertLess(abs(times[0] - time.time()), 10)
        self.assertEqual(self.uas.errors(), "")

    @defer.inlineCallbacks
    def test_hangupSendsByeAfterNSeconds(self) -> Any:
        """
        A hangup2 phone answers on media port + 2, still answers a re-INVITE
        that arrives while it waits, and sends a BYE (in the dialog: our tag
        in To, its tag in From) 2 to 2.25 seconds after its 200.
        """
        ok = yield self._answered("hangup2")
        answeredAt = time.time()
        self.assertEqual(ok.mediaAddress(), ("127.0.0.1", self.uas.mediaPort + 2))
        yield sleep(reactor, 0.5)
        reinvited = yield self._reinvited()
        self.assertEqual(
            reinvited.mediaAddress(), ("127.0.0.1", self.uas.mediaPort + 2)
        )
        bye = yield self.uac.expectRequest("BYE", timeout=5)
        self.uac.answerBye(bye)
        self.assertEqual(_tag(bye.header("to")), self.uac.fromTag)
        self.assertEqual(_tag(bye.header("from")), self.uac.toTag)
        self.assertTrue(
            bye.firstLine.startswith(f"BYE sip:1000@127.0.0.1:{self.uac.port}"),
            bye.firstLine,
        )
        # From the farm's own log: 200 sent -> BYE sent.
        yield sleep(reactor, 0.2)
        log = distinct(self.uas.callTo("hangup2"))
        sent200 = responsesOf(log, "INVITE", 200, "sent")[0]
        sentBye = requestsOf(log, "BYE", "sent")[0]
        self.assertGreaterEqual(sentBye.time - sent200.time, 2.0)
        self.assertLess(sentBye.time - sent200.time, 2.25)
        self.assertLess(abs((time.time() - answeredAt) - 2.0), 1.0)
        self.assertEqual(
            responsesOf(log, "BYE", 200, "received")[0].callId, self.uac.callId
        )

    @defer.inlineCallbacks
    def test_hangupOneWithoutReinvite(self) -> Any:
        """
        A hangup1 phone that gets no re-INVITE sends its BYE about 1 s after
        its 200.
        """
        yield self._answered("hangup1")
        start = time.time()
        bye = yield self.uac.expectRequest("BYE", timeout=4)
        self.uac.answerBye(bye)
        self.assertGreaterEqual(time.time() - start, 0.9)
        self.assertLess(time.time() - start, 1.5)

    @defer.inlineCallbacks
    def test_failures(self) -> Any:
        """
        busy*, decline* and notfound* phones answer 486, 603 and 404 (with a
        To tag) and take the ACK; an unknown kind gets 404 too.
        """
        for user, status in [
            ("busy1", 486),
            ("decline1", 603),
            ("notfound1", 404),
            ("nobody", 404),
        ]:
            self.uac.invite(user)
            final = yield self.uac.expectSip(lambda m: (m.status or 0) >= 300)
            self.assertEqual(final.status, status, user)
            self.assertTrue(_tag(final.header("to")))
            self.uac.ack(final)
            yield self.uac.expectNone(
                lambda text, status=status: parseSipMessage(text).status == status,
                0.8,
            )
            log = distinct(self.uas.callTo(user))
            self.assertEqual([m.methodOrStatus for m in log][-2:], [str(status), "ACK"])

    @defer.inlineCallbacks
    def test_ringUntilCancel(self) -> Any:
        """
        A ring* phone sends 180 and no final answer until CANCEL; then 200 to
        the CANCEL and 487 to the INVITE, and takes the ACK.
        """
        self.uac.invite("ring1")
        yield self.uac.expectStatus(180)
        yield self.uac.expectNone(
            lambda text: (parseSipMessage(text).status or 0) >= 200, 1.5
        )
        self.uac.cancel()
        yield self.uac.expectStatus(200, "CANCEL")
        terminated = yield self.uac.expectStatus(487)
        self.uac.ack(terminated)
        yield self.uac.expectNone(lambda text: parseSipMessage(text).status == 487, 0.8)
        log = distinct(self.uas.callTo("ring1"))
        self.assertEqual(
            [m.methodOrStatus for m in log],
            ["INVITE", "100", "180", "CANCEL", "200", "487", "ACK"],
        )

    @defer.inlineCallbacks
    def test_lateAnswersAfterNSeconds(self) -> Any:
        """
        A late1 phone rings and answers 1 to 1.25 s after its 180, with the
        answer* SDP, and then behaves as answer*.
        """
        self.uac.invite("late1")
        yield self.uac.expectStatus(180)
        ok = yield self.uac.expectStatus(200, timeout=3)
        self.uac.ack(ok)
        self.assertEqual(ok.mediaAddress(), ("127.0.0.1", self.uas.mediaPort))
        yield self._reinvited()
        yield self._hungUp()
        log = distinct(self.uas.callTo("late1"))
        ringing = responsesOf(log, "INVITE", 180, "sent")[0]
        answered = responsesOf(log, "INVITE", 200, "sent")[0]
        self.assertGreaterEqual(answered.time - ringing.time, 1.0)
        self.assertLess(answered.time - ringing.time, 1.25)

    @defer.inlineCallbacks
    def test_lateCancelledWhileRinging(self) -> Any:
        """
        A late3 phone cancelled before it answers sends 200 to the CANCEL
        and 487 to the INVITE, and never a 200 to the INVITE.
        """
        self.uac.invite("late3")
        yield self.uac.expectStatus(180)
        yield sleep(reactor, 0.5)
        self.uac.cancel()
        yield self.uac.expectStatus(200, "CANCEL")
        terminated = yield self.uac.expectStatus(487)
        self.uac.ack(terminated)
        yield self.uac.expectNone(lambda text: parseSipMessage(text).status == 200, 3.0)
        log = distinct(self.uas.callTo("late3"))
        self.assertEqual(
            [m.methodOrStatus for m in log],
            ["INVITE", "100", "180", "CANCEL", "200", "487", "ACK"],
        )

    @defer.inlineCallbacks
    def test_glareFirstReinviteGets491(self) -> Any:
        """
        A glare* phone answers on media port + 2, answers its first re-INVITE
        491 and the next one 200.
        """
        ok = yield self._answered("glare1")
        self.assertEqual(ok.mediaAddress(), ("127.0.0.1", self.uas.mediaPort + 2))
        self.uac.reinvite()
        pending = yield self.uac.expectSip(
            lambda m: m.cseqMethod == "INVITE" and (m.status or 0) >= 200
        )
        self.assertEqual(pending.status, 491)
        self.uac.ack(pending)
        retried = yield self._reinvited()
        self.assertEqual(retried.status, 200)
        yield self._hungUp()

    @defer.inlineCallbacks
    def test_pcmaAnswersPcmaOnly(self) -> Any:
        """
        A pcma* phone answers with PCMA 8 (and telephone-event), not PCMU,
        both to the INVITE and to a re-INVITE.
        """
        ok = yield self._answered("pcma1")
        self.assertEqual(ok.payloadTypes(), [8, 101])
        self.assertIn("rtpmap:8 PCMA/8000", ok.sdpLines("a"))
        again = yield self._reinvited()
        self.assertEqual(again.payloadTypes(), [8, 101])
        yield self._hungUp()

    @defer.inlineCallbacks
    def test_retransmissionsAnsweredAgain(self) -> Any:
        """
        Lost responses, as a loaded server sees them: an INVITE sent again
        while the phone waits for its ACK neither aborts the call nor is
        taken for a re-INVITE (the 200 or 486 keeps coming every 0.5 s until
        the ACK, with the same To tag); while ringing it gets the 180 again;
        a repeated ACK is absorbed; a BYE sent again after the call ended
        gets its 200 again.
        """
        self.uac.invite("answer1")
        ok = yield self.uac.expectStatus(200)
        self.uac.retransmitInvite()
        again = yield self.uac.expectStatus(200, timeout=1.5)
        self.assertEqual(_tag(again.header("to")), _tag(ok.header("to")))
        self.assertEqual(again.body, ok.body)
        self.uac.ack(again)
        self.uac.ack(again)
        reinvited = yield self._reinvited()
        self.assertEqual(reinvited.mediaAddress(), ("127.0.0.1", self.uas.mediaPort))
        yield self._hungUp()
        self.uac.send(self.uac.lastBye)
        yield self.uac.expectStatus(200, "BYE")

        self.uac.invite("busy1")
        yield self.uac.expectStatus(486)
        self.uac.retransmitInvite()
        busy = yield self.uac.expectStatus(486, timeout=1.5)
        self.uac.ack(busy)

        self.uac.invite("ring1")
        yield self.uac.expectStatus(180)
        self.uac.retransmitInvite()
        yield self.uac.expectStatus(180, timeout=0.5)
        self.uac.cancel()
        yield self.uac.expectStatus(200, "CANCEL")
        terminated = yield self.uac.expectStatus(487)
        self.uac.ack(terminated)
        yield sleep(reactor, 0.3)
        self.assertNotIn("Aborting call", self.uas.errors())
        # One response per transaction (INVITE, re-INVITE, BYE), retransmissions aside.
        self.assertEqual(
            [
                (m.methodOrStatus, m.cseqMethod)
                for m in distinct(self.uas.callTo("answer1"))
                if m.direction == "sent"
            ],
            [
                ("100", "INVITE"),
                ("180", "INVITE"),
                ("200", "INVITE"),
                ("200", "INVITE"),
                ("200", "BYE"),
            ],
        )

    @defer.inlineCallbacks
    def test_concurrentCalls(self) -> Any:
        """
        The farm keeps many calls apart: 10 phones answered at once, each
        call in the log under its own Call-ID and R-URI user.
        """
        uacs = []
        for index in range(10):
            uac = MiniUAC(("127.0.0.1", self.uas.port))
            uac.start()
            self.addCleanup(uac.stop)
            uac.invite(f"answer{index}")
            uacs.append(uac)
        oks = yield defer.gatherResults([uac.expectStatus(200) for uac in uacs])
        for uac, ok in zip(uacs, oks, strict=True):
            uac.ack(ok)
            uac.bye()
        yield defer.gatherResults([uac.expectStatus(200, "BYE") for uac in uacs])
        for index, uac in enumerate(uacs):
            log = self.uas.callTo(f"answer{index}")
            self.assertEqual({m.callId for m in log}, {uac.callId})
            self.assertEqual(distinct(log)[-1].methodOrStatus, "200")
