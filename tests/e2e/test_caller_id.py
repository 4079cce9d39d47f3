"""
End-to-end tests of what the far ends see of a leg's path and caller:

  - caller ID per leg (C{[callback] user2_caller}, C{assert_identity},
    C{[external_line] from_user}): the From and P-Asserted-Identity of
    user2's INVITE as the SIPp phones received it, through the outbound peer
    and through a provider (Kamailio);
  - the ACK of a 2xx through a provider that does not record-route
    (L{tests.e2e.kamailio}'s C{provider.cfg}: the phones do not copy its
    Record-Route, so the dialog has no route set): Kamailio's log of what
    passed through it, and the Via Kamailio added to what the phones got.

Direction in the SIPp log is SIPp's: "received" was sent by the server.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from tests.e2e.harness import startCallbackWorld
from tests.e2e.kamailio import KAMAILIO, startExternalLineWorld
from tests.e2e.processes import SIPP
from tests.e2e.siplog import SipMessage, describeMessages, distinct, requestsOf


def _invite(messages: list[SipMessage]) -> SipMessage:
    """The first INVITE of a call, as the phone received it."""
    return requestsOf(distinct(messages), "INVITE", "received")[0]


class CallerIdPeerTests(TestCase):
    """
    Server-to-server mode: the legs go to the outbound peer (SIPp) From the
    default caller, unless user2 is to see user1.
    """

    timeout = 60

    if SIPP is None:
        skip = "sipp is not installed (Debian package sip-tester)"

    @defer.inlineCallbacks
    def callback(self, callbackId: str, **callback: Any) -> Any:
        """
        Run a callback answer1 -> hangup2 (user2 hangs up after 2 s) with
        C{[callback]} values C{callback}; fire with the INVITEs the two
        phones received.
        """
        world = yield startCallbackWorld(self, reactor, sections={"callback": callback})
        world.client.request(callbackId, "answer1", "hangup2", duration=60)
        code = yield world.client.expectAck(callbackId)
        self.assertEqual(code, "ok")
        realDuration, _ = yield world.client.expectResponse(callbackId, timeout=20)
        self.assertEqual(realDuration, 2)
        return (
            _invite(world.uas.callTo("answer1")),
            _invite(world.uas.callTo("hangup2")),
        )

    @defer.inlineCallbacks
    def test_default(self) -> None:
        """
        By default both phones see the default caller (1000) in From, and
        no P-Asserted-Identity.
        """
        invite1, invite2 = yield self.callback("cid1")
        for invite in (invite1, invite2):
            self.assertIn("<sip:1000@127.0.0.1>", invite.header("from"))
            self.assertIsNone(invite.header("p-asserted-identity"), invite.describe())

    @defer.inlineCallbacks
    def test_user1ShownAndAsserted(self) -> None:
        """
        user2_caller = user1, assert_identity = yes: user2's phone sees
        user1's number in From and in P-Asserted-Identity; user1's phone
        still sees the default caller, unasserted.
        """
        invite1, invite2 = yield self.callback(
            "cid2", user2_caller="user1", assert_identity=True
        )
        self.assertIn("<sip:answer1@127.0.0.1>", invite2.header("from"))
        self.assertEqual(
            invite2.header("p-asserted-identity"), "<sip:answer1@127.0.0.1>"
        )
        self.assertIn("<sip:1000@127.0.0.1>", invite1.header("from"))
        self.assertIsNone(invite1.header("p-asserted-identity"))

    @defer.inlineCallbacks
    def test_user1ShownNotAsserted(self) -> None:
        """user2_caller = user1 alone: user1's number in From, no assertion."""
        _, invite2 = yield self.callback("cid3", user2_caller="user1")
        self.assertIn("<sip:answer1@127.0.0.1>", invite2.header("from"))
        self.assertIsNone(invite2.header("p-asserted-identity"))


