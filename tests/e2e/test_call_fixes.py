"""
End-to-end tests of what the parties hear and what the AS is billed: the
join waits for the announcements, real_duration is talk time (from the
join), a join re-INVITE that is never answered ends the callback after
C{[callback] join_timeout}, and C{[peer NAME] response_details}.

The phones are SIPp: the phone farm (C{etc/sipp/phones.xml}) and a far end
that ignores re-INVITEs (C{scenarios/uas_deaf.xml}, like a stock
C{sipp -sn uas}). Direction in the SIPp log is SIPp's: "received" was sent
by the server.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from callback_tw.config.values import PACKAGED_PROMPTS
from callback_tw.media.prompts import PromptCatalogue
from tests.e2e.harness import startCallbackWorld
from tests.e2e.loopback import sleep
from tests.e2e.peers import ASClient
from tests.e2e.processes import SIPP, ServerProcess, SippUAS, startManaged
from tests.e2e.siplog import SipMessage, describeMessages, requestsOf, responsesOf

DEAF = Path(__file__).parent / "scenarios" / "uas_deaf.xml"
REASON = re.compile(r'^SIP\s*;\s*cause\s*=\s*(\d{3})\s*;\s*text\s*=\s*"[^"]*"', re.I)
DETAILED = re.compile(
    r"^RESPONSE: id=(?P<id>[^;]+);real_duration=(?P<real>\d+);"
    r"cause=(?P<cause>[a-z0-9_]*);answer1=(?P<answer1>\d*);"
    r"answer2=(?P<answer2>\d*);joined=(?P<joined>\d*);ended=(?P<ended>\d*);"
    r"status1=(?P<status1>\d*);status2=(?P<status2>\d*);$"
)


def _reasonCause(bye: SipMessage) -> int | None:
    reason = bye.header("reason")
    match = REASON.match(reason or "")
    return None if match is None else int(match.group(1))


def _okTo(call: list[SipMessage], index: int) -> float:
    """When the phone answered the server's C{index}-th INVITE of C{call} 200."""
    invites = requestsOf(call, "INVITE", "received")
    assert len(invites) > index, describeMessages(call)
    cseq = invites[index].header("cseq")
    oks = [
        m for m in responsesOf(call, "INVITE", 200, "sent") if m.header("cseq") == cseq
    ]
    assert oks, describeMessages(call)
    return oks[0].time


class PhoneFarmTests(TestCase):
    """Talk time against the phone farm, with user1's default announcement."""

    timeout = 60

    if SIPP is None:
        skip = "sipp is not installed (Debian package sip-tester)"

    @defer.inlineCallbacks
    def startWorld(self, **sections: Any) -> Any:
        self.world = yield startCallbackWorld(
            self, reactor, default_ann_id1="00080002", sections=sections or None
        )
        self.client = self.world.client
        self.uas = self.world.uas

    @defer.inlineCallbacks
    def test_hangUpDuringAnnouncementReportsZero(self) -> Any:
        """
        user2 hangs up 1 s after its answer, while user1 still hears its
        2.6 s announcement: the parties were never joined (no re-INVITE to
        either), user1 gets a BYE, and real_duration is 0.
        """
        yield self.startWorld()
        self.client.request("h1", "answer1", "hangup1", duration=30)
        self.assertEqual((yield self.client.expectAck("h1")), "ok")
        real, _ = yield self.client.expectResponse("h1", timeout=15)
        self.assertEqual(real, 0)
        call1 = self.uas.callTo("answer1")
        call2 = self.uas.callTo("hangup1")
        self.assertEqual(len(requestsOf(call1, "INVITE", "received")), 1)
        self.assertEqual(len(requestsOf(call2, "INVITE", "received")), 1)
        self.assertEqual(len(requestsOf(call1, "BYE", "received")), 1)

    @defer.inlineCallbacks
    def test_talkTimeAfterAnnouncement(self) -> Any:
        """
        ann_id2 + ann_digit2 (2.9 s) before a conversation of about 5 s:
        user2 (hangup8) hangs up 8 s after its answer, and real_duration is
        5 — the time from the join, as the SIP log shows it, not from
        user2's answer (which would be 8).
        """
        yield self.startWorld()
        catalogue = PromptCatalogue.load(PACKAGED_PROMPTS)
        heard2 = 0.02 * (
            len(catalogue.announcement("00080003", "PCMU"))
            + len(catalogue.digits("7", "PCMU"))
        )
        self.assertLess(abs(heard2 - 2.86), 0.01)
        self.client.request(
            "t1", "answer1", "hangup8", duration=60, ann_id2="00080003", ann_digit2="7"
        )
        self.assertEqual((yield self.client.expectAck("t1")), "ok")
        real, _ = yield self.client.expectResponse("t1", timeout=20)
        call2 = self.uas.callTo("hangup8")
        answered2 = _okTo(call2, 0)
        joined = _okTo(call2, 1)
        [bye] = requestsOf(call2, "BYE", "sent")
        self.assertGreaterEqual(joined - answered2, heard2 - 0.05)
        self.assertLess(joined - answered2, heard2 + 0.3)
        self.assertEqual(real, 5)
        self.assertLessEqual(abs(real - (bye.time - joined)), 0.5)

    @defer.inlineCallbacks
    def test_responseDetails(self) -> Any:
        """
        A peer with response_details = yes gets the cause word, the four
        moments in unix ms (in order: answers, join, end; real_duration
        counted from the join) and both legs' statuses.
        """
        yield self.startWorld(**{"peer as1": {"response_details": "yes"}})
        self.client.request("d1", "answer1", "answer2", duration=4)
        self.assertEqual((yield self.client.expectAck("d1")), "ok")
        text = yield self.client.expect(
            lambda t: t.startswith("RESPONSE: id=d1;"), timeout=20
        )
        match = DETAILED.match(text.strip())
        self.assertIsNotNone(match, text)
        values = match.groupdict()
        self.assertEqual(
            (values["cause"], values["status1"], values["status2"]),
            ("duration", "200", "200"),
        )
        answer1, answer2, joined, ended = (
            int(values[name]) for name in ("answer1", "answer2", "joined", "ended")
        )
        self.assertLessEqual(answer1, answer2)
        # user1's announcement (2.62 s) is heard before the join.
        self.assertGreaterEqual(joined - answer1, 2600)
        # The duration (4 s) counts from user1's answer.
        self.assertLess(abs(ended - answer1 - 4000), 100)
        real = int(values["real"])
        self.assertEqual(real, int((ended - joined) / 1000 + 0.5))
        self.assertEqual(real, 1)


