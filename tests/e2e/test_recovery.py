"""
End-to-end tests of crash recovery: the real server is killed with SIGKILL
(no chance to release anything) at four moments of a callback, then started
again with the same configuration, ports and store.  What the phones (SIPp)
and the AS see after the restart is checked:

  - every leg that was answered gets exactly one BYE, with the Reason
    C{SIP;cause=500;text="server restarted"}, and every leg still ringing a
    CANCEL;
  - the AS gets exactly one RESPONSE, with a plausible real_duration;
  - the same REQUEST repeated gets the same ACK and the same RESPONSE, and
    no new INVITE.

Direction in the SIPp log is SIPp's: "received" was sent by the server.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from tests.e2e.loopback import pollUntil, sleep
from tests.e2e.peers import ASClient
from tests.e2e.processes import SIPP, ServerProcess, SippUAS, startManaged
from tests.e2e.siplog import describeMessages, distinct, requestsOf, responsesOf

#: C{Reason: SIP;cause=500;text="server restarted"}, blanks allowed.
RESTART_REASON = re.compile(
    r'^SIP\s*;\s*cause\s*=\s*500\s*;\s*text\s*=\s*"server restarted"$', re.I
)


class RecoveryEndToEndTests(TestCase):
    """
    kill -9 at four moments of a callback, then a restart on the same store.
    """

    timeout = 90

    if SIPP is None:
        skip = "sipp is not installed (Debian package sip-tester)"

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.directory = Path(self.mktemp())
        self.directory.mkdir(parents=True)
        self.uas = SippUAS(str(self.directory), reactor=reactor)
        yield startManaged(self, self.uas)
        self.client = ASClient(reactor)
        self.client.start()
        self.addCleanup(self.client.stop)

    def server(self, **overrides: Any) -> ServerProcess:
        server = ServerProcess(
            str(self.directory),
            self.uas.port,
            self.client.port,
            reactor=reactor,
            **overrides,
        )
        self.client.defaultTarget = server.iifAddress
        return server

    @defer.inlineCallbacks
    def crashAndRestart(self, server: ServerProcess) -> Any:
        """
        SIGKILL the server, then start a new one with the same configuration
        (ports, store); fire with it once it is ready (recovery done).
        """
        server._signal("KILL")
        yield server.ended
        self.assertEqual(server.exitSignal, 9)
        restarted = self.server(
            listen_port=server.iifPort,
            port=server.sipPort,
            default_ann_id1=server.sections["media"]["default_ann_id1"],
        )
        yield startManaged(self, restarted)
        return restarted

    def waitFor(self, what: Any, timeout: float = 15.0) -> defer.Deferred:
        return pollUntil(reactor, what, timeout)

    def seen(self, user: str, check: Any) -> defer.Deferred:
        """Fire with the messages of the one call to C{user} once C{check}."""

        def ready() -> Any:
            calls = self.uas.callsTo(user)
            return calls[0] if calls and check(calls[0]) else None

        return self.waitFor(ready)

    def assertOneBye(self, user: str) -> list:
        """The call to C{user} got exactly one BYE, after a restart, answered."""
        messages = self.uas.callTo(user)
        byes = distinct(requestsOf(messages, "BYE", "received"))
        self.assertEqual(len(byes), 1, describeMessages(messages))
        self.assertRegex(byes[0].header("reason") or "", RESTART_REASON)
        self.assertTrue(responsesOf(messages, "BYE", 200, "sent"))
        return messages

    def assertCancelled(self, user: str) -> None:
        """The call to C{user} got a CANCEL, and its INVITE ended 487."""
        messages = self.uas.callTo(user)
        cancels = distinct(requestsOf(messages, "CANCEL", "received"))
        self.assertEqual(len(cancels), 1, describeMessages(messages))
        self.assertTrue(responsesOf(messages, "INVITE", 487, "sent"))
        self.assertEqual(requestsOf(messages, "BYE", "received"), [])

    @defer.inlineCallbacks
    def assertAnsweredOnce(self, callbackId: str, expected: Any) -> Any:
        """
        The AS gets exactly one RESPONSE (checked 2 s after it), whose
        real_duration C{expected(real)} accepts; then the same REQUEST again
        gets ACK ok and the same RESPONSE, and no new INVITE goes out.
        """
        real, _ = yield self.client.expectResponse(callbackId, timeout=20)
        self.assertTrue(expected(real), real)
        yield sleep(reactor, 2.0)
        responses = self.client.receivedTexts(f"RESPONSE: id={callbackId};")
        self.assertEqual(len(responses), 1, responses)
        invites = len(
            [
                m
                for m in self.uas.messages()
                if m.method == "INVITE" and m.direction == "received"
            ]
        )
        self.client.request(callbackId, *self.users[callbackId])
        code = yield self.client.expectAck(callbackId)
        self.assertEqual(code, "ok")
        again, _ = yield self.client.expectResponse(callbackId)
        self.assertEqual(again, real)
        yield sleep(reactor, 1.0)
        self.assertEqual(
            len(
                [
                    m
                    for m in self.uas.messages()
                    if m.method == "INVITE" and m.direction == "received"
                ]
            ),
            invites,
        )
        return real

    @defer.inlineCallbacks
    def start(self, callbackId: str, user1: str, user2: str, **overrides: Any) -> Any:
        self.users = {callbackId: (user1, user2)}
        server = self.server(**overrides)
        yield startManaged(self, server)
        self.client.request(callbackId, user1, user2)
        code = yield self.client.expectAck(callbackId)
        self.assertEqual(code, "ok")
        return server

    @defer.inlineCallbacks
    def test_killedWhileUser1Rings(self) -> Any:
        """
        Killed while user1 rings: after the restart user1's INVITE is
        CANCELled, the AS gets one RESPONSE with real_duration=0.
        """
        server = yield self.start("r1", "ring11", "answer12")
        yield self.seen("ring11", lambda m: responsesOf(m, "INVITE", 180, "sent"))
        yield sleep(reactor, 0.3)  # the ringing dialog is committed
        yield self.crashAndRestart(server)
        yield self.seen("ring11", lambda m: responsesOf(m, "INVITE", 487, "sent"))
        self.assertCancelled("ring11")
        self.assertEqual(self.uas.callsTo("answer12"), [])
        yield self.assertAnsweredOnce("r1", lambda real: real == 0)

    @defer.inlineCallbacks
    def test_killedDuringUser1Announcement(self) -> Any:
        """
        Killed while user1 hears its announcement (user2 being called):
        user1 gets one BYE, user2's INVITE a CANCEL, real_duration=0.
        """
        server = yield self.start(
            "r2", "answer21", "ring22", default_ann_id1="00080002"
        )
        yield self.seen("answer21", lambda m: requestsOf(m, "ACK", "received"))
        yield self.seen("ring22", lambda m: responsesOf(m, "INVITE", 180, "sent"))
        yield sleep(reactor, 0.3)
        yield self.crashAndRestart(server)
        yield self.seen("answer21", lambda m: responsesOf(m, "BYE", 200, "sent"))
        yield self.seen("ring22", lambda m: responsesOf(m, "INVITE", 487, "sent"))
        self.assertOneBye("answer21")
        self.assertCancelled("ring22")
        yield self.assertAnsweredOnce("r2", lambda real: real == 0)

    @defer.inlineCallbacks
    def test_killedWhileUser2Rings(self) -> Any:
        """
        Killed while user2 rings (no announcement): user1 gets one BYE,
        user2's INVITE a CANCEL, real_duration=0.
        """
        server = yield self.start("r3", "answer31", "ring32")
        yield self.seen("ring32", lambda m: responsesOf(m, "INVITE", 180, "sent"))
        yield sleep(reactor, 0.3)
        yield self.crashAndRestart(server)
        yield self.seen("ring32", lambda m: responsesOf(m, "INVITE", 487, "sent"))
        yield self.seen("answer31", lambda m: responsesOf(m, "BYE", 200, "sent"))
        self.assertOneBye("answer31")
        self.assertCancelled("ring32")
        yield self.assertAnsweredOnce("r3", lambda real: real == 0)

    @defer.inlineCallbacks
    def test_killedWhileJoined(self) -> Any:
        """
        Killed 3 s after the join: both legs get one BYE, and real_duration
        counts from user2's answer to the last heartbeat (at most a second
        before the kill).
        """
        server = yield self.start("r4", "answer41", "answer42")
        messages = yield self.seen(
            "answer42", lambda m: len(requestsOf(m, "ACK", "received")) >= 2
        )
        answered = min(m.time for m in responsesOf(messages, "INVITE", 200))
        yield sleep(reactor, 3.0)
        killedAt = time.time()
        yield self.crashAndRestart(server)
        yield self.seen("answer41", lambda m: responsesOf(m, "BYE", 200, "sent"))
        yield self.seen("answer42", lambda m: responsesOf(m, "BYE", 200, "sent"))
        self.assertOneBye("answer41")
        self.assertOneBye("answer42")
        talked = killedAt - answered
        yield self.assertAnsweredOnce(
            "r4", lambda real: talked - 2.0 <= real <= talked + 0.5
        )
