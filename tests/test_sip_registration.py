"""
Tests for L{callback_tw.sip.registration}: what the provider sees of the
external line's registration (REGISTER, digest answers, refreshes, retries,
unregistration), on a fake reactor whose clock the test drives.
"""

from __future__ import annotations

import hashlib
import re

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from callback_tw.config import ExternalLineConfig
from callback_tw.sip.registration import LineRegistration, refreshDelay
from tests.siphelpers import Sent, headerOf, runUntil, startStack

PROVIDER = ("127.0.0.1", 5090)
REALM = "provider.example"
NONCE = "6b8b4567327b23c6"


def lineConfig(**changes) -> ExternalLineConfig:
    values = dict(
        registrarHost="sip.provider.example",
        registrarAddress=PROVIDER,
        proxy=None,
        username="line1",
        password="pw1",
        number="5551000",
        register=True,
        expires=3600,
    )
    values.update(changes)
    return ExternalLineConfig(**values)


def response(
    request: Sent, code: int, reason: str, headers: tuple[str, ...] = ()
) -> str:
    """The provider's answer to C{request}."""
    to = headerOf(request.data, "to")
    if code > 100 and ";tag=" not in to:
        to += ";tag=prov1"
    lines = [
        f"SIP/2.0 {code} {reason}",
        f"Via: {headerOf(request.data, 'via')}",
        f"From: {headerOf(request.data, 'from')}",
        f"To: {to}",
        f"Call-ID: {headerOf(request.data, 'call-id')}",
        f"CSeq: {headerOf(request.data, 'cseq')}",
        *headers,
        "Content-Length: 0",
    ]
    return "\r\n".join(lines) + "\r\n\r\n"


def challenge(
    header: str = "WWW-Authenticate", nonce: str = NONCE, extra: str = ""
) -> str:
    return f'{header}: Digest realm="{REALM}", nonce="{nonce}", qop="auth"{extra}'


def digestParams(value: str) -> dict[str, str]:
    assert value.startswith("Digest "), value
    return {
        k.lower(): v.strip('"')
        for k, v in re.findall(r'(\w+)=("[^"]*"|[^,\s]+)', value[len("Digest ") :])
    }


def expectedResponse(params: dict[str, str], password: str, method: str) -> str:
    """RFC 2617 3.2.2.1 with qop=auth, computed here, not by sippy."""

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5(f"{params['username']}:{params['realm']}:{password}")
    ha2 = md5(f"{method}:{params['uri']}")
    return md5(
        f"{ha1}:{params['nonce']}:{params['nc']}:{params['cnonce']}:"
        f"{params['qop']}:{ha2}"
    )


class _RegistrationTestMixin:
    def setUp(self) -> None:
        self.clock, self.stack = startStack(self)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def start(self, **changes) -> LineRegistration:
        self.registration = LineRegistration(
            self.stack, lineConfig(**changes), reactor=self.clock
        )
        self.registration.startService()
        self.addCleanup(self.stopQuietly)
        return self.registration

    def stopQuietly(self) -> None:
        if self.registration.running:
            d = self.registration.stopService()
            runUntil(self.clock, self.clock.seconds() + 3)
            self.successResultOf(d)

    def registers(self) -> list[Sent]:
        return [s for s in self.clock.sent if s.method == "REGISTER"]

    def lastRegister(self) -> Sent:
        return self.registers()[-1]

    def answer(self, code: int, reason: str, *headers: str) -> None:
        """The provider answers the last REGISTER."""
        self.clock.deliver(
            response(self.lastRegister(), code, reason, headers), PROVIDER
        )
        self.clock.settle()

    def registerFully(self, expires: int = 3600) -> None:
        """REGISTER -> 401 -> REGISTER with credentials -> 200."""
        self.answer(401, "Unauthorized", challenge())
        self.answer(
            200,
            "OK",
            f"Contact: <sip:line1@127.0.0.1:{self.stack.port}>;expires={expires}",
        )

    def messages(self) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.events]


