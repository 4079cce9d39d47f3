"""
End-to-end tests of external line mode against a real provider: Kamailio
(registrar with digest authentication, proxy that challenges the legs) in
front of the SIPp UAS that plays the phones (L{tests.e2e.kamailio}).

What the provider received is read from Kamailio's C{KAM|...} log lines;
what the phones received from SIPp's message log; what the operator sees
from the server's log; what the application server sees from its
datagrams.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from tests.e2e.kamailio import KAMAILIO, startExternalLineWorld
from tests.e2e.loopback import waitOrFail
from tests.e2e.processes import SIPP
from tests.e2e.siplog import describeMessages, distinct, requestsOf


class ExternalLineTests(TestCase):
    """
    The line registers with the provider, refreshes, unregisters, and the
    legs go through the provider with the line's number and credentials.
    """

    timeout = 60

    if SIPP is None:
        skip = "sipp is not installed (Debian package sip-tester)"
    elif KAMAILIO is None:
        skip = "kamailio is not installed (Debian package kamailio)"

    @defer.inlineCallbacks
    def startWorld(self, **kwargs: Any) -> Any:
        world = yield startExternalLineWorld(self, reactor, **kwargs)
        self.server = world.server
        self.provider = world.provider
        self.uas = world.uas
        self.client = world.client
        return world

    def waitFor(
        self, predicate: Callable[[], Any], what: str, timeout: float = 10.0
    ) -> Any:
        """
        Poll until C{predicate()} is true; fail naming C{what}, with what
        Kamailio and the server logged.
        """
        return waitOrFail(
            self,
            predicate,
            what,
            lambda: f"Kamailio:\n{self.provider.describeEvents()}\nserver:\n"
            + "\n".join(self.server.logLines("external line")),
            timeout,
        )

    def registers(self, **match: str) -> list[Any]:
        return self.provider.of("req", method="REGISTER", **match)

    @defer.inlineCallbacks
    def test_registerRefreshUnregister(self) -> None:
        """
        At start the line sends REGISTER, gets 401, sends it again with
        credentials and gets 200 (Kamailio saved the binding; the server logs
        the line registered with the expiry Kamailio granted, 8 s, not the
        3600 s asked for); it refreshes before the binding lapses (at half
        the granted expiry); at stop it unregisters with Expires: 0, again
        authenticated, and Kamailio removes the binding.
        """
        yield self.startWorld(maxExpires=8)
        yield self.waitFor(lambda: self.provider.of("saved"), "first registration")
        first, second = self.registers()[:2]
        self.assertEqual(
            (first["authUser"], first["expires"], first["ruri"]),
            ("<null>", "3600", f"sip:127.0.0.1:{self.provider.port}"),
        )
        (challenge,) = self.provider.of("challenge", callId=first["callId"])[:1]
        self.assertEqual((challenge["code"], challenge["method"]), ("401", "REGISTER"))
        self.assertEqual((second["authUser"], second["expires"]), ("line1", "3600"))
        self.assertEqual(second["callId"], first["callId"])
        self.assertEqual(second["fromUri"], "sip:line1@127.0.0.1")
        saved = self.provider.of("saved")[0]
        self.assertEqual(saved["toUri"], "sip:line1@127.0.0.1")
        yield self.waitFor(
            lambda: self.server.logLines("external line registered (expires 8)"),
            "the server's 'registered' log line",
        )

        # Refresh: at half the 8 s granted, well before the binding lapses.
        yield self.waitFor(lambda: len(self.provider.of("saved")) >= 2, "a refresh")
        firstSaved, refreshed = self.provider.of("saved")[:2]
        interval = refreshed.time - firstSaved.time
        self.assertTrue(3.0 <= interval < 6.0, f"refreshed after {interval:.2f} s")
        self.assertEqual(refreshed["callId"], first["callId"])
        self.assertEqual(self.provider.of("authfail"), [])

        yield self.server.stop()
        unregisters = self.registers(expires="0")
        self.assertEqual(
            [r["authUser"] for r in unregisters],
            ["<null>", "line1"],
            self.provider.describeEvents(),
        )
        self.assertEqual(self.provider.of("saved")[-1]["expires"], "0")
        self.assertEqual(
            len(self.server.logLines("external line unregistered (200 OK)")), 1
        )

    @defer.inlineCallbacks
    def test_callbackThroughProvider(self) -> None:
        """
        A whole callback through the provider: each leg's INVITE is
        challenged (407) and sent again with the line's credentials; the
        phones see From = the line's number at the provider's domain; the
        callback joins, user2 hangs up after 2 s and the AS gets
        RESPONSE real_duration=2.
        """
        yield self.startWorld()
        self.client.request("el1", "answer1", "hangup2", duration=60)
        code = yield self.client.expectAck("el1")
        self.assertEqual(code, "ok")
        realDuration, _ = yield self.client.expectResponse("el1", timeout=20)
        self.assertEqual(realDuration, 2)

        for user in ("answer1", "hangup2"):
            invites = [
                e
                for e in self.provider.of("req", method="INVITE")
                if e["ruri"].startswith(f"sip:{user}@")
            ]
            callIds = {e["callId"] for e in invites}
            self.assertEqual(len(callIds), 1, self.provider.describeEvents())
            (callId,) = callIds
            self.assertEqual(
                [e["authUser"] for e in invites][:2],
                ["<null>", "line1"],
                self.provider.describeEvents(),
            )
            (challenge,) = self.provider.of("challenge", callId=callId)
            self.assertEqual(
                (challenge["code"], challenge["method"]), ("407", "INVITE")
            )
            (relay,) = self.provider.of("relay", callId=callId)
            self.assertEqual(relay["fromUri"], "sip:5551000@127.0.0.1")

            call = distinct(self.uas.callTo(user))
            invite = requestsOf(call, "INVITE", "received")[0]
            self.assertIn(
                "<sip:5551000@127.0.0.1>", invite.header("from"), describeMessages(call)
            )
            # The phones never see the credentials: the provider consumed them.
            self.assertIsNone(invite.header("proxy-authorization"))
        self.assertEqual(self.provider.of("authfail"), [])

    @defer.inlineCallbacks
    def test_wrongCredentials(self) -> None:
        """
        A provider that rejects the line's credentials: the REGISTER with
        credentials gets 403 and the server logs the line failing with that
        status and its retry; a callback is still tried through the provider
        (the leg's authenticated INVITE gets 403), no phone rings, and the AS
        gets RESPONSE real_duration=0.
        """
        yield self.startWorld(password="wrong")
        yield self.waitFor(
            lambda: self.server.logLines(
                "external line failing: 403 Forbidden, retry in 5 s"
            ),
            "the server's 'failing' log line",
        )
        self.assertEqual(
            [e["authUser"] for e in self.registers()][:2], ["<null>", "line1"]
        )
        self.assertEqual(self.provider.of("saved"), [])
        self.assertEqual(self.server.logLines("external line registered"), [])

        self.client.request("el2", "answer1", "answer2", duration=60)
        code = yield self.client.expectAck("el2")
        self.assertEqual(code, "ok")
        realDuration, _ = yield self.client.expectResponse("el2", timeout=15)
        self.assertEqual(realDuration, 0)
        invites = self.provider.of("req", method="INVITE")
        self.assertEqual([e["authUser"] for e in invites], ["<null>", "line1"])
        (failed,) = self.provider.of("authfail", method="INVITE")
        self.assertEqual(failed["callId"], invites[0]["callId"])
        self.assertEqual(self.uas.callsTo("answer1"), [])
        self.assertEqual(self.uas.callsTo("answer2"), [])
