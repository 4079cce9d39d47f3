"""
Tests for L{callback_tw.sip.stack}: routing of legs and the policy for
requests nobody asked for.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from callback_tw.sip.routing import Route, Router
from callback_tw.sip.sdp import SdpSession
from tests.siphelpers import (
    FAR_ROUTE,
    FarEnd,
    RecordingListener,
    bodyOf,
    farSdp,
    headerOf,
    startStack,
)


class Locator:
    def __init__(self, contacts: dict[str, tuple[str, int] | None]) -> None:
        self.contacts = contacts

    def isLocal(self, user: str) -> bool:
        return user in self.contacts

    def contactFor(self, user: str):
        return self.contacts[user]


class RouterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock, self.stack = startStack(self)
        self.listener = RecordingListener()
        self.offer = SdpSession("127.0.0.1").offer("127.0.0.1", 40000)
        peer = Route(("127.0.0.1", 5070), "1000", "peer pss")
        locator = Locator({"100": ("127.0.0.1", 5071), "101": None})
        self.router = Router(self.stack, peer, 60, locator)

    def invites(self):
        return [s for s in self.clock.sent if s.method == "INVITE"]

    def test_peer(self) -> None:
        """
        A user who is not local goes to the default route, From the default
        caller.
        """
        self.router.dial("555", self.offer, self.listener, "t/leg1")
        (invite,) = self.invites()
        self.assertEqual(invite.firstLine, "INVITE sip:555@127.0.0.1:5070 SIP/2.0")
        self.assertEqual(invite.addr, ("127.0.0.1", 5070))
        self.assertIn("<sip:1000@127.0.0.1>", invite.header("from"))

    def test_localRegistered(self) -> None:
        """A registered local user is called at the contact it registered."""
        self.router.dial("100", self.offer, self.listener, "t/leg1")
        (invite,) = self.invites()
        self.assertEqual(invite.firstLine, "INVITE sip:100@127.0.0.1:5071 SIP/2.0")
        self.assertEqual(invite.addr, ("127.0.0.1", 5071))
        self.assertEqual(bodyOf(invite.data), self.offer)

    def test_localNotRegistered(self) -> None:
        """A local user with no binding fails at once with 480; nothing is sent."""
        leg = self.router.dial("101", self.offer, self.listener, "t/leg1")
        self.assertEqual(self.listener.events, [])
        self.clock.advance(0)
        ((kind, end),) = self.listener.events
        self.assertEqual((kind, end.code, end.answered), ("ended", 480, False))
        self.assertEqual(leg.state, "ended")
        self.assertEqual(self.invites(), [])

    def test_localNotRegisteredHungUp(self) -> None:
        """
        Hanging up a leg to a local user with no binding before it failed:
        the owner hears nothing, and no delayed call is left behind.
        """
        leg = self.router.dial("101", self.offer, self.listener, "t/leg1")
        leg.hangUp()
        pending = [c.func.__name__ for c in self.clock.getDelayedCalls()]
        self.assertNotIn("_fail", pending)
        self.clock.advance(0)
        self.assertEqual(self.listener.events, [])
        self.assertEqual(leg.state, "ended")

    def test_providerRoute(self) -> None:
        """
        An external-line route: R-URI at the provider's domain, sent to its
        proxy, From the line's number at the provider's domain.
        """
        line = Route(
            ("sip.provider.example", 5060),
            "4930123",
            "external line",
            credentials=("user", "pw"),
            outboundProxy=("127.0.0.1", 5080),
            fromDomain="sip.provider.example",
        )
        Router(self.stack, line, 60).dial("555", self.offer, self.listener, "t/leg1")
        (invite,) = self.invites()
        self.assertEqual(
            invite.firstLine, "INVITE sip:555@sip.provider.example SIP/2.0"
        )
        self.assertEqual(invite.addr, ("127.0.0.1", 5080))
        self.assertIn(
            "<sip:4930123@sip.provider.example>", headerOf(invite.data, "from")
        )


class PolicyTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock, self.stack = startStack(self)

    def request(self, method: str, toTag: str = "") -> str:
        return (
            f"{method} sip:cb@127.0.0.1:{self.stack.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-{method}{toTag}\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:x@127.0.0.1:5099>;tag=t1\r\n"
            f"To: <sip:cb@127.0.0.1>{';tag=' + toTag if toTag else ''}\r\n"
            f"Call-ID: {method}{toTag}@127.0.0.1\r\n"
            f"CSeq: 1 {method}\r\n"
            "Contact: <sip:x@127.0.0.1:5099>\r\n"
            "Content-Length: 0\r\n\r\n"
        )

    def answer(self, method: str, toTag: str = "") -> str:
        self.clock.deliver(self.request(method, toTag))
        return self.clock.sent[-1].firstLine

    def test_policy(self) -> None:
        """
        An INVITE nobody asked for gets 403 and starts nothing; REGISTER
        without a registrar too; OPTIONS 200; an unknown dialog 481.
        """
        self.assertEqual(self.answer("INVITE"), "SIP/2.0 403 Forbidden")
        self.assertEqual(self.answer("REGISTER"), "SIP/2.0 403 Forbidden")
        self.assertEqual(self.answer("OPTIONS"), "SIP/2.0 200 OK")
        self.assertEqual(
            self.answer("BYE", toTag="zz"),
            "SIP/2.0 481 Call/Transaction Does Not Exist",
        )

    def test_garbage(self) -> None:
        """Bytes that are not SIP are dropped and logged; the stack keeps working."""
        self.clock.deliver("x" * 40)
        self.clock.deliver("INVITE nonsense\r\n\r\n" + "y" * 40)
        self.flushLoggedErrors()
        self.assertEqual(self.answer("OPTIONS"), "SIP/2.0 200 OK")


class SettleTests(SynchronousTestCase):
    """SipStack.settle: waiting, bounded, for our requests to be answered."""

    def setUp(self) -> None:
        self.clock, self.stack = startStack(self)
        offer = SdpSession("127.0.0.1").offer("127.0.0.1", 40000)
        self.leg = self.stack.dial(
            "100", FAR_ROUTE, offer, RecordingListener(), 60, "t/leg1"
        )
        self.invite = self.clock.sent[0].data
        self.far = FarEnd()
        self.clock.deliver(self.far.response(self.invite, 200, "OK", farSdp()))
        self.clock.settle()

    def test_answeredBye(self) -> None:
        """
        After a BYE the stack is settled as soon as the BYE is answered;
        a lost BYE is retransmitted meanwhile.
        """
        self.leg.hangUp()
        self.assertEqual(self.stack.pendingTransactions, 1)
        d = self.stack.settle(5)
        self.clock.advance(0.5)
        byes = [s for s in self.clock.sent if s.method == "BYE"]
        self.assertEqual(len(byes), 2)
        self.assertNoResult(d)
        self.clock.deliver(self.far.response(byes[-1].data, 200, "OK"))
        self.clock.advance(0.05)
        self.assertIs(self.successResultOf(d), True)

    def test_unansweredBounded(self) -> None:
        """A far end that never answers is waited for C{timeout} seconds only."""
        self.leg.hangUp()
        d = self.stack.settle(2)
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        self.assertIs(self.successResultOf(d), False)