class RegisterTests(_RegistrationTestMixin, SynchronousTestCase):
    """
    The line is registered at start with digest authentication.
    """

    def test_firstRegister(self) -> None:
        """
        At start, one REGISTER goes to the registrar's address: R-URI the
        registrar's domain, To/From the account at that domain, Contact our
        SIP address, Expires as configured, no credentials yet.
        """
        registration = self.start()
        (register,) = self.registers()
        self.assertEqual(register.addr, PROVIDER)
        self.assertEqual(
            register.firstLine, "REGISTER sip:sip.provider.example:5090 SIP/2.0"
        )
        self.assertEqual(
            headerOf(register.data, "to"), "<sip:line1@sip.provider.example>"
        )
        self.assertRegex(
            headerOf(register.data, "from"),
            r"^<sip:line1@sip.provider.example>;tag=\S+$",
        )
        self.assertEqual(
            headerOf(register.data, "contact"),
            f"<sip:line1@127.0.0.1:{self.stack.port}>",
        )
        self.assertEqual(headerOf(register.data, "expires"), "3600")
        self.assertIsNone(headerOf(register.data, "authorization"))
        self.assertEqual(registration.state, "registering")

    def test_proxy(self) -> None:
        """
        With a proxy configured, REGISTER is sent to the proxy, still for the
        registrar's domain (port 5060 is not written).
        """
        self.start(registrarAddress=("127.0.0.1", 5060), proxy=("127.0.0.2", 5070))
        (register,) = self.registers()
        self.assertEqual(register.addr, ("127.0.0.2", 5070))
        self.assertEqual(
            register.firstLine, "REGISTER sip:sip.provider.example SIP/2.0"
        )

    def test_digest401(self) -> None:
        """
        A 401 is answered with an C{Authorization} header carrying a correct
        MD5 qop=auth digest for the challenge; the same Call-ID, a higher
        CSeq; a 200 makes the line registered and logs it.
        """
        registration = self.start()
        first = self.lastRegister()
        self.answer(401, "Unauthorized", challenge(extra=', opaque="op1"'))
        second = self.lastRegister()
        self.assertEqual(len(self.registers()), 2)
        self.assertIsNone(headerOf(second.data, "proxy-authorization"))
        params = digestParams(headerOf(second.data, "authorization"))
        self.assertEqual(
            {
                k: params[k]
                for k in ("username", "realm", "nonce", "uri", "qop", "opaque")
            },
            {
                "username": "line1",
                "realm": REALM,
                "nonce": NONCE,
                "uri": "sip:sip.provider.example:5090",
                "qop": "auth",
                "opaque": "op1",
            },
        )
        self.assertEqual(
            params["response"], expectedResponse(params, "pw1", "REGISTER")
        )
        self.assertEqual(
            headerOf(first.data, "call-id"), headerOf(second.data, "call-id")
        )
        self.assertEqual(headerOf(first.data, "cseq"), "1 REGISTER")
        self.assertEqual(headerOf(second.data, "cseq"), "2 REGISTER")
        self.assertEqual(registration.state, "registering")

        self.answer(
            200, "OK", f"Contact: <sip:line1@127.0.0.1:{self.stack.port}>;expires=1800"
        )
        self.assertEqual(registration.state, "registered")
        self.assertEqual(registration.granted, 1800)
        self.assertEqual(registration.lastStatus, (200, "OK"))
        self.assertIn("external line registered (expires 1800)", self.messages())

    def test_digest407(self) -> None:
        """
        A 407 is answered with C{Proxy-Authorization} (not C{Authorization},
        which sippy's own agent sends).
        """
        self.start()
        self.answer(
            407, "Proxy Authentication Required", challenge("Proxy-Authenticate")
        )
        second = self.lastRegister()
        self.assertIsNone(headerOf(second.data, "authorization"))
        params = digestParams(headerOf(second.data, "proxy-authorization"))
        self.assertEqual(
            params["response"], expectedResponse(params, "pw1", "REGISTER")
        )

    def test_wrongPassword(self) -> None:
        """
        A second challenge after our credentials (not stale) means they were
        refused: the line is failing with the provider's status and retries
        later, without a third REGISTER now.
        """
        registration = self.start()
        self.answer(401, "Unauthorized", challenge())
        self.answer(401, "Unauthorized", challenge(nonce="n2"))
        self.assertEqual(len(self.registers()), 2)
        self.assertEqual(registration.state, "failing")
        self.assertEqual(registration.lastStatus, (401, "Unauthorized"))
        self.assertIn(
            "external line failing: 401 Unauthorized, retry in 5 s", self.messages()
        )

    def test_staleNonce(self) -> None:
        """
        A challenge with stale=true after our credentials is answered once
        more, with the new nonce.
        """
        registration = self.start()
        self.answer(401, "Unauthorized", challenge())
        self.answer(401, "Unauthorized", challenge(nonce="fresh", extra=", stale=true"))
        self.assertEqual(len(self.registers()), 3)
        params = digestParams(headerOf(self.lastRegister().data, "authorization"))
        self.assertEqual(params["nonce"], "fresh")
        self.assertEqual(registration.state, "registering")

    def test_unsupportedAlgorithm(self) -> None:
        """
        A challenge we cannot answer is a failure, not a loop.
        """
        registration = self.start()
        self.answer(
            401,
            "Unauthorized",
            f'WWW-Authenticate: Digest realm="{REALM}", nonce="x", algorithm=AKAv1-MD5',
        )
        self.assertEqual(len(self.registers()), 1)
        self.assertEqual(registration.state, "failing")

    def test_grantedExpiryFromExpiresHeader(self) -> None:
        """
        Without an expires parameter on our Contact, the Expires header
        gives the granted expiry; a registrar's other bindings are ignored.
        """
        registration = self.start()
        self.answer(
            200,
            "OK",
            "Contact: <sip:line1@192.0.2.1:5060>;expires=7",
            "Expires: 600",
        )
        self.assertEqual(registration.granted, 600)

    def test_intervalTooBrief(self) -> None:
        """
        A 423 is answered at once with the provider's Min-Expires.
        """
        self.start(expires=30)
        self.answer(423, "Interval Too Brief", "Min-Expires: 120")
        self.assertEqual(headerOf(self.lastRegister().data, "expires"), "120")
        self.assertEqual(len(self.registers()), 2)


