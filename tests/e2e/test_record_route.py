"""
End-to-end test of external line mode through a provider that
record-routes, as real providers do: Kamailio calls C{record_route()} on the
legs' INVITEs and routes every in-dialog request only by its Route headers
(C{kamailio/provider_rr.cfg}); the phones copy Record-Route into their
responses and send their own BYE along the route set
(C{scenarios/uas_rr.xml}).

What the provider received is read from Kamailio's C{KAM|dialog|...} and
C{KAM|routed|...} lines (one per in-dialog request, with its R-URI, its
Route headers and where it came from); what the phones received from
SIPp's message log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from tests.e2e.kamailio import KAMAILIO, startRecordRoutingWorld
from tests.e2e.loopback import LOOPBACK, waitOrFail
from tests.e2e.processes import SIPP
from tests.e2e.siplog import describeMessages, distinct, requestsOf, responsesOf


def normalRoutes(value: str) -> list[str]:
    """
    The URIs of a Route or Record-Route value (several joined by commas),
    each with its parameters sorted: Kamailio writes C{;lr;ftag=...}, sippy
    C{;ftag=...;lr}.
    """
    routes = []
    for route in value.split(","):
        uri, *params = route.strip().strip("<>").split(";")
        routes.append(";".join([uri, *sorted(params)]))
    return routes


class RecordRouteTests(TestCase):
    """
    A callback through a record-routing provider: every in-dialog request,
    ours and the phones', passes through the provider once, by the route set.
    """

    timeout = 60

    if SIPP is None:
        skip = "sipp is not installed (Debian package sip-tester)"
    elif KAMAILIO is None:
        skip = "kamailio is not installed (Debian package kamailio)"

    def waitFor(
        self, predicate: Callable[[], Any], what: str, timeout: float = 10.0
    ) -> Any:
        """
        Poll until C{predicate()} is true; fail naming C{what}, with what
        Kamailio and the phones logged.
        """
        return waitOrFail(
            self,
            predicate,
            what,
            lambda: f"Kamailio:\n{self.provider.describeEvents()}\nphones:\n"
            f"{describeMessages(self.uas.messages())}",
            timeout,
        )

    @defer.inlineCallbacks
    def test_callbackThroughRecordRoutingProvider(self) -> None:
        """
        answer1 + hangup2 through a provider that record-routes: each phone
        gets the INVITE with the provider's Record-Route and echoes it in its
        200.  Then each of our in-dialog requests — the ACK, the join
        re-INVITE and its ACK, and the BYE to user1 — reaches the provider
        once (no spiral through itself), from our SIP port, with the phone's
        Contact as R-URI and the Record-Route as its only Route; the provider
        routes it by that Route, and the phone receives it with that R-URI,
        no Route left, and exactly two Vias (ours and the provider's).
        hangup2's own BYE goes to our Contact along the same route set and
        is answered 200 through the provider; the AS gets RESPONSE
        real_duration=2.
        """
        world = yield startRecordRoutingWorld(self, reactor)
        server, self.provider, self.uas, client = (
            world.server,
            world.provider,
            world.uas,
            world.client,
        )
        ourAddress = f"{LOOPBACK}:{server.sipPort}"
        providerAddress = f"{LOOPBACK}:{self.provider.port}"

        client.request("rr1", "answer1", "hangup2", duration=60)
        code = yield client.expectAck("rr1")
        self.assertEqual(code, "ok")
        realDuration, _ = yield client.expectResponse("rr1", timeout=20)
        self.assertEqual(realDuration, 2)

        # The BYE to user1 and its 200 may still be on their way.
        def user1Released() -> bool:
            calls = self.uas.callsTo("answer1")
            return bool(calls) and bool(responsesOf(calls[0], "BYE", 200, "sent"))

        yield self.waitFor(user1Released, "answer1's 200 to our BYE")
        yield self.waitFor(
            lambda: len(self.provider.of("routed", method="BYE")) >= 2,
            "both BYEs routed by Kamailio",
        )

        expected = {"answer1": "BYE", "hangup2": None}
        for user, lastOfOurs in expected.items():
            call = distinct(self.uas.callTo(user))
            described = describeMessages(call) + "\n" + self.provider.describeEvents()
            invite = requestsOf(call, "INVITE", "received")[0]
            (recordRoute,) = invite.headers["record-route"]
            self.assertEqual(
                normalRoutes(recordRoute)[0].split(";")[0],
                f"sip:{providerAddress}",
                described,
            )
            ok = responsesOf(call, "INVITE", 200, "sent")[0]
            self.assertEqual(ok.headers.get("record-route"), [recordRoute], described)
            contact = ok.header("contact").strip("<>")

            # What the provider received from us, in order.
            ours = [
                e
                for e in self.provider.of("dialog", callId=invite.callId)
                if e["source"] == ourAddress
            ]
            methods = [e["method"] for e in ours]
            joins = methods.count("INVITE")
            self.assertGreaterEqual(joins, 1, described)
            self.assertEqual(
                methods,
                ["ACK"]
                + ["INVITE", "ACK"] * joins
                + ([lastOfOurs] if lastOfOurs else []),
                described,
            )
            for event in ours:
                self.assertEqual(event["ruri"], contact, described)
                self.assertEqual(
                    normalRoutes(event["route"]), normalRoutes(recordRoute), described
                )
            routed = [
                e
                for e in self.provider.of("routed", callId=invite.callId)
                if e["ruri"] == contact
            ]
            self.assertEqual([e["method"] for e in routed], methods, described)
            # Loose routing to the R-URI: no next hop but the phone itself.
            self.assertEqual({e["dst"] for e in routed}, {"<null>"}, described)

            # What the phone received from us: through the provider, once.
            inDialog = [
                m
                for m in call
                if m.direction == "received"
                and m.isRequest
                and m.header("cseq") != invite.header("cseq")
            ]
            self.assertEqual([m.method for m in inDialog], methods, described)
            for message in inDialog:
                self.assertEqual(
                    message.firstLine, f"{message.method} {contact} SIP/2.0", described
                )
                self.assertIsNone(message.header("route"), described)
                vias = message.headers["via"]
                self.assertEqual(len(vias), 2, described)
                self.assertIn(f" {providerAddress};", vias[0], described)
                self.assertIn(f" {ourAddress};", vias[1], described)

        # No request went round the provider twice, none was left unrouted.
        self.assertEqual(
            [e for e in self.provider.of("dialog") if e["source"] == providerAddress],
            [],
            self.provider.describeEvents(),
        )
        self.assertEqual(self.provider.of("unrouted"), [])

        # hangup2 hung up: its BYE, along its route set, reached us and was
        # answered through the provider.
        call = distinct(self.uas.callTo("hangup2"))
        (bye,) = requestsOf(call, "BYE", "sent")
        self.assertTrue(
            bye.firstLine.startswith(f"BYE sip:5551000@{ourAddress}"), bye.firstLine
        )
        (byeAtProvider,) = self.provider.of("dialog", method="BYE", callId=bye.callId)
        self.assertEqual(
            byeAtProvider["source"], f"{LOOPBACK}:{self.uas.port}", byeAtProvider
        )
        self.assertEqual(
            normalRoutes(byeAtProvider["route"]),
            normalRoutes(
                requestsOf(call, "INVITE", "received")[0].header("record-route")
            ),
        )
        self.assertEqual(
            len(responsesOf(call, "BYE", 200, "received")), 1, describeMessages(call)
        )
        self.assertEqual(len(server.logLines("hung up by the far end")), 1)
