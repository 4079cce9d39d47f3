"""
Tests for L{callback_tw.sip.registrar}: the server as registrar of its
local users, seen on the wire (REGISTER in, responses out) through a real
L{SipStack} on a fake reactor.

Digest responses are computed here by hand with hashlib (RFC 2617), not with
the code under test.
"""

from __future__ import annotations

import hashlib
import itertools
import re

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from callback_tw.sip.registrar import Registrar
from callback_tw.sip.routing import Route, Router
from callback_tw.sip.sdp import SdpSession
from tests.siphelpers import RecordingListener, Sent, startStack

REALM = "127.0.0.1"
USERS = {"100": "secret100", "101": "secret101"}
PHONE = ("127.0.0.1", 5099)


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def challengeParams(header: str) -> dict[str, str]:
    """The parameters of a WWW-Authenticate value, quotes removed."""
    scheme, _, rest = header.partition(" ")
    assert scheme == "Digest", header
    return {
        k.lower(): v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|[^,\s]*)', rest)
    }


def authorization(
    user: str,
    password: str,
    nonce: str,
    uri: str = f"sip:{REALM}",
    realm: str = REALM,
    nc: str = "00000001",
    cnonce: str = "0a4f113b",
    qop: str | None = "auth",
) -> str:
    """An Authorization value, the way a phone computes it (RFC 2617 3.2.2)."""
    ha1 = md5(f"{user}:{realm}:{password}")
    ha2 = md5(f"REGISTER:{uri}")
    if qop:
        response = md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
        extra = f', qop={qop}, nc={nc}, cnonce="{cnonce}"'
    else:
        response = md5(f"{ha1}:{nonce}:{ha2}")
        extra = ""
    return (
        f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm=MD5{extra}'
    )


class RegistrarTestMixin:
    """A SIP stack on a fake reactor with a registrar for USERS."""

    #: more keywords for the L{Registrar}.
    registrarOptions: dict = {}

    def setUp(self) -> None:
        self.clock, self.stack = startStack(self)
        self.registrar = Registrar(
            USERS, REALM, reactor=self.clock, **self.registrarOptions
        )
        self.stack.registrar = self.registrar
        self._branches = itertools.count(1)
        self.callId = "reg-1@127.0.0.1"
        self.cseq = 0

    def register(
        self,
        user: str = "100",
        contacts: list[str] | None = None,
        expires: int | None = None,
        auth: str | None = None,
        extra: list[str] | None = None,
        callId: str | None = None,
        cseq: int | None = None,
        source: tuple[str, int] = PHONE,
    ) -> Sent:
        """Deliver one REGISTER; return the server's answer to it."""
        self.cseq += 1
        lines = [
            f"REGISTER sip:{REALM} SIP/2.0",
            f"Via: SIP/2.0/UDP {source[0]}:{source[1]}"
            f";branch=z9hG4bK-reg{next(self._branches)}",
            "Max-Forwards: 70",
            f"From: <sip:{user}@{REALM}>;tag=ph{user}",
            f"To: <sip:{user}@{REALM}>",
            f"Call-ID: {callId or self.callId}",
            f"CSeq: {cseq if cseq is not None else self.cseq} REGISTER",
        ]
        lines += [
            f"Contact: {c}"
            for c in (
                contacts if contacts is not None else [f"<sip:{user}@127.0.0.1:5099>"]
            )
        ]
        if expires is not None:
            lines.append(f"Expires: {expires}")
        if auth is not None:
            lines.append(f"Authorization: {auth}")
        lines += extra or []
        lines.append("Content-Length: 0")
        before = len(self.clock.sent)
        self.clock.deliver("\r\n".join(lines) + "\r\n\r\n", source)
        sent = self.clock.sent[before:]
        self.assertEqual(len(sent), 1, [s.data for s in sent])
        self.assertEqual(sent[0].addr, source)
        return sent[0]

    def nonce(self, user: str = "100") -> str:
        answer = self.register(user)
        self.assertEqual(answer.firstLine, "SIP/2.0 401 Unauthorized")
        return challengeParams(answer.header("www-authenticate"))["nonce"]

    def registerWithAuth(
        self, user: str = "100", password: str | None = None, **kwargs
    ) -> Sent:
        """REGISTER, 401, REGISTER with credentials; return the second answer."""
        nonce = self.nonce(user)
        return self.register(
            user, auth=authorization(user, password or USERS[user], nonce), **kwargs
        )

    def contacts(self, answer: Sent) -> list[str]:
        head = answer.data.split("\r\n\r\n", 1)[0]
        return [
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith(("contact:", "m:"))
        ]