class RefreshTests(_RegistrationTestMixin, SynchronousTestCase):
    """
    The binding is refreshed before it lapses.
    """

    def test_refreshDelay(self) -> None:
        """
        Half the granted expiry, never later than 5 s before it lapses,
        never sooner than 1 s.
        """
        self.assertEqual(refreshDelay(3600), 1800)
        self.assertEqual(refreshDelay(8), 3)
        self.assertEqual(refreshDelay(1), 1)

    def test_refreshAtHalfExpiry(self) -> None:
        """
        A binding granted for 20 s is refreshed at 10 s (not at 20 s, when
        it would lapse), with the same Call-ID and a higher CSeq, and again
        10 s after that refresh succeeds.
        """
        registration = self.start(expires=20)
        self.registerFully(expires=20)
        registeredAt = self.clock.seconds()
        count = len(self.registers())
        runUntil(self.clock, registeredAt + 9.9)
        self.assertEqual(len(self.registers()), count)
        runUntil(self.clock, registeredAt + 10)
        refresh = self.lastRegister()
        self.assertEqual(len(self.registers()), count + 1)
        self.assertEqual(refresh.time, registeredAt + 10)
        self.assertEqual(headerOf(refresh.data, "cseq"), "3 REGISTER")
        self.assertEqual(registration.state, "registering")
        self.registerFully(expires=20)
        self.assertEqual(registration.state, "registered")
        runUntil(self.clock, registeredAt + 20)
        self.assertEqual(len(self.registers()), count + 3)
        self.assertEqual(self.lastRegister().time, registeredAt + 20)