class ProviderPathTests(TestCase):
    """
    External line mode through Kamailio: what the provider let through to
    the phones, and which way the ACKs went.
    """

    timeout = 60

    if SIPP is None:
        skip = "sipp is not installed (Debian package sip-tester)"
    elif KAMAILIO is None:
        skip = "kamailio is not installed (Debian package kamailio)"

    @defer.inlineCallbacks
    def callback(self, callbackId: str, fromUser: str, **callback: Any) -> Any:
        """
        Run answer1 -> hangup2 through the provider (line number 5551000,
        C{[external_line] from_user = fromUser}); fire with the world.
        """
        world = yield startExternalLineWorld(
            self,
            reactor,
            line={"from_user": fromUser},
            sections={"callback": callback},
        )
        self.world = world
        world.client.request(callbackId, "answer1", "hangup2", duration=60)
        code = yield world.client.expectAck(callbackId)
        self.assertEqual(code, "ok")
        realDuration, _ = yield world.client.expectResponse(callbackId, timeout=20)
        self.assertEqual(realDuration, 2)
        return world

    @defer.inlineCallbacks
    def test_lineNumberKeptCallerAsserted(self) -> None:
        """
        from_user = line with user2_caller = user1 and assert_identity:
        user2's phone sees the line's number in From (at the provider's
        domain) and user1 in P-Asserted-Identity, which the provider passed
        through.
        """
        world = yield self.callback(
            "pcid1", "line", user2_caller="user1", assert_identity=True
        )
        invite2 = _invite(world.uas.callTo("hangup2"))
        self.assertIn("<sip:5551000@127.0.0.1>", invite2.header("from"))
        self.assertEqual(
            invite2.header("p-asserted-identity"), "<sip:answer1@127.0.0.1>"
        )
        invite1 = _invite(world.uas.callTo("answer1"))
        self.assertIsNone(invite1.header("p-asserted-identity"))

    @defer.inlineCallbacks
    def test_callerAsFrom(self) -> None:
        """
        from_user = caller with user2_caller = user1: user2's phone sees
        user1's number as From user; the provider still authenticated the
        leg with the line's credentials.
        """
        world = yield self.callback("pcid2", "caller", user2_caller="user1")
        invite2 = _invite(world.uas.callTo("hangup2"))
        self.assertIn("<sip:answer1@127.0.0.1>", invite2.header("from"))
        self.assertIsNone(invite2.header("p-asserted-identity"))
        (relay,) = world.provider.of("relay", callId=invite2.callId)
        self.assertEqual(relay["fromUri"], "sip:answer1@127.0.0.1")
        self.assertEqual(world.provider.of("authfail"), [])

    @defer.inlineCallbacks
    def test_acksThroughProvider(self) -> None:
        """
        Every 2xx to an INVITE (the answer, the join re-INVITEs) is ACKed
        through the provider, with the phone's Contact as R-URI: Kamailio
        logged each such ACK, and each ACK the phones received carries
        Kamailio's Via above the server's.
        """
        world = yield self.callback("pack1", "line")
        provider, uas = world.provider, world.uas
        for user in ("answer1", "hangup2"):
            call = distinct(uas.callTo(user))
            log = describeMessages(call) + "\n" + provider.describeEvents()
            answered = [m for m in call if m.status == 200 and m.cseqMethod == "INVITE"]
            acks = requestsOf(call, "ACK", "received")
            self.assertGreaterEqual(len(answered), 2, log)
            self.assertEqual(len(acks), len(answered), log)
            for ack in acks:
                vias = ack.headers.get("via", [])
                self.assertEqual(len(vias), 2, ack.describe())
                self.assertIn(f"127.0.0.1:{provider.port}", vias[0], ack.describe())
            contact = f"sip:{user}@127.0.0.1:{uas.port}"
            passed = [
                e
                for e in provider.of("req", method="ACK", callId=call[0].callId)
                if e["ruri"].startswith(contact)
            ]
            self.assertEqual(len(passed), len(answered), log)