class DigestTests(RegistrarTestMixin, SynchronousTestCase):
    def test_challenge(self) -> None:
        """
        A REGISTER without credentials gets 401 with a Digest MD5 qop=auth
        challenge for the realm, and binds nothing.
        """
        answer = self.register()
        self.assertEqual(answer.firstLine, "SIP/2.0 401 Unauthorized")
        params = challengeParams(answer.header("www-authenticate"))
        self.assertEqual(params["realm"], REALM)
        self.assertEqual(params["algorithm"], "MD5")
        self.assertEqual(params["qop"], "auth")
        self.assertNotIn("stale", params)
        self.assertTrue(params["nonce"])
        self.assertIsNone(self.registrar.contactFor("100"))

    def test_correctDigest(self) -> None:
        """
        The right password answers the challenge: 200 listing the contact
        with its expiry, and legs to the user now go to that contact.
        """
        answer = self.registerWithAuth("100", contacts=["<sip:100@127.0.0.1:5071>"])
        self.assertEqual(answer.firstLine, "SIP/2.0 200 OK")
        self.assertEqual(
            self.contacts(answer), ["<sip:100@127.0.0.1:5071>;expires=3600"]
        )
        self.assertEqual(self.registrar.contactFor("100"), ("127.0.0.1", 5071))
        self.assertIsNone(self.registrar.contactFor("101"))

    def test_withoutQop(self) -> None:
        """An RFC 2069 answer (no qop) is accepted too."""
        nonce = self.nonce()
        answer = self.register(auth=authorization("100", "secret100", nonce, qop=None))
        self.assertEqual(answer.firstLine, "SIP/2.0 200 OK")

    def test_wrongPassword(self) -> None:
        """
        A wrong password gets 403 after the challenge, and no binding; the
        failure is logged, without the password.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        answer = self.registerWithAuth("100", password="guess")
        self.assertEqual(answer.firstLine, "SIP/2.0 403 Forbidden")
        self.assertIsNone(answer.header("www-authenticate"))
        self.assertIsNone(self.registrar.contactFor("100"))
        from twisted.logger import formatEvent

        logged = "\n".join(formatEvent(e) for e in events)
        self.assertIn("REGISTER 100 from 127.0.0.1:5099 refused", logged)
        self.assertNotIn("guess", logged)
        self.assertNotIn("secret100", logged)

    def test_unknownUserSameAnswers(self) -> None:
        """
        An unknown number gets the same 401 challenge as a known one, then
        the same 403 as a wrong password: nothing tells which numbers exist.
        """
        known = self.register("100")
        unknown = self.register("555")
        self.assertEqual(unknown.firstLine, known.firstLine)
        k = challengeParams(known.header("www-authenticate"))
        u = challengeParams(unknown.header("www-authenticate"))
        self.assertEqual(sorted(k), sorted(u))
        self.assertEqual((k["realm"], k["qop"]), (u["realm"], u["qop"]))
        answer = self.register("555", auth=authorization("555", "anything", u["nonce"]))
        self.assertEqual(answer.firstLine, "SIP/2.0 403 Forbidden")
        wrong = self.registerWithAuth("100", password="anything")
        self.assertEqual(wrong.firstLine, answer.firstLine)
        self.assertFalse(self.registrar.isLocal("555"))

    def test_usernameMustMatchTo(self) -> None:
        """101's right password does not register 100 (digest user = To user)."""
        nonce = self.nonce("100")
        answer = self.register("100", auth=authorization("101", "secret101", nonce))
        self.assertEqual(answer.firstLine, "SIP/2.0 403 Forbidden")
        self.assertIsNone(self.registrar.contactFor("100"))

    def test_staleNonce(self) -> None:
        """
        A correct answer to a nonce older than 5 minutes gets a new 401 with
        stale=true; answering the new nonce registers.
        """
        nonce = self.nonce()
        self.clock.advance(301)
        answer = self.register(auth=authorization("100", "secret100", nonce))
        self.assertEqual(answer.firstLine, "SIP/2.0 401 Unauthorized")
        params = challengeParams(answer.header("www-authenticate"))
        self.assertEqual(params["stale"], "true")
        self.assertNotEqual(params["nonce"], nonce)
        again = self.register(auth=authorization("100", "secret100", params["nonce"]))
        self.assertEqual(again.firstLine, "SIP/2.0 200 OK")

    def test_nonceStillFresh(self) -> None:
        """Within 5 minutes a nonce may be reused with a higher nonce count."""
        nonce = self.nonce()
        self.assertEqual(
            self.register(auth=authorization("100", "secret100", nonce)).firstLine,
            "SIP/2.0 200 OK",
        )
        self.clock.advance(299)
        answer = self.register(
            auth=authorization("100", "secret100", nonce, nc="00000002")
        )
        self.assertEqual(answer.firstLine, "SIP/2.0 200 OK")

    def test_replayedCredentials(self) -> None:
        """
        The same Authorization sent again (same nonce and nc, here with
        another Contact) is not accepted: 401 stale=true, binding unchanged.
        """
        nonce = self.nonce()
        auth = authorization("100", "secret100", nonce)
        self.register(auth=auth, contacts=["<sip:100@127.0.0.1:5071>"])
        answer = self.register(auth=auth, contacts=["<sip:100@127.0.0.1:6666>"])
        self.assertEqual(answer.firstLine, "SIP/2.0 401 Unauthorized")
        self.assertEqual(
            challengeParams(answer.header("www-authenticate"))["stale"], "true"
        )
        self.assertEqual(self.registrar.contactFor("100"), ("127.0.0.1", 5071))

    def test_forgedNonce(self) -> None:
        """A nonce this server never issued does not authenticate: 403."""
        answer = self.register(
            auth=authorization(
                "100", "secret100", "12345.abcd.0123456789abcdef0123456789abcdef"
            )
        )
        self.assertEqual(answer.firstLine, "SIP/2.0 403 Forbidden")

    def test_otherRealm(self) -> None:
        """Credentials for another realm are ignored: the phone is challenged."""
        nonce = self.nonce()
        answer = self.register(
            auth=authorization("100", "secret100", nonce, realm="elsewhere")
        )
        self.assertEqual(answer.firstLine, "SIP/2.0 401 Unauthorized")


