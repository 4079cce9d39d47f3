"""
Tests for L{callback_tw.sip.stack}: routing of legs and the policy for
requests nobody asked for.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from callback_tw.sip.routing import CallerIds, Route, Router, callerIds, defaultRoute
from callback_tw.sip.sdp import SdpSession
from tests.confighelpers import ConfigTestMixin
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


#: An external line: R-URI at the provider's domain, sent to its proxy.
LINE = Route(
    ("sip.provider.example", 5060),
    "4930123",
    "external line",
    credentials=("user", "pw"),
    outboundProxy=("127.0.0.1", 5080),
    fromDomain="sip.provider.example",
    keepsFrom=True,
)


class CallerIdTests(SynchronousTestCase):
    """
    What user2's INVITE shows when the callback names user1 as its caller
    ([callback] user2_caller, assert_identity; [external_line] from_user).
    """

    def setUp(self) -> None:
        self.clock, self.stack = startStack(self)
        self.listener = RecordingListener()
        self.offer = SdpSession("127.0.0.1").offer("127.0.0.1", 40000)
        self.peer = Route(("127.0.0.1", 5070), "1000", "peer pss")

    def invite(self, route: Route, ids: CallerIds, caller: str | None = "2001"):
        router = Router(self.stack, route, 60, callerIds=ids)
        router.dial("555", self.offer, self.listener, "t/leg2", caller=caller)
        (invite,) = [s for s in self.clock.sent if s.method == "INVITE"]
        return invite

    def test_defaultIgnoresCaller(self) -> None:
        """
        user2_caller = default: user2's INVITE is From the default caller,
        with no P-Asserted-Identity, whatever the callback's caller.
        """
        invite = self.invite(self.peer, CallerIds(assertIdentity=True))
        self.assertIn("<sip:1000@127.0.0.1>", invite.header("from"))
        self.assertIsNone(invite.header("p-asserted-identity"))

    def test_user1AsFrom(self) -> None:
        """
        user2_caller = user1: the From user is user1's number; without
        assert_identity there is no P-Asserted-Identity.
        """
        invite = self.invite(self.peer, CallerIds(showCaller=True))
        self.assertIn("<sip:2001@127.0.0.1>", invite.header("from"))
        self.assertIsNone(invite.header("p-asserted-identity"))

    def test_user1Asserted(self) -> None:
        """
        user2_caller = user1 and assert_identity = yes: From user and
        P-Asserted-Identity both name user1, at our domain.
        """
        invite = self.invite(self.peer, CallerIds(True, True))
        self.assertIn("<sip:2001@127.0.0.1>", invite.header("from"))
        self.assertEqual(invite.header("p-asserted-identity"), "<sip:2001@127.0.0.1>")

    def test_noCallerNoHeader(self) -> None:
        """A leg dialled without a caller (user1's) keeps its route's From."""
        invite = self.invite(self.peer, CallerIds(True, True), caller=None)
        self.assertIn("<sip:1000@127.0.0.1>", invite.header("from"))
        self.assertIsNone(invite.header("p-asserted-identity"))

    def test_lineKeepsNumberAssertsCaller(self) -> None:
        """
        External line with from_user = line: the From stays the line's
        number at the provider's domain; P-Asserted-Identity carries user1
        at that domain.
        """
        invite = self.invite(LINE, CallerIds(True, True))
        self.assertIn("<sip:4930123@sip.provider.example>", invite.header("from"))
        self.assertEqual(
            invite.header("p-asserted-identity"), "<sip:2001@sip.provider.example>"
        )

    def test_lineFromCaller(self) -> None:
        """
        External line with from_user = caller: the From user is user1's
        number at the provider's domain.
        """
        line = Route(**{**LINE.__dict__, "keepsFrom": False})
        invite = self.invite(line, CallerIds(True, False))
        self.assertIn("<sip:2001@sip.provider.example>", invite.header("from"))
        self.assertIsNone(invite.header("p-asserted-identity"))

    def test_assertedAfterChallenge(self) -> None:
        """
        The provider's 407: the INVITE sent again with credentials still
        carries the P-Asserted-Identity.
        """
        first = self.invite(LINE, CallerIds(True, True))
        far = FarEnd()
        challenge = far.response(first.data, 407, "Proxy Authentication Required")
        challenge = challenge.replace(
            "Content-Length",
            'Proxy-Authenticate: Digest realm="sip.provider.example",'
            ' nonce="n1", qop="auth"\r\nContent-Length',
        )
        self.clock.deliver(challenge, ("127.0.0.1", 5080))
        self.clock.settle()
        invites = [s for s in self.clock.sent if s.method == "INVITE"]
        self.assertEqual(len(invites), 2)
        self.assertIsNotNone(invites[1].header("proxy-authorization"))
        self.assertEqual(
            invites[1].header("p-asserted-identity"),
            "<sip:2001@sip.provider.example>",
        )


class CallerIdConfigTests(ConfigTestMixin, SynchronousTestCase):
    """The caller ID keys of the configuration, read into the routing."""

    LINE = {
        "registrar": "127.0.0.1:5062",
        "username": "line1",
        "password": "pw1",
        "number": "5551000",
    }

    def test_defaults(self) -> None:
        """By default user2 shows no caller and nothing is asserted."""
        config = self.load()
        self.assertEqual(callerIds(config), CallerIds(False, False))

    def test_user1Asserted(self) -> None:
        """user2_caller = user1 and assert_identity = yes, in any case."""
        config = self.load(
            {"callback": {"user2_caller": "User1", "assert_identity": "yes"}}
        )
        self.assertEqual(callerIds(config), CallerIds(True, True))

    def test_badUser2Caller(self) -> None:
        """Any other word is refused, naming both choices."""
        self.assertConfigError(
            {"callback": {"user2_caller": "user2"}},
            "must be default or user1, got 'user2'",
        )

    def test_lineFromUser(self) -> None:
        """
        The line keeps its number as From unless from_user = caller; the
        peer route never keeps it.
        """
        line = {"callback": {"external_line_mode": "yes"}, "external_line": self.LINE}
        self.assertTrue(defaultRoute(self.load(line)).keepsFrom)
        line["external_line"] = {**self.LINE, "from_user": "caller"}
        self.assertFalse(defaultRoute(self.load(line)).keepsFrom)
        self.assertFalse(defaultRoute(self.load()).keepsFrom)
        self.assertConfigError(
            {**line, "external_line": {**self.LINE, "from_user": "user1"}},
            "must be line or caller, got 'user1'",
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
