"""
End-to-end tests of the IIF's defences: the real server (C{twistd -n callback})
with C{[peer NAME]} sections, the SIPp phone farm as the peer server, and
application servers on loopback, some of them forging.

Each test checks the wire: which datagrams an AS received (and that their
signatures verify) and which INVITEs reached the phones.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from callback_tw.iif.signing import sign, verify
from tests.e2e.harness import startCallbackWorld
from tests.e2e.loopback import freePort, sleep
from tests.e2e.peers import ASClient, parseIIF
from tests.e2e.processes import SIPP
from tests.e2e.siplog import describeMessages, requestsOf

KEY = "as1-e2e-key-0123456789abcdef"
WINDOW = 30


def _is(method: str, callbackId: str) -> Any:
    def predicate(text: str) -> bool:
        got, params = parseIIF(text)
        return got == method and params.get("id") == callbackId

    return predicate


class IIFSecurityEndToEndTests(TestCase):
    """
    Signed commands, per-peer policy and ownership, against the real server.
    """

    timeout = 90

    if SIPP is None:
        skip = "sipp is not installed (Debian package sip-tester)"

    @defer.inlineCallbacks
    def startWorld(self, **overrides: Any) -> Any:
        world = yield startCallbackWorld(self, reactor, **overrides)
        self.uas, self.client, self.server = world.uas, world.client, world.server
        return world

    def assertNoCallTo(self, *users: str) -> None:
        for user in users:
            self.assertEqual(
                self.uas.callsTo(user),
                [],
                f"{user} was called:\n{describeMessages(self.uas.messages())}",
            )

    def invitedUsers(self) -> list[str]:
        """
        The Request-URI user of the first INVITE of every call SIPp saw.
        """
        users = []
        for messages in self.uas.calls().values():
            invites = requestsOf(messages, "INVITE")
            if invites and invites[0].requestUser is not None:
                users.append(invites[0].requestUser)
        return users

    def signed(self, text: str, at: float | None = None) -> bytes:
        now = time.time() if at is None else at
        return sign(text.encode("ascii"), KEY.encode(), now)

    def assertSigned(self, text: str) -> bytes:
        """
        C{text} carries a valid signature under C{KEY}; return what it signs.
        """
        return verify(text.encode("ascii"), KEY.encode(), time.time(), WINDOW)

    @defer.inlineCallbacks
    def test_signedPeer(self) -> Any:
        """
        A keyed peer: a forged unsigned REQUEST and a stale signed one place no
        call and get no datagram back (one log line for the flood); a signed
        REQUEST is called, and its ACK and RESPONSE are signed.
        """
        yield self.startWorld(sections={"peer as1": {"key": KEY}})
        forged = "REQUEST: id=f1;user1=answer71;user2=answer72;duration=5;"
        for _ in range(20):
            self.client.send(forged)
        stale = "REQUEST: id=f2;user1=answer73;user2=answer74;duration=5;"
        self.client.send(self.signed(stale, time.time() - 120))
        self.client.send(
            self.signed("REQUEST: id=s1;user1=answer1;user2=hangup2;duration=60;")
        )
        ack = yield self.client.expect(_is("ACK", "s1"), 5)
        self.assertEqual(self.assertSigned(ack), b"ACK: id=s1;code=ok;")
        response = yield self.client.expect(_is("RESPONSE", "s1"), 20)
        self.assertTrue(
            self.assertSigned(response).startswith(b"RESPONSE: id=s1;real_duration=")
        )
        # The forged and stale ids got nothing at all, and no phone rang.
        self.assertEqual(
            [t for t in self.client.receivedTexts() if "id=f" in t],
            [],
        )
        self.assertNoCallTo("answer71", "answer72", "answer73", "answer74")
        # 21 refused datagrams within the interval: one log line.
        [line] = self.server.logLines("no answer")
        self.assertIn("unsigned", line)

    @defer.inlineCallbacks
    def test_policyAndOwnership(self) -> Any:
        """
        as1 may not call denied numbers nor run more than max_calls callbacks; as2
        may not send more than its rate, nor CANCEL or repeat as1's callback; a
        user with * and # allowed by the policy is called.
        """
        as2 = ASClient(reactor)
        as2.start()
        self.addCleanup(as2.stop)
        yield self.startWorld(
            no_answer_timeout=30,
            peers={"as2": f"127.0.0.1:{as2.port}"},
            sections={
                "peer as1": {"deny": "busy*, *0900*", "max_calls": 1},
                "peer as2": {"rate": 1},
            },
        )
        as2.defaultTarget = self.server.iifAddress
        client = self.client
        # deny: code=fail, no INVITE.
        client.request("d1", "busy1", "answer2")
        code = yield client.expectAck("d1")
        self.assertEqual(code, "fail")
        # max_calls = 1: the first rings, the second is refused.
        client.request("m1", "ring1", "answer3")
        self.assertEqual((yield client.expectAck("m1")), "ok")
        client.request("m2", "answer4", "answer5")
        self.assertEqual((yield client.expectAck("m2")), "fail")
        # as2 cannot CANCEL as1's callback, nor get its ACK by repeating it.
        as2.send("CANCEL: id=m1;")
        self.assertEqual((yield as2.expectAck("m1")), "fail")
        as2.request("m1", "ring1", "answer3")
        self.assertEqual((yield as2.expectAck("m1")), "fail")
        # rate = 1/s (burst 1): the second REQUEST at once is refused.
        as2.request("r1", "answer6", "hangup1")
        as2.request("r2", "answer7", "answer8")
        codes = yield defer.gatherResults([as2.expectAck("r1"), as2.expectAck("r2")])
        self.assertEqual(codes, ["ok", "fail"])
        # A user with * and # passes a policy that does not deny it.
        yield sleep(reactor, 1.1)
        as2.request("x1", "answer*21*0049301234#", "hangup1")
        self.assertEqual((yield as2.expectAck("x1")), "ok")
        # The owner's CANCEL works and frees the max_calls slot.
        client.send("CANCEL: id=m1;")
        self.assertEqual((yield client.expectAck("m1")), "ok")
        yield client.expectResponse("m1")
        client.request("m3", "answer4", "hangup1")
        self.assertEqual((yield client.expectAck("m3")), "ok")
        yield as2.expectResponse("r1")
        yield client.expectResponse("m3")
        yield as2.expectResponse("x1")
        self.assertNoCallTo("busy1", "answer2", "answer5", "answer7")
        self.assertEqual(len(self.uas.callsTo("ring1")), 1)
        # Its exact spelling in the Request-URI (# escaped) is the SIP side's.
        starred = [
            user
            for user in self.invitedUsers()
            if user.startswith("answer*21*0049301234")
        ]
        self.assertEqual(len(starred), 1, describeMessages(self.uas.messages()))
        self.assertEqual(len(self.server.logLines("refused by rule deny")), 1)
        self.assertEqual(len(self.server.logLines("refused by rule max_calls")), 1)
        self.assertEqual(len(self.server.logLines("refused by rule rate")), 1)
        # as2's repeat of m1 got no RESPONSE of as1's callback.
        self.assertEqual(as2.receivedTexts(_is("RESPONSE", "m1")), [])

    @defer.inlineCallbacks
    def test_rtpPortsUsedUp(self) -> Any:
        """
        With the one RTP port of the range held by a ringing leg, REQUESTs get
        code=fail and no phone rings; the server logs one line for all of them and
        no traceback; the port serves again once the callback is cancelled.
        """
        port = freePort()
        while port % 2:
            port = freePort()
        yield self.startWorld(
            no_answer_timeout=30,
            sections={"media": {"rtp_ports": f"{port}-{port}"}},
        )
        client = self.client
        client.request("h1", "ring1", "answer1")
        self.assertEqual((yield client.expectAck("h1")), "ok")
        for i in range(5):
            client.request(f"e{i}", f"answer{10 + i}", "answer2")
        codes = yield defer.gatherResults([client.expectAck(f"e{i}") for i in range(5)])
        self.assertEqual(codes, ["fail"] * 5)
        self.assertNoCallTo(*[f"answer{10 + i}" for i in range(5)])
        self.assertEqual(len(self.server.logLines("no free RTP port")), 1)
        self.assertEqual(self.server.logLines("Traceback"), [])
        client.send("CANCEL: id=h1;")
        self.assertEqual((yield client.expectAck("h1")), "ok")
        yield client.expectResponse("h1")
        # The freed port serves user1; user2 then finds none: one warning, the
        # callback ends with real_duration=0, still no traceback. (A released
        # port is closed on the reactor's next turn, which a REQUEST read in the
        # same turn as the CANCEL would not see yet: wait a little.)
        yield sleep(reactor, 0.2)
        client.request("h2", "answer3", "hangup1")
        self.assertEqual((yield client.expectAck("h2")), "ok")
        realDuration, _ = yield client.expectResponse("h2")
        self.assertEqual(realDuration, 0)
        self.assertEqual(len(self.server.logLines("callback h2: cannot call user2")), 1)
        self.assertEqual(self.server.logLines("Traceback"), [])