class BindingTests(RegistrarTestMixin, SynchronousTestCase):
    def test_expiresHeaderAndParam(self) -> None:
        """
        A contact's expires parameter wins over the Expires header, which
        wins over the default; above the maximum it is cut to 7200 s.
        """
        answer = self.registerWithAuth(
            contacts=[
                "<sip:100@127.0.0.1:5071>;expires=120",
                "<sip:100@127.0.0.1:5072>",
                "<sip:100@127.0.0.1:5073>;expires=99999",
            ],
            expires=600,
        )
        self.assertEqual(answer.firstLine, "SIP/2.0 200 OK")
        self.assertEqual(
            sorted(self.contacts(answer)),
            [
                "<sip:100@127.0.0.1:5071>;expires=120",
                "<sip:100@127.0.0.1:5072>;expires=600",
                "<sip:100@127.0.0.1:5073>;expires=7200",
            ],
        )

    def test_intervalTooBrief(self) -> None:
        """An expiry below 60 s gets 423 with Min-Expires: 60 and binds nothing."""
        answer = self.registerWithAuth(expires=30)
        self.assertEqual(answer.firstLine, "SIP/2.0 423 Interval Too Brief")
        self.assertEqual(answer.header("min-expires"), "60")
        self.assertIsNone(self.registrar.contactFor("100"))

    def test_expiry(self) -> None:
        """
        A binding lapses at its expiry: contactFor is None after it, and no
        timer is left behind.
        """
        self.registerWithAuth(contacts=["<sip:100@127.0.0.1:5071>"], expires=60)
        self.clock.advance(59.9)
        self.assertEqual(self.registrar.contactFor("100"), ("127.0.0.1", 5071))
        self.clock.advance(0.2)
        self.assertIsNone(self.registrar.contactFor("100"))
        self.assertEqual(self.registrar.bindings("100"), [])

    def test_remainingExpires(self) -> None:
        """
        A query (REGISTER without Contact) lists the bindings with the
        seconds they have left.
        """
        self.registerWithAuth(contacts=["<sip:100@127.0.0.1:5071>"], expires=3600)
        self.clock.advance(1000)
        answer = self.registerWithAuth(contacts=[])
        self.assertEqual(answer.firstLine, "SIP/2.0 200 OK")
        self.assertEqual(
            self.contacts(answer), ["<sip:100@127.0.0.1:5071>;expires=2600"]
        )

    def test_refresh(self) -> None:
        """A refresh of a contact replaces its expiry; it adds no binding."""
        self.registerWithAuth(contacts=["<sip:100@127.0.0.1:5071>"], expires=120)
        self.clock.advance(100)
        answer = self.registerWithAuth(
            contacts=["<sip:100@127.0.0.1:5071>"], expires=120
        )
        self.assertEqual(
            self.contacts(answer), ["<sip:100@127.0.0.1:5071>;expires=120"]
        )
        self.clock.advance(100)
        self.assertEqual(self.registrar.contactFor("100"), ("127.0.0.1", 5071))

    def test_mostRecentContact(self) -> None:
        """With two live contacts, legs go to the one registered last."""
        self.registerWithAuth(contacts=["<sip:100@127.0.0.1:5071>"], callId="a@x")
        self.clock.advance(1)
        self.registerWithAuth(contacts=["<sip:100@127.0.0.1:5072>"], callId="b@x")
        self.assertEqual(self.registrar.contactFor("100"), ("127.0.0.1", 5072))

    def test_removeOne(self) -> None:
        """expires=0 on a contact removes that binding only."""
        self.registerWithAuth(
            contacts=["<sip:100@127.0.0.1:5071>", "<sip:100@127.0.0.1:5072>"]
        )
        answer = self.registerWithAuth(contacts=["<sip:100@127.0.0.1:5072>;expires=0"])
        self.assertEqual(
            self.contacts(answer), ["<sip:100@127.0.0.1:5071>;expires=3600"]
        )
        self.assertEqual(self.registrar.contactFor("100"), ("127.0.0.1", 5071))

    def test_removeAll(self) -> None:
        """Contact: * with Expires: 0 removes every binding; the 200 lists none."""
        self.registerWithAuth(
            contacts=["<sip:100@127.0.0.1:5071>", "<sip:100@127.0.0.1:5072>"]
        )
        answer = self.registerWithAuth(contacts=["*"], expires=0)
        self.assertEqual(answer.firstLine, "SIP/2.0 200 OK")
        self.assertEqual(self.contacts(answer), [])
        self.assertIsNone(self.registrar.contactFor("100"))

    def test_starNeedsExpiresZero(self) -> None:
        """Contact: * without Expires: 0 is a bad request and removes nothing."""
        self.registerWithAuth(contacts=["<sip:100@127.0.0.1:5071>"])
        answer = self.registerWithAuth(contacts=["*"], expires=3600)
        self.assertEqual(answer.firstLine, "SIP/2.0 400 Bad Request")
        self.assertEqual(self.registrar.contactFor("100"), ("127.0.0.1", 5071))

    def test_outOfOrder(self) -> None:
        """
        A REGISTER of the same Call-ID with a CSeq not above the binding's
        is refused (RFC 3261 10.3 step 7): a late one cannot undo a newer one.
        """
        self.registerWithAuth(contacts=["<sip:100@127.0.0.1:5071>"], cseq=10)
        answer = self.registerWithAuth(
            contacts=["<sip:100@127.0.0.1:5071>;expires=0"], cseq=5
        )
        self.assertEqual(answer.firstLine, "SIP/2.0 400 Bad Request")
        self.assertEqual(self.registrar.contactFor("100"), ("127.0.0.1", 5071))

    def test_noPort(self) -> None:
        """A contact without a port is reached on 5060."""
        self.registerWithAuth(contacts=["<sip:100@127.0.0.2>"])
        self.assertEqual(self.registrar.contactFor("100"), ("127.0.0.2", 5060))

    def test_usersSeparate(self) -> None:
        """Each user has its own bindings; removing 100's leaves 101's."""
        self.registerWithAuth("100", contacts=["<sip:100@127.0.0.1:5071>"])
        self.registerWithAuth(
            "101", contacts=["<sip:101@127.0.0.1:5072>"], callId="other@x"
        )
        self.registerWithAuth("100", contacts=["*"], expires=0)
        self.assertIsNone(self.registrar.contactFor("100"))
        self.assertEqual(self.registrar.contactFor("101"), ("127.0.0.1", 5072))

    def test_isLocal(self) -> None:
        """Configured numbers are local, registered or not; others are not."""
        self.assertTrue(self.registrar.isLocal("100"))
        self.assertTrue(self.registrar.isLocal("101"))
        self.assertFalse(self.registrar.isLocal("102"))

    def test_numbersCaseInsensitive(self) -> None:
        """
        Numbers are case-insensitive, as in the INI file (which lower-cases
        keys): "Alice" registers as configured "alice" and is local as "ALICE".
        """
        self.registrar = Registrar({"alice": "pw"}, REALM, reactor=self.clock)
        self.stack.registrar = self.registrar
        nonce = self.nonce("Alice")
        answer = self.register("Alice", auth=authorization("Alice", "pw", nonce))
        self.assertEqual(answer.firstLine, "SIP/2.0 200 OK")
        self.assertTrue(self.registrar.isLocal("ALICE"))
        self.assertEqual(self.registrar.contactFor("alice"), ("127.0.0.1", 5099))

    def test_noTimers(self) -> None:
        """Bindings need no timer (expiry is lazy): a registration schedules none."""
        idle = len(self.clock.getDelayedCalls())  # the stack's own periodic clean-up
        self.registerWithAuth()
        self.clock.advance(33)  # past sippy's transaction clean-up (32 s)
        self.assertEqual(len(self.clock.getDelayedCalls()), idle)
        self.assertEqual(self.registrar.contactFor("100"), ("127.0.0.1", 5099))