class FailureTests(_RegistrationTestMixin, SynchronousTestCase):
    """
    Failures are logged with the provider's status and retried with an
    exponential back-off.
    """

    def test_backoff(self) -> None:
        """
        403 in a row: retries after 5, 10, 20, 40, 80, 160, 300, 300 s; a
        success resets the back-off.
        """
        registration = self.start()
        delays = []
        for _ in range(8):
            self.answer(403, "Forbidden")
            self.assertEqual(registration.state, "failing")
            failedAt = self.clock.seconds()
            count = len(self.registers())
            runUntil(self.clock, failedAt + registration.retryDelay)
            self.assertEqual(len(self.registers()), count + 1)
            delays.append(self.lastRegister().time - failedAt)
        self.assertEqual(delays, [5, 10, 20, 40, 80, 160, 300, 300])
        self.assertIn(
            "external line failing: 403 Forbidden, retry in 300 s", self.messages()
        )
        self.registerFully()
        self.assertEqual(registration.state, "registered")
        self.answer(403, "Forbidden")  # nothing pending: ignored
        runUntil(self.clock, self.clock.seconds() + 1800)
        self.answer(500, "Server Error")
        self.assertEqual(registration.retryDelay, 5)

    def test_noAnswer(self) -> None:
        """
        A provider that never answers: the transaction times out (408 after
        32 s, with retransmissions meanwhile) and the line is failing; the
        retry comes 5 s later.
        """
        registration = self.start()
        runUntil(self.clock, 31.9)
        self.assertEqual(registration.state, "registering")
        sent = len(self.registers())
        self.assertGreater(sent, 1)  # retransmissions of the one REGISTER
        self.assertEqual(len({headerOf(s.data, "cseq") for s in self.registers()}), 1)
        runUntil(self.clock, 32)
        self.assertEqual(registration.state, "failing")
        self.assertEqual(registration.lastStatus, (408, "Request Timeout"))
        self.assertIn(
            "external line failing: 408 Request Timeout, retry in 5 s", self.messages()
        )
        runUntil(self.clock, 37)
        self.assertEqual(headerOf(self.lastRegister().data, "cseq"), "2 REGISTER")

    def test_refreshFails(self) -> None:
        """
        A refresh the provider refuses makes a registered line failing.
        """
        registration = self.start(expires=60)
        self.registerFully(expires=60)
        runUntil(self.clock, self.clock.seconds() + 30)
        self.answer(503, "Service Unavailable")
        self.assertEqual(registration.state, "failing")
        self.assertEqual(registration.lastStatus, (503, "Service Unavailable"))


class StopTests(_RegistrationTestMixin, SynchronousTestCase):
    """
    Stopping unregisters the line and leaves no timer behind.
    """

    def test_unregister(self) -> None:
        """
        Stop sends REGISTER with Expires: 0 (and the same Contact), answers
        its challenge, and the Deferred fires when the provider answers.
        """
        registration = self.start()
        self.registerFully()
        d = registration.stopService()
        unregister = self.lastRegister()
        self.assertEqual(headerOf(unregister.data, "expires"), "0")
        self.assertEqual(
            headerOf(unregister.data, "contact"),
            f"<sip:line1@127.0.0.1:{self.stack.port}>",
        )
        self.assertNoResult(d)
        self.answer(401, "Unauthorized", challenge(nonce="n3"))
        again = self.lastRegister()
        self.assertEqual(headerOf(again.data, "expires"), "0")
        self.assertEqual(
            digestParams(headerOf(again.data, "authorization"))["nonce"], "n3"
        )
        self.assertNoResult(d)
        self.answer(200, "OK")
        self.successResultOf(d)
        self.assertEqual(registration.state, "unregistered")
        self.assertIn("external line unregistered (200 OK)", self.messages())
        self.assertIs(registration.stopService(), registration.stopService())

    def test_unregisterBounded(self) -> None:
        """
        A provider that does not answer the unregistration holds the stop
        for 2 s at most.
        """
        registration = self.start()
        self.registerFully()
        d = registration.stopService()
        runUntil(self.clock, self.clock.seconds() + 1.9)
        self.assertNoResult(d)
        runUntil(self.clock, self.clock.seconds() + 0.1)
        self.successResultOf(d)
        self.assertEqual(registration.state, "unregistered")

    def test_noTimersAfterStop(self) -> None:
        """
        After stop, nothing of the registration is scheduled: no refresh, no
        retry ever goes out, and stopping the stack leaves the clock empty.
        """
        for answer in ((200, "OK"), (403, "Forbidden")):
            registration = self.start()
            self.answer(*answer)
            d = registration.stopService()
            self.answer(200, "OK")
            self.successResultOf(d)
            count = len(self.registers())
            runUntil(self.clock, self.clock.seconds() + 4000)
            self.assertEqual(len(self.registers()), count)
        self.successResultOf(self.stack.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failingNotUnregistered(self) -> None:
        """
        A line that never got a binding is not unregistered: stop is
        immediate and sends nothing.
        """
        registration = self.start()
        self.answer(403, "Forbidden")
        count = len(self.registers())
        self.successResultOf(registration.stopService())
        self.assertEqual(len(self.registers()), count)
        self.assertEqual(registration.state, "unregistered")