class DeafPhoneTests(TestCase):
    """
    A far end that never answers the join re-INVITE, and
    C{join_timeout = 3}.
    """

    timeout = 60

    if SIPP is None:
        skip = "sipp is not installed (Debian package sip-tester)"

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        self.uas = SippUAS(str(directory), scenario=DEAF, reactor=reactor)
        yield startManaged(self, self.uas)
        self.client = ASClient(reactor)
        self.client.start()
        self.addCleanup(self.client.stop)
        self.server = ServerProcess(
            str(directory),
            self.uas.port,
            self.client.port,
            reactor=reactor,
            sections={"callback": {"join_timeout": 3}},
        )
        self.client.defaultTarget = self.server.iifAddress
        yield startManaged(self, self.server)

    @defer.inlineCallbacks
    def released(self) -> Any:
        self.client.request("j1", "deaf1", "deaf2", duration=30)
        self.assertEqual((yield self.client.expectAck("j1")), "ok")
        real, _ = yield self.client.expectResponse("j1", timeout=15)
        return real

    @defer.inlineCallbacks
    def test_joinTimeoutReleases(self) -> Any:
        """
        user1 never answers the join re-INVITE: 3 s after it the server
        sends a BYE to both legs with Reason cause=408, user2 is never
        re-INVITEd, and real_duration is 0.
        """
        real = yield self.released()
        self.assertEqual(real, 0)
        yield sleep(reactor, 0.5)
        call1, call2 = self.uas.callTo("deaf1"), self.uas.callTo("deaf2")
        invites1 = requestsOf(call1, "INVITE", "received")
        self.assertGreaterEqual(len(invites1), 2, describeMessages(call1))
        reinvite = invites1[1]
        [bye1] = [m for m in requestsOf(call1, "BYE", "received")][:1]
        [bye2] = [m for m in requestsOf(call2, "BYE", "received")][:1]
        self.assertEqual(_reasonCause(bye1), 408, bye1.describe())
        self.assertEqual(_reasonCause(bye2), 408, bye2.describe())
        self.assertGreaterEqual(bye1.time - reinvite.time, 2.9)
        self.assertLess(bye1.time - reinvite.time, 4.0)
        self.assertEqual(len(requestsOf(call2, "INVITE", "received")), 1)

    @defer.inlineCallbacks
    def test_noReInviteRetransmissionAfterBye(self) -> Any:
        """
        Once the BYE has gone out, the abandoned re-INVITE is never sent
        again (sippy would retransmit it for 32 s).
        """
        yield self.released()
        yield sleep(reactor, 5)
        call1 = self.uas.callTo("deaf1")
        [bye] = requestsOf(call1, "BYE", "received")[:1]
        after = [
            m for m in requestsOf(call1, "INVITE", "received") if m.time > bye.time
        ]
        self.assertEqual(after, [], describeMessages(call1))
