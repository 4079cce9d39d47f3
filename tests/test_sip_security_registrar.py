"""
The registrar against an attacker: password guessing is locked out per
user and per address, a captured REGISTER cannot be replayed however many
nonces were used since, and the digest must be for the Request-URI. On the
wire, through a real L{SipStack} on a fake reactor.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from callback_tw.sip.registrar import MAX_TRACKED_NONCES
from tests.test_sip_registrar import (
    PHONE,
    REALM,
    RegistrarTestMixin,
    authorization,
    challengeParams,
)

ATTACKER = ("127.0.0.1", 6666)
OTHER = ("127.0.0.2", 7777)


class LockoutTests(RegistrarTestMixin, SynchronousTestCase):
    def guess(self, user: str, source, password: str = "guess") -> str:
        nonce = self.nonce(user, source)
        answer = self.register(
            user, auth=authorization(user, password, nonce), source=source
        )
        return answer.firstLine

    def nonce(self, user: str = "100", source=PHONE) -> str:
        answer = self.register(user, source=source)
        self.assertEqual(answer.firstLine, "SIP/2.0 401 Unauthorized")
        return challengeParams(answer.header("www-authenticate"))["nonce"]

    def login(self, user: str, source) -> str:
        password = {"100": "secret100", "101": "secret101"}[user]
        return self.guess(user, source, password)

    def test_userLockedOut(self) -> None:
        """
        5 wrong passwords for user 100 within a minute: for 5 minutes even
        the right password, from another address, gets 403; then 200.
        """
        for _ in range(5):
            self.assertEqual(self.guess("100", ATTACKER), "SIP/2.0 403 Forbidden")
            self.clock.advance(10)
        self.assertEqual(self.login("100", OTHER), "SIP/2.0 403 Forbidden")
        # locked at the fifth failure (t=40) until t=340; now t=50
        self.clock.advance(289)
        self.assertEqual(self.login("100", OTHER), "SIP/2.0 403 Forbidden")
        self.clock.advance(2)
        self.assertEqual(self.login("100", OTHER), "SIP/2.0 200 OK")

    def test_sourceLockedOut(self) -> None:
        """
        5 failures from one address (against two users): that address is
        locked out even for a correct login; other addresses are not.
        """
        for user in ["100", "101", "100", "101", "100"]:
            self.guess(user, ATTACKER)
        self.assertEqual(self.login("101", ATTACKER), "SIP/2.0 403 Forbidden")
        self.assertEqual(self.login("101", OTHER), "SIP/2.0 200 OK")
        self.clock.advance(301)
        self.assertEqual(self.login("101", ATTACKER), "SIP/2.0 200 OK")

    def test_slowFailuresNotLocked(self) -> None:
        """A phone with a wrong password retrying every 20 s is never locked."""
        for _ in range(10):
            self.assertEqual(self.guess("100", PHONE), "SIP/2.0 403 Forbidden")
            self.clock.advance(20)
        self.assertEqual(self.login("100", PHONE), "SIP/2.0 200 OK")

    def test_guessingRate(self) -> None:
        """
        1 000 guesses in a second on one nonce: only the first 5 are
        checked; the right password among the rest gets 403 too.
        """
        nonce = self.nonce("100", ATTACKER)
        for i in range(1000):
            auth = authorization("100", f"guess{i}", nonce, nc=f"{i + 1:08x}")
            self.register("100", auth=auth, source=ATTACKER)
        auth = authorization("100", "secret100", nonce, nc=f"{1001:08x}")
        answer = self.register("100", auth=auth, source=ATTACKER)
        self.assertEqual(answer.firstLine, "SIP/2.0 403 Forbidden")
        self.assertIsNone(self.registrar.contactFor("100"))

    def test_digestUriMustBeRequestUri(self) -> None:
        """
        A digest computed, with the right password, for another URI than
        the Request-URI does not authenticate: 403; the same for the
        Request-URI: 200.
        """
        for uri in ["sip:elsewhere.example", f"sip:{REALM}:5060", f"sip:100@{REALM}"]:
            auth = authorization("100", "secret100", self.nonce(), uri=uri)
            self.assertEqual(
                self.register(auth=auth).firstLine, "SIP/2.0 403 Forbidden", uri
            )
        auth = authorization("100", "secret100", self.nonce(), uri=f"sip:{REALM}")
        self.assertEqual(self.register(auth=auth).firstLine, "SIP/2.0 200 OK")


class ReplayTests(RegistrarTestMixin, SynchronousTestCase):
    def test_replayAfterManyNonces(self) -> None:
        """
        A REGISTER of user 100 is captured. The attacker then makes 10 000
        authenticated REGISTERs with his own account 101 (each on a fresh
        nonce, within the nonces' lifetime) and replays the captured one
        with his own Contact: it is refused as stale, and calls to 100
        still go to 100's phone.
        """
        self.assertGreaterEqual(10000, MAX_TRACKED_NONCES)
        nonce = self.nonce("100")
        captured = authorization("100", "secret100", nonce)
        answer = self.register(
            "100", auth=captured, contacts=["<sip:100@127.0.0.1:5071>"]
        )
        self.assertEqual(answer.firstLine, "SIP/2.0 200 OK")
        for _ in range(10000):
            answer = self.registerWithAuth("101", source=ATTACKER)
            self.assertEqual(answer.firstLine, "SIP/2.0 200 OK")
        self.clock.advance(60)
        answer = self.register(
            "100",
            auth=captured,
            contacts=["<sip:100@127.0.0.1:6666>"],
            source=ATTACKER,
        )
        self.assertEqual(answer.firstLine, "SIP/2.0 401 Unauthorized")
        self.assertEqual(
            challengeParams(answer.header("www-authenticate"))["stale"], "true"
        )
        self.assertEqual(self.registrar.contactFor("100"), ("127.0.0.1", 5071))


class SmallNonceTableTests(RegistrarTestMixin, SynchronousTestCase):
    registrarOptions = {"maxTrackedNonces": 50}

    def test_freshNonceAfterEviction(self) -> None:
        """
        After the table was full, a phone with a nonce it never used is
        told "stale" at worst, and registers with the next nonce.
        """
        waiting = self.nonce("100")
        for _ in range(55):
            self.registerWithAuth("101", source=ATTACKER)
        answer = self.register("100", auth=authorization("100", "secret100", waiting))
        self.assertEqual(answer.firstLine, "SIP/2.0 401 Unauthorized")
        answer = self.registerWithAuth("100")
        self.assertEqual(answer.firstLine, "SIP/2.0 200 OK")
