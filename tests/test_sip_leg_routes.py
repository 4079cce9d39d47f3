"""
Tests for L{callback_tw.sip.leg}: how a leg sent through a provider's
outbound proxy routes its in-dialog requests (ACK, re-INVITE, BYE) once the
answer gives the dialog a route set (RFC 3261 12.1.2, 12.2.1.1).

The far end is played by the test (L{FarEnd}); the Record-Route headers a
record-routing provider adds are written into the test's own 2xx.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from callback_tw.sip.leg import PARK_AFTER
from callback_tw.sip.routing import Route
from callback_tw.sip.sdp import SdpSession
from tests.siphelpers import (
    FarEnd,
    RecordingListener,
    farSdp,
    headerOf,
    runUntil,
    startStack,
)

#: Where the leg's INVITE goes: the provider's proxy.
PROXY = ("127.0.0.1", 5070)
#: The provider's domain (R-URI host of the INVITE).
DOMAIN = ("127.0.0.1", 5062)
#: The phone's Contact (FarEnd's).
CONTACT = "sip:127.0.0.1:5099;transport=UDP"
#: Two record-routing proxies, as they appear in the 2xx: the one nearest
#: the phone first, the provider's edge (our outbound proxy) last.
RECORD_ROUTE = "<sip:127.0.0.1:5072;lr>, <sip:127.0.0.1:5070;lr;ftag=abc>"


def withRecordRoute(response: str, recordRoute: str) -> str:
    """C{response} with a C{Record-Route} header after its Via."""
    head, _, rest = response.partition("\r\nFrom: ")
    return f"{head}\r\nRecord-Route: {recordRoute}\r\nFrom: {rest}"


def routesOf(message: str) -> list[str]:
    """
    Every Route value of C{message}, in order, one per URI, its URI
    parameters sorted (sippy may write them in another order).
    """
    head = message.split("\r\n\r\n", 1)[0]
    values = []
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "route":
            for route in value.split(","):
                uri, *params = route.strip().strip("<>").split(";")
                values.append("<" + ";".join([uri, *sorted(params)]) + ">")
    return values


class RouteSetTests(SynchronousTestCase):
    """
    A leg whose INVITE goes to an outbound proxy (the external line's
    provider): in-dialog requests follow the dialog's route set when the 2xx
    has Record-Route, and still go to the proxy when it has none.
    """

    def setUp(self) -> None:
        self.clock, self.stack = startStack(self)
        self.listener = RecordingListener()
        self.far = FarEnd()
        self.offer = SdpSession("127.0.0.1").offer("127.0.0.1", 40000)
        route = Route(DOMAIN, "5551000", "provider", outboundProxy=PROXY)
        self.leg = self.stack.dial(
            "answer1", route, self.offer, self.listener, 60, "t/leg1"
        )
        self.invite = self.sent("INVITE")[0]

    def sent(self, method: str):
        return [s for s in self.clock.sent if s.method == method]

    def answer(self, recordRoute: str | None) -> None:
        ok = self.far.response(self.invite.data, 200, "OK", farSdp())
        if recordRoute is not None:
            ok = withRecordRoute(ok, recordRoute)
        self.clock.deliver(self.far.response(self.invite.data, 180, "Ringing"))
        self.clock.deliver(ok)
        self.clock.settle()
        self.assertEqual(self.leg.state, "answered")

    def reinvite(self):
        self.leg.reInvite(SdpSession("127.0.0.1").offer("127.0.0.1", 41000))
        return self.sent("INVITE")[-1]

    def assertFollowsRouteSet(self, request) -> None:
        """
        RFC 3261 12.2.1.1 with a loose first route: the R-URI is the remote
        target (the phone's Contact), the Route headers are the route set
        (the Record-Route reversed, parameters kept), and the request goes to
        the first route's address.
        """
        self.assertEqual(
            request.firstLine, f"{request.method} {CONTACT} SIP/2.0", request.data
        )
        self.assertEqual(
            routesOf(request.data),
            ["<sip:127.0.0.1:5070;ftag=abc;lr>", "<sip:127.0.0.1:5072;lr>"],
            request.data,
        )
        self.assertEqual(request.addr, PROXY)

    def test_inviteGoesToProxy(self) -> None:
        """
        The INVITE itself goes to the outbound proxy, R-URI at the
        provider's domain, without Route headers.
        """
        self.assertEqual(self.invite.addr, PROXY)
        self.assertEqual(
            self.invite.firstLine, "INVITE sip:answer1@127.0.0.1:5062 SIP/2.0"
        )
        self.assertEqual(routesOf(self.invite.data), [])

    def test_ackReinviteByeFollowRouteSet(self) -> None:
        """
        After a 2xx with a loose Record-Route set, the ACK, a re-INVITE, the
        ACK of its 2xx (which has no Record-Route: the route set is the
        dialog's, RFC 3261 12.2.1.1) and the BYE all carry the phone's
        Contact as R-URI and the route set as Route headers, and go to the
        first route; none names the proxy in its R-URI (the strict-router
        form sippy writes when an outbound proxy is set).
        """
        self.answer(RECORD_ROUTE)
        (ack,) = self.sent("ACK")
        self.assertFollowsRouteSet(ack)
        reinvite = self.reinvite()
        self.assertFollowsRouteSet(reinvite)
        self.clock.deliver(
            self.far.response(reinvite.data, 200, "OK", farSdp(version=2))
        )
        self.clock.settle()
        _, reinviteAck = self.sent("ACK")
        self.assertFollowsRouteSet(reinviteAck)
        self.assertEqual(
            headerOf(reinviteAck.data, "cseq").split()[0],
            headerOf(reinvite.data, "cseq").split()[0],
        )
        self.leg.hangUp()
        (bye,) = self.sent("BYE")
        self.assertFollowsRouteSet(bye)
        self.assertEqual(headerOf(bye.data, "call-id"), headerOf(ack.data, "call-id"))

    def test_firstRouteElsewhere(self) -> None:
        """
        When the route set's first hop is not the outbound proxy (the
        provider record-routes another address of its own), in-dialog
        requests go to that hop, not to the configured proxy.
        """
        self.answer("<sip:127.0.0.1:5080;lr>")
        reinvite = self.reinvite()
        self.assertEqual(reinvite.firstLine, f"INVITE {CONTACT} SIP/2.0")
        self.assertEqual(routesOf(reinvite.data), ["<sip:127.0.0.1:5080;lr>"])
        self.assertEqual(reinvite.addr, ("127.0.0.1", 5080))

    def test_noRecordRouteKeepsProxy(self) -> None:
        """
        Without Record-Route the dialog has no route set: in-dialog requests
        still go to the outbound proxy (the provider relays them by R-URI),
        with the phone's Contact as R-URI and no Route header.
        """
        self.answer(None)
        for request in (self.sent("ACK")[0], self.reinvite()):
            self.assertEqual(request.firstLine, f"{request.method} {CONTACT} SIP/2.0")
            self.assertEqual(routesOf(request.data), [])
        self.assertEqual(self.sent("INVITE")[-1].addr, PROXY)
        self.leg.hangUp()
        (bye,) = self.sent("BYE")
        self.assertEqual(bye.addr, PROXY)
        self.assertEqual(bye.firstLine, f"BYE {CONTACT} SIP/2.0")

    def test_strictFirstRoute(self) -> None:
        """
        A first route without C{lr} (a strict router, RFC 2543): the R-URI
        is that route, the Route headers the rest of the set then the
        Contact, and the request goes to the R-URI's address.
        """
        self.answer("<sip:127.0.0.1:5074>")
        reinvite = self.reinvite()
        self.assertEqual(reinvite.firstLine, "INVITE sip:127.0.0.1:5074 SIP/2.0")
        self.assertEqual(routesOf(reinvite.data), [f"<{CONTACT}>"])
        self.assertEqual(reinvite.addr, ("127.0.0.1", 5074))

    def test_byeAfterCancelFollowsRouteSet(self) -> None:
        """
        A 2xx crossing our CANCEL: the leg is ended with BYE, and that BYE
        follows the route set of the 2xx too.
        """
        self.clock.deliver(self.far.response(self.invite.data, 180, "Ringing"))
        self.clock.settle()
        self.leg.hangUp()
        self.assertEqual(len(self.sent("CANCEL")), 1)
        ok = self.far.response(self.invite.data, 200, "OK", farSdp())
        self.clock.deliver(withRecordRoute(ok, RECORD_ROUTE))
        self.clock.settle()
        (bye,) = self.sent("BYE")
        self.assertFollowsRouteSet(bye)

    def test_noRecordRouteAckGoesToProxy(self) -> None:
        """
        Without Record-Route the ACK of the 2xx, and the ACK of a
        re-INVITE's 2xx, go to the outbound proxy like the re-INVITE and the
        BYE, with the phone's Contact as R-URI and no Route header; none of
        them goes straight to the Contact around the provider.
        """
        self.answer(None)
        reinvite = self.reinvite()
        self.clock.deliver(
            self.far.response(reinvite.data, 200, "OK", farSdp(version=2))
        )
        self.clock.settle()
        acks = self.sent("ACK")
        self.assertEqual(len(acks), 2)
        for ack in acks:
            self.assertEqual(ack.addr, PROXY, ack.data)
            self.assertEqual(ack.firstLine, f"ACK {CONTACT} SIP/2.0")
            self.assertEqual(routesOf(ack.data), [])
        self.assertEqual(
            [headerOf(ack.data, "cseq") for ack in acks],
            [
                f"{headerOf(self.invite.data, 'cseq').split()[0]} ACK",
                f"{headerOf(reinvite.data, 'cseq').split()[0]} ACK",
            ],
        )
        self.assertTrue(
            all(";tag=far1" in headerOf(ack.data, "to") for ack in acks), acks
        )

    def test_retransmitted2xxAckedThroughProxy(self) -> None:
        """
        A retransmission of the 2xx (our ACK was lost) is answered with the
        same ACK, to the outbound proxy again.
        """
        self.answer(None)
        ok = self.far.response(self.invite.data, 200, "OK", farSdp())
        self.clock.deliver(ok)
        self.clock.settle()
        acks = self.sent("ACK")
        self.assertEqual(len(acks), 2)
        self.assertEqual([ack.addr for ack in acks], [PROXY, PROXY])
        self.assertEqual(acks[0].data, acks[1].data)


class ParkedRouteSetTests(RouteSetTests):
    """
    The same requests after the answered leg was parked (L{PARK_AFTER}
    seconds of quiet let its sippy UA go): woken, the dialog keeps its route
    set, its remote target and whether it goes through the proxy.
    """

    def answer(self, recordRoute: str | None) -> None:
        super().answer(recordRoute)
        sent = len(self.clock.sent)
        runUntil(self.clock, self.clock.seconds() + PARK_AFTER + 1)
        self.assertIsNone(self.leg._ua)
        self.assertEqual(len(self.clock.sent), sent)