class MalformedTests(RegistrarTestMixin, SynchronousTestCase):
    """
    Bad REGISTERs never crash the server: each gets an answer or is
    dropped, and the next good one works.
    """

    #: hundreds of broken credentials from one address are what the
    #: lock-out is for (tests.test_sip_security_registrar); here they test
    #: the parsing only.
    registrarOptions = {"maxFailures": 0}

    def assertStillWorks(self) -> None:
        self.assertEqual(
            self.registerWithAuth(
                contacts=["<sip:100@127.0.0.1:5071>"], callId="ok@x"
            ).firstLine,
            "SIP/2.0 200 OK",
        )

    def assertNoRegistrarErrors(self) -> None:
        """
        sippy may log what it cannot parse; the registrar answers what
        reaches it without an unexpected exception.
        """
        errors = self.flushLoggedErrors()
        ours = [e.getTraceback() for e in errors if "registrar.py" in e.getTraceback()]
        self.assertEqual(ours, [])

    def test_garbageDigest(self) -> None:
        """Credentials that are not name=value pairs get 400."""
        for garbage in [
            'Digest ,,,==,"',
            "Digest username",
            "Basic dXNlcjpwYXNz",
            'Digest realm="x", uri="a,b',
        ]:
            answer = self.register(auth=garbage)
            self.assertEqual(answer.firstLine, "SIP/2.0 400 Bad Request", garbage)
        self.assertStillWorks()

    def test_incompleteDigest(self) -> None:
        """Credentials for our realm without a response get 403."""
        nonce = self.nonce()
        answer = self.register(
            auth=f'Digest username="100", realm="{REALM}", nonce="{nonce}", '
            f'uri="sip:{REALM}"'
        )
        self.assertEqual(answer.firstLine, "SIP/2.0 403 Forbidden")
        self.assertStillWorks()

    def test_badExpires(self) -> None:
        """A non-numeric Expires header or expires parameter gets 400."""
        self.assertEqual(
            self.registerWithAuth(expires="soon").firstLine, "SIP/2.0 400 Bad Request"
        )
        answer = self.registerWithAuth(contacts=["<sip:100@127.0.0.1:5071>;expires=x"])
        self.assertEqual(answer.firstLine, "SIP/2.0 400 Bad Request")
        self.assertStillWorks()

    def test_badContact(self) -> None:
        """A Contact that is not a SIP URI gets 400."""
        for contact in ["<mailto:a@b>", "<sip:>", "<<<"]:
            answer = self.registerWithAuth(contacts=[contact])
            self.assertEqual(answer.firstLine, "SIP/2.0 400 Bad Request", contact)
        self.assertNoRegistrarErrors()
        self.assertStillWorks()

    def test_missingHeaders(self) -> None:
        """REGISTERs without Call-ID, CSeq or To never crash the server."""
        base = [
            f"REGISTER sip:{REALM} SIP/2.0",
            "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-bad{n}",
            "From: <sip:100@127.0.0.1>;tag=x",
            "To: <sip:100@127.0.0.1>",
            "Call-ID: bad{n}@x",
            "CSeq: 1 REGISTER",
        ]
        for n, skip in enumerate(base[1:], 1):
            lines = [line.format(n=n) for line in base if line != skip]
            self.clock.deliver(
                "\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n", PHONE
            )
        self.clock.deliver("REGISTER\r\n\r\n", PHONE)
        self.clock.deliver(
            "REGISTER sip:x SIP/2.0\r\nVia: nonsense\r\nTo: <>\r\n"
            "From: x\r\nCSeq: q\r\n\r\n",
            PHONE,
        )
        self.assertNoRegistrarErrors()
        self.assertStillWorks()

    def test_fuzz(self) -> None:
        """
        300 mutations of a good authenticated REGISTER (bytes replaced,
        lines dropped or cut, seeded): none raises out of the registrar,
        and the server still registers afterwards.
        """
        import random

        rng = random.Random(3261)
        nonce = self.nonce()
        good = (
            f"REGISTER sip:{REALM} SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-fz{n}\r\n"
            f"From: <sip:100@{REALM}>;tag=f\r\n"
            f"To: <sip:100@{REALM}>\r\n"
            "Call-ID: fuzz{n}@x\r\n"
            "CSeq: 7 REGISTER\r\n"
            "Contact: <sip:100@127.0.0.1:5071>;expires=120\r\n"
            "Expires: 600\r\n"
            f"Authorization: {authorization('100', 'secret100', nonce)}\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        junk = '<>;,="\\@: \x00\xff*9-'
        for n in range(300):
            text = good.replace("{n}", str(n))
            lines = text.split("\r\n")
            kind = n % 3
            if kind == 0:
                chars = list(text)
                for _ in range(rng.randint(1, 6)):
                    chars[rng.randrange(len(chars))] = rng.choice(junk)
                text = "".join(chars)
            elif kind == 1:
                del lines[rng.randrange(1, 10)]
                text = "\r\n".join(lines)
            else:
                i = rng.randrange(1, 10)
                lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
                text = "\r\n".join(lines)
            self.clock.deliver(text, PHONE)
        self.assertNoRegistrarErrors()
        self.assertStillWorks()


class PolicyWithRegistrarTests(RegistrarTestMixin, SynchronousTestCase):
    def test_onlyRegister(self) -> None:
        """
        With a registrar, REGISTER reaches it, but an INVITE, even from a
        registered local user's contact, still gets 403 and places no leg.
        """
        self.registerWithAuth(contacts=["<sip:100@127.0.0.1:5099>"])
        before = len(self.clock.sent)
        self.clock.deliver(
            f"INVITE sip:101@{REALM} SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-inv1\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:100@127.0.0.1>;tag=a\r\n"
            "To: <sip:101@127.0.0.1>\r\n"
            "Call-ID: inv1@x\r\n"
            "CSeq: 1 INVITE\r\n"
            "Contact: <sip:100@127.0.0.1:5099>\r\n"
            "Content-Length: 0\r\n\r\n",
            PHONE,
        )
        self.clock.settle()
        sent = self.clock.sent[before:]
        self.assertEqual([s.firstLine for s in sent], ["SIP/2.0 403 Forbidden"])


class RoutingToLocalUsersTests(RegistrarTestMixin, SynchronousTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.listener = RecordingListener()
        self.offer = SdpSession("127.0.0.1").offer("127.0.0.1", 40000)
        peer = Route(("127.0.0.1", 5070), "1000", "peer pss")
        self.router = Router(self.stack, peer, 60, locator=self.registrar)

    def invites(self):
        return [s for s in self.clock.sent if s.method == "INVITE"]

    def test_registeredUser(self) -> None:
        """A leg to a registered local user goes to its registered contact."""
        self.registerWithAuth("101", contacts=["<sip:101@127.0.0.1:5081>"])
        self.router.dial("101", self.offer, self.listener, "t/leg2")
        (invite,) = self.invites()
        self.assertEqual(invite.firstLine, "INVITE sip:101@127.0.0.1:5081 SIP/2.0")
        self.assertEqual(invite.addr, ("127.0.0.1", 5081))

    def test_expiredUser(self) -> None:
        """Once the binding lapsed, the leg fails at once (480): no INVITE leaves."""
        self.registerWithAuth("101", contacts=["<sip:101@127.0.0.1:5081>"], expires=60)
        self.clock.advance(61)
        self.router.dial("101", self.offer, self.listener, "t/leg2")
        self.clock.advance(0)
        ((kind, end),) = self.listener.events
        self.assertEqual((kind, end.code), ("ended", 480))
        self.assertEqual(self.invites(), [])

    def test_notLocal(self) -> None:
        """A number that is not local goes to the default route."""
        self.router.dial("555", self.offer, self.listener, "t/leg1")
        (invite,) = self.invites()
        self.assertEqual(invite.addr, ("127.0.0.1", 5070))
