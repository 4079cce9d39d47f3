"""
End-to-end tests of the SIP half of crash recovery: a real L{SipStack} on
loopback dials a SIPp phone (C{scenarios/uas.xml}), dies without a word to
the phone, and a new stack on the same port ends the dialog from the
L{DialogState} the leg had pushed (L{releaseDialog}), as a restarted server
does from its store.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from callback_tw.sip.dialogs import DialogState, releaseDialog
from callback_tw.sip.routing import Route
from callback_tw.sip.sdp import SdpSession
from callback_tw.sip.stack import SipStack
from tests.e2e.loopback import freePort, pollUntil
from tests.e2e.processes import SIPP, SippUAS, startManaged
from tests.e2e.siplog import describeMessages, requestsOf, responsesOf
from tests.siphelpers import RecordingListener


def tagOf(value: str | None) -> str | None:
    if value is None or ";tag=" not in value:
        return None
    return value.split(";tag=")[1].split(";")[0].strip()


def asStored(state: DialogState) -> DialogState:
    """C{state} as read back from the store: plain values only."""
    return DialogState(**{**asdict(state), "state": str(state.state)})


class SipRecoveryTests(TestCase):
    """
    A dialog left behind by a crash is ended by a new stack that never knew
    it: an answered call gets a BYE in its dialog, a ringing one a CANCEL.
    """

    timeout = 40

    if SIPP is None:
        skip = "sipp is not installed (Debian package sip-tester)"

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        self.uas = SippUAS(str(directory), lifetime=60)
        yield startManaged(self, self.uas)
        self.sipPort = freePort()
        self.stack = self.startStack()
        self.listener = RecordingListener()

    def startStack(self) -> SipStack:
        stack = SipStack("127.0.0.1", self.sipPort, reactor=reactor)
        stack.startService()
        self.addCleanup(stack.stopService)
        return stack

    def dial(self, user: str) -> Any:
        route = Route(("127.0.0.1", self.uas.port), "1000", "phone farm")
        offer = SdpSession("127.0.0.1").offer("127.0.0.1", 40000)
        return self.stack.dial(user, route, offer, self.listener, 30, user)

    def stage(self, stage: str) -> defer.Deferred:
        """Fire with the first dialog state pushed in C{stage}."""

        def reached() -> DialogState | None:
            for state in self.listener.dialogs:
                if state.state == stage:
                    return state
            return None

        return pollUntil(reactor, reached, 10)

    @defer.inlineCallbacks
    def crash(self, leg: Any) -> Any:
        """The stack dies without a word to the phone; a new one starts."""
        leg.abandon()
        yield self.stack.stopService()
        self.stack = self.startStack()

    def phoneMessages(self, user: str, until: Any) -> defer.Deferred:
        """Fire with the phone's messages of the call to C{user} once C{until}."""

        def check() -> Any:
            messages = self.uas.callTo(user)
            return messages if until(messages) else None

        return pollUntil(reactor, check, 10)

    @defer.inlineCallbacks
    def test_answeredGetsBye(self) -> Any:
        """
        An answered call left by a crash gets a BYE in its dialog (its tags,
        the next CSeq, a Reason) from the new stack; the phone answers 200.
        """
        leg = self.dial("answer1")
        state = yield self.stage("answered")
        yield self.crash(leg)
        status = yield releaseDialog(
            self.stack, asStored(state), (500, "server restarted")
        )
        self.assertEqual(status, 200)
        messages = yield self.phoneMessages(
            "answer1", lambda m: responsesOf(m, "BYE", 200, "sent")
        )
        byes = requestsOf(messages, "BYE", "received")
        self.assertTrue(byes, describeMessages(messages))
        bye = byes[0]
        self.assertEqual(tagOf(bye.header("from")), state.localTag)
        self.assertEqual(tagOf(bye.header("to")), state.remoteTag)
        self.assertEqual(bye.header("cseq"), f"{state.nextCSeq} BYE")
        self.assertIn("cause=500", bye.header("reason"))
        self.assertEqual(self.stack.pendingTransactions, 0)

    @defer.inlineCallbacks
    def test_ringingGetsCancel(self) -> Any:
        """
        A ringing call left by a crash gets a CANCEL of its INVITE; the
        phone answers it 200 and the INVITE 487, which the new stack ACKs.
        """
        leg = self.dial("ring1")
        state = yield self.stage("ringing")
        yield self.crash(leg)
        status = yield releaseDialog(
            self.stack, asStored(state), (500, "server restarted")
        )
        self.assertEqual(status, 487)
        messages = yield self.phoneMessages(
            "ring1", lambda m: requestsOf(m, "ACK", "received")
        )
        kinds = [
            m.method if m.isRequest else f"{m.status} {m.cseqMethod}"
            for m in messages
            if m.direction == "received" or m.cseqMethod == "CANCEL" or m.status == 487
        ]
        self.assertEqual(
            kinds[-4:],
            ["CANCEL", "200 CANCEL", "487 INVITE", "ACK"],
            describeMessages(messages),
        )
        cancel = requestsOf(messages, "CANCEL")[0]
        invite = requestsOf(messages, "INVITE")[0]
        self.assertEqual(cancel.header("via"), invite.header("via"))
        self.assertEqual(cancel.header("cseq"), f"{state.inviteCSeq} CANCEL")
        ack = requestsOf(messages, "ACK")[0]
        self.assertEqual(ack.header("via"), invite.header("via"))
        self.assertEqual(self.stack.pendingTransactions, 0)
