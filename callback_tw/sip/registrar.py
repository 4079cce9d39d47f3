# -*- test-case-name: tests.test_sip_registrar -*-
"""
The server as registrar for its local users (C{[users]}: number = password).

A local user's phone REGISTERs here with HTTP digest authentication (RFC
3261 22, RFC 2617: MD5, qop=auth); its bindings (contacts with an expiry)
live in memory, so after a restart every phone has to register again. The
L{Router} asks L{Registrar.isLocal} and L{Registrar.contactFor} where a leg
to a local number goes.

Why the choices:
  - Nonces are stateless: C{<time>.<serial>.<salt>.<HMAC(secret, ...)>},
    valid
    C{nonceLifetime} seconds of reactor time, so a restart or a flood of
    unauthenticated REGISTERs costs no memory. Only the nonce counts seen
    (C{nc}) are remembered, for the nonces' lifetime, to refuse a replayed
    Authorization (the digest does not cover Contact: a replay could
    otherwise move a user's calls elsewhere). That table is bounded; a
    nonce pushed out of it while still alive can never be used again (every
    untracked nonce whose serial is at most the highest one pushed out is
    stale), so no amount of other REGISTERs makes a captured one
    replayable.
  - The digest C{uri} must be the Request-URI (RFC 2617 3.2.2.5).
  - Guessing is limited: C{maxFailures} failed attempts within
    C{failureWindow} seconds lock the user and the source address out for
    C{lockTime} seconds (403 without checking).
  - Users are not revealed: any REGISTER without credentials gets the same
    401, and any wrong credentials the same 403, whether the number exists
    or not.
  - Expiry is lazy (on each look-up): no timer to cancel, none left after
    stop.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from sippy.SipContact import SipContact
from sippy.SipHeader import SipHeader
from twisted.logger import Logger

from callback_tw.ratelimit import LogLimiter
from callback_tw.sip.adapter import NamedHeader
from callback_tw.sip.digest import (
    BadRequest,
    digestResponse,
    parseDigest,
    sameText,
    sameUri,
)
from callback_tw.sip.guard import FailureLimiter, printable

#: RFC 3261 10.2.1.1: what a Contact without expires gets.
DEFAULT_EXPIRES = 3600
#: Below this a REGISTER gets 423 Interval Too Brief (and Min-Expires).
MIN_EXPIRES = 60
#: Above this the expiry is cut down to it (the 200 says so).
MAX_EXPIRES = 7200
#: Seconds a nonce is good for; after that a correct answer gets
#: 401 with stale=true.
NONCE_LIFETIME = 300
#: Contacts kept per user; registering one more drops the oldest.
MAX_BINDINGS = 10
#: Nonces whose counts are remembered at once (older ones are dropped first).
MAX_TRACKED_NONCES = 10000


@dataclass
class Binding:
    """
    One registered contact of a local user.

    @ivar uri: the Contact URI, as the phone sent it (without header params).
    @ivar host: @ivar port: where legs to this contact go (the URI's host
        and port, 5060 when it has none).
    @ivar expiresAt: reactor time when it lapses.
    @ivar registeredAt: reactor time of the REGISTER that set it.
    @ivar callId: @ivar cseq: of that REGISTER (RFC 3261 10.3 step 7).
    """

    uri: str
    host: str
    port: int
    expiresAt: float
    registeredAt: float
    callId: str
    cseq: int


class Registrar:
    """
    Answers REGISTER for the local users and knows where they are.

    Plugged into L{SipStack.registrar} (C{handleRegister}) and into the
    L{Router} as its locator (C{isLocal}, C{contactFor}).
    """

    _log = Logger()

    def __init__(
        self,
        users: Mapping[str, str],
        realm: str,
        reactor: Any = None,
        minExpires: int = MIN_EXPIRES,
        maxExpires: int = MAX_EXPIRES,
        defaultExpires: int = DEFAULT_EXPIRES,
        nonceLifetime: float = NONCE_LIFETIME,
        maxFailures: int = 5,
        failureWindow: float = 60.0,
        lockTime: float = 300.0,
        maxTrackedNonces: int = MAX_TRACKED_NONCES,
    ) -> None:
        """
        @param users: number -> password.
        @param realm: the digest realm (the server's SIP host by default).
        @param reactor: for the time (IReactorTime).
        @param maxFailures: failed digest attempts within C{failureWindow}
            seconds that lock a user, and a source address, out for
            C{lockTime} seconds; 0: never locked.
        @param maxTrackedNonces: nonces whose counts are kept at once.
        """
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        self._reactor = reactor
        #: numbers are case-insensitive (the INI file lower-cases them)
        self._users = {number.lower(): password for number, password in users.items()}
        self.realm = realm
        self.minExpires = minExpires
        self.maxExpires = maxExpires
        self.defaultExpires = min(max(defaultExpires, minExpires), maxExpires)
        self.nonceLifetime = nonceLifetime
        self._secret = secrets.token_bytes(32)
        self._bindings: dict[str, list[Binding]] = {}
        self.maxTrackedNonces = maxTrackedNonces
        #: nonce -> (issued at, serial, highest nc used); insertion order =
        #: order of first use.
        self._nonceCounts: dict[str, tuple[float, int, int]] = {}
        #: serial of the next nonce; nonces of another run fail the MAC.
        self._nextSerial = 0
        #: the highest serial of a live nonce dropped from that table: an
        #: untracked nonce with a serial up to it may have been used.
        self._untrackedUpTo = -1
        self._failures = FailureLimiter(
            reactor, max(maxFailures, 1), failureWindow, lockTime
        )
        self._lockouts = maxFailures > 0
        self._logLimiter = LogLimiter(reactor)

    # -- the locator ---------------------------------------------------------

    def isLocal(self, user: str) -> bool:
        """Whether C{user} is one of the configured local numbers."""
        return user.lower() in self._users

    def contactFor(self, user: str) -> tuple[str, int] | None:
        """
        Where a leg to C{user} goes: the (host, port) of its most recently
        registered live contact (the Contact URI's own host and port, as
        the phone wrote it: a phone behind NAT must register a reachable
        contact); None when it has none.
        """
        bindings = self.bindings(user)
        if not bindings:
            return None
        latest = max(bindings, key=lambda b: b.registeredAt)
        return (latest.host, latest.port)

    def bindings(self, user: str) -> list[Binding]:
        """C{user}'s live bindings (expired ones are dropped here)."""
        user = user.lower()
        now = self._reactor.seconds()
        live = [b for b in self._bindings.get(user, []) if b.expiresAt > now]
        if live:
            self._bindings[user] = live
        else:
            self._bindings.pop(user, None)
        return live

    # -- REGISTER --------------------------------------------------------------

    def handleRegister(self, req: Any) -> Any:
        """
        Answer one REGISTER (a sippy C{SipRequest}) with a sippy
        C{SipResponse}: 401 challenge, 403, 400, 423, or 200 with the
        bindings. Never raises: a request too broken to answer gets None
        (no response).
        """
        source = _sourceOf(req)
        try:
            return self._handle(req, source)
        except BadRequest as e:
            self._log.info(
                "REGISTER from {source}: 400 {reason}", source=source, reason=e
            )
            return _respond(req, 400, "Bad Request")
        except Exception:
            self._log.failure(
                "REGISTER from {source} could not be handled", source=source
            )
            return _respond(req, 400, "Bad Request")

    def _handle(self, req: Any, source: str) -> Any:
        try:
            aor = req.getHFBody("to").getUrl()
            user = aor.username or ""
            callId = str(req.getHFBody("call-id"))
            cseq = int(req.getHFBody("cseq").getCSeqNum())
        except Exception as e:
            raise BadRequest(f"bad To, Call-ID or CSeq ({e})") from None
        credentials = self._credentials(req)
        if credentials is None:
            return self._challenge(req, stale=False)
        host = source.rpartition(":")[0]
        username = credentials.get("username", "").lower()
        if self._lockouts and (
            self._failures.locked(username) or self._failures.locked(host)
        ):
            self._refused(user, source, "locked out after failed attempts")
            return _respond(req, 403, "Forbidden")
        verdict = self._verify(req, user, credentials)
        if verdict == "stale":
            self._log.info(
                "REGISTER {user} from {source}: stale nonce, 401",
                user=printable(user, 40),
                source=source,
            )
            return self._challenge(req, stale=True)
        if verdict != "ok":
            self._failed(username, host, source)
            self._refused(user, source, verdict)
            return _respond(req, 403, "Forbidden")
        return self._updateBindings(req, user, callId, cseq, source)

    def _failed(self, username: str, host: str, source: str) -> None:
        """Count a failed attempt against the user and the address."""
        if not self._lockouts:
            return
        for key, what in ((username, "user"), (host, "address")):
            if key and self._failures.failed(key):
                self._log.warn(
                    "REGISTER: {what} {key} locked out for {seconds:.0f} s"
                    " after {n} failed attempts (last from {source})",
                    what=what,
                    key=printable(key, 40),
                    seconds=self._failures.lockTime,
                    n=self._failures.maxFailures,
                    source=source,
                )

    def _refused(self, user: str, source: str, why: str) -> None:
        """One warning per source per interval about refused REGISTERs."""
        dropped = self._logLimiter.allow(source.rpartition(":")[0])
        if dropped is None:
            return
        self._log.warn(
            "REGISTER {user} from {source} refused: {why}, 403{dropped}",
            user=printable(user, 40),
            source=source,
            why=printable(why, 80),
            dropped=f" (+{dropped} not logged)" if dropped else "",
        )

    def _credentials(self, req: Any) -> dict[str, str] | None:
        """
        The Digest credentials for our realm, or None (no Authorization for
        us: challenge).
        """
        for header in req.getHFs("authorization"):
            params = parseDigest(str(header.body))
            if params.get("realm") == self.realm:
                return params
        return None

    def _verify(self, req: Any, user: str, cred: dict[str, str]) -> str:
        """ "ok", "stale", or why the credentials are refused."""
        username = cred.get("username", "")
        nonce = cred.get("nonce", "")
        uri = cred.get("uri", "")
        response = cred.get("response", "")
        qop = cred.get("qop") or None
        nc = cred.get("nc") or None
        cnonce = cred.get("cnonce") or None
        algorithm = cred.get("algorithm", "MD5")
        if not (username and nonce and uri and response):
            return "incomplete credentials"
        if algorithm.upper() != "MD5":
            return f"algorithm {algorithm}"
        if qop not in (None, "auth"):
            return f"qop {qop}"
        if qop and not (nc and cnonce):
            return "qop without nc/cnonce"
        issued = self._nonceIssued(nonce)
        if issued is None:
            return "a nonce we did not issue"
        # Same work for a number that does not exist: no timing difference.
        password = self._users.get(username.lower())
        expected = digestResponse(
            username,
            self.realm,
            password if password is not None else self._secret.hex(),
            req.getMethod(),
            uri,
            nonce,
            qop,
            nc,
            cnonce,
        )
        correct = sameText(expected, response.lower())
        if password is None or not correct:
            return "wrong credentials"
        if username.lower() != user.lower():
            return f"credentials of {username} for {user}"
        if not sameUri(uri, req.getRURI()):
            return "digest uri is not the Request-URI"
        now = self._reactor.seconds()
        if not 0 <= now - issued[0] <= self.nonceLifetime:
            return "stale"
        if not self._countNonce(nonce, issued, nc):
            return "stale"
        return "ok"

    # -- nonces -----------------------------------------------------------------

    def _mac(self, text: str) -> str:
        return hmac.new(self._secret, text.encode(), sha256).hexdigest()[:32]

    def _newNonce(self) -> str:
        serial, self._nextSerial = self._nextSerial, self._nextSerial + 1
        millis = int(self._reactor.seconds() * 1000)
        stamp = f"{millis:x}.{serial:x}.{secrets.token_hex(4)}"
        return f"{stamp}.{self._mac(stamp)}"

    def _nonceIssued(self, nonce: str) -> tuple[float, int] | None:
        """
        When we issued C{nonce} (seconds) and its serial, or None if we did
        not issue it.
        """
        stamp, _, mac = nonce.rpartition(".")
        if not stamp or not sameText(self._mac(stamp), mac):
            return None
        try:
            millis, serial, _ = stamp.split(".")
            return int(millis, 16) / 1000.0, int(serial, 16)
        except ValueError:
            return None

    def _countNonce(
        self, nonce: str, issued: tuple[float, int], nc: str | None
    ) -> bool:
        """
        Record one use of C{nonce}: False for a replay (an nc not above
        the last one seen, or a second use without qop), and for a nonce
        that may have been used but is no longer tracked (stale).
        """
        try:
            count = int(nc, 16) if nc else 0
        except ValueError:
            return False
        now = self._reactor.seconds()
        table = self._nonceCounts
        while table:
            oldest = next(iter(table))
            at, serial, _ = table[oldest]
            alive = now - at <= self.nonceLifetime
            if alive and len(table) < self.maxTrackedNonces:
                break
            if alive:
                self._untrackedUpTo = max(self._untrackedUpTo, serial)
            del table[oldest]
        last = table.get(nonce)
        if last is None and issued[1] <= self._untrackedUpTo:
            return False
        if last is not None and (count == 0 or count <= last[2]):
            return False
        table[nonce] = (issued[0], issued[1], count)
        return True

    def _challenge(self, req: Any, stale: bool) -> Any:
        resp = _respond(req, 401, "Unauthorized")
        value = (
            f'Digest realm="{self.realm}", nonce="{self._newNonce()}", '
            f'algorithm=MD5, qop="auth"'
        )
        if stale:
            value += ", stale=true"
        resp.appendHeader(
            SipHeader(
                name="www-authenticate", body=NamedHeader("WWW-Authenticate", value)
            )
        )
        return resp

    # -- bindings (RFC 3261 10.3 steps 6-8) --------------------------------------

    def _updateBindings(
        self, req: Any, user: str, callId: str, cseq: int, source: str
    ) -> Any:
        user = user.lower()
        headerExpires = self._headerExpires(req)
        try:
            contacts = [h.getBody() for h in req.getHFs("contact")]
        except Exception as e:
            raise BadRequest(f"bad Contact ({e})") from None
        current = self.bindings(user)
        if any(c.asterisk for c in contacts):
            if len(contacts) != 1 or headerExpires != 0:
                raise BadRequest("Contact: * needs Expires: 0 and no other Contact")
            if any(b.callId == callId and cseq <= b.cseq for b in current):
                raise BadRequest("CSeq out of order")
            self._bindings.pop(user, None)
            self._log.info(
                "REGISTER {user} from {source}: all {n} contacts removed",
                user=user,
                source=source,
                n=len(current),
            )
            return self._ok(req, user)
        changes: list[tuple[str, str, int, int]] = []
        for contact in contacts:
            address = contact.getUrl()
            if address.scheme not in ("sip", "sips") or not address.host:
                raise BadRequest(f"unusable contact {address}")
            expires = self._contactExpires(contact, headerExpires)
            if 0 < expires < self.minExpires:
                return self._intervalTooBrief(req, user, source, expires)
            uri = str(address)
            changes.append(
                (
                    uri,
                    str(address.host),
                    int(address.getPort()),
                    min(expires, self.maxExpires),
                )
            )
        for uri, _, _, _ in changes:
            for b in current:
                if b.uri == uri and b.callId == callId and cseq <= b.cseq:
                    raise BadRequest("CSeq out of order")
        self._apply(user, source, current, changes, callId, cseq)
        return self._ok(req, user)

    def _intervalTooBrief(self, req: Any, user: str, source: str, expires: int) -> Any:
        """423 Interval Too Brief with our Min-Expires (RFC 3261 10.3)."""
        resp = _respond(req, 423, "Interval Too Brief")
        resp.appendHeader(
            SipHeader(
                name="min-expires",
                body=NamedHeader("Min-Expires", str(self.minExpires)),
            )
        )
        self._log.info(
            "REGISTER {user} from {source}: expires {expires} < {min}, 423",
            user=user,
            source=source,
            expires=expires,
            min=self.minExpires,
        )
        return resp

    def _apply(
        self,
        user: str,
        source: str,
        current: list[Binding],
        changes: list[tuple[str, str, int, int]],
        callId: str,
        cseq: int,
    ) -> None:
        """
        Add, refresh (expires > 0) or remove (expires 0) each changed
        contact of C{user}; keep the L{MAX_BINDINGS} most recent.
        """
        now = self._reactor.seconds()
        bindings = {b.uri: b for b in current}
        for uri, host, port, expires in changes:
            if expires == 0:
                if bindings.pop(uri, None) is not None:
                    self._log.info(
                        "REGISTER {user}: {contact} removed", user=user, contact=uri
                    )
                continue
            bindings.pop(uri, None)
            bindings[uri] = Binding(uri, host, port, now + expires, now, callId, cseq)
            self._log.info(
                "REGISTER {user} from {source}: {contact} for {expires} s",
                user=user,
                source=source,
                contact=uri,
                expires=expires,
            )
        kept = sorted(bindings.values(), key=lambda b: b.registeredAt)[-MAX_BINDINGS:]
        if kept:
            self._bindings[user] = kept
        else:
            self._bindings.pop(user, None)

    def _headerExpires(self, req: Any) -> int | None:
        if req.countHFs("expires") == 0:
            return None
        try:
            value = int(req.getHFBody("expires").getNum())
        except Exception:
            raise BadRequest("bad Expires") from None
        if value < 0:
            raise BadRequest("negative Expires")
        return value

    def _contactExpires(self, contact: SipContact, headerExpires: int | None) -> int:
        params = {k.lower(): v for k, v in contact.address.params.items()}
        if "expires" in params:
            try:
                value = int(params["expires"] or "")
            except ValueError:
                raise BadRequest("bad expires parameter") from None
            if value < 0:
                raise BadRequest("negative expires parameter")
            return value
        if headerExpires is not None:
            return headerExpires
        return self.defaultExpires

    def _ok(self, req: Any, user: str) -> Any:
        """200 listing every current binding with its remaining seconds."""
        resp = _respond(req, 200, "OK")
        now = self._reactor.seconds()
        for b in self.bindings(user):
            remaining = max(int(b.expiresAt - now + 0.5), 1)
            resp.appendHeader(
                SipHeader(
                    name="contact",
                    body=NamedHeader("Contact", f"<{b.uri}>;expires={remaining}"),
                )
            )
        return resp


def _respond(req: Any, code: int, reason: str) -> Any:
    try:
        return req.genResponse(code, reason)
    except Exception:
        return None


def _sourceOf(req: Any) -> str:
    try:
        host, port = req.getSource()
        return f"{host}:{port}"
    except Exception:
        return "?"
