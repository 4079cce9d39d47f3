# -*- test-case-name: tests.test_sip_registration -*-
"""
Registration of the external line with the VoIP provider.

sippy has a registration agent (C{SipRegistrationAgent}), but it refreshes
exactly at expiry (the binding lapses for a round trip on every refresh),
retries a failure after a fixed 60 s, keeps no handle to its timers (they
cannot be cancelled when the service stops, and fire into a torn-down
transaction manager), and answers a 407 with C{Authorization} instead of
C{Proxy-Authorization}. So the agent is written here, on sippy's parts:
its transaction manager (retransmissions, Timer F's 408), its request and
header classes, and its digest code (C{challenge.genAuthHF}).

Life of the line::

    registering --200--> registered --(half the granted expiry)--> registering
        |                     ^
        +--failure/408--> failing --(back-off: 5 s doubling to 300 s)--+
    (stop) --REGISTER Expires: 0--> unregistered
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from sippy.SipAddress import SipAddress
from sippy.SipCallId import SipCallId
from sippy.SipContact import SipContact
from sippy.SipExpires import SipExpires
from sippy.SipFrom import SipFrom
from sippy.SipHeader import SipHeader
from sippy.SipRequest import SipRequest
from sippy.SipTo import SipTo
from sippy.SipURL import SipURL
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from callback_tw.sip.leg import USER_AGENT
from callback_tw.timers import cancelDelayed

__all__ = ["LineRegistration", "LineState", "BACKOFF_FIRST", "BACKOFF_MAX"]

#: The first retry after a failure, in seconds; doubled on each failure in a
#: row, up to L{BACKOFF_MAX}.
BACKOFF_FIRST = 5.0
BACKOFF_MAX = 300.0

#: How long stopping waits for the provider to answer the unregistration.
UNREGISTER_TIMEOUT = 2.0

#: Refresh no later than this many seconds before the binding lapses.
REFRESH_MARGIN = 5.0

#: Challenges answered in a row for one registration attempt: the first is
#: the normal one; a second is accepted only when it says the nonce was
#: stale (RFC 2617 "stale=true").  Any other second challenge means the
#: credentials were refused.
_MAX_CHALLENGES = 2

_CHALLENGES = {
    401: ("www-authenticate", "authorization"),
    407: ("proxy-authenticate", "proxy-authorization"),
}


class LineState(enum.StrEnum):
    """
    Where the line's registration is; each value compares equal to its
    name (see L{LineRegistration.state}).
    """

    UNREGISTERED = "unregistered"
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILING = "failing"


@dataclass(frozen=True)
class _Attempt:
    """
    One REGISTER sent, with the expiry it asked for (what a response is
    judged against: Expires 0 was an unregistration).
    """

    request: Any
    expires: int


def refreshDelay(granted: int) -> float:
    """
    When to refresh a binding granted for C{granted} seconds: at half of it,
    but never later than L{REFRESH_MARGIN} before it lapses, and not sooner
    than one second (a registrar that grants 1 s is not worth a busy loop).
    """
    return max(1.0, min(granted / 2.0, granted - REFRESH_MARGIN))


class LineRegistration(Service):
    """
    Keeps the external line registered while the service runs.

    @ivar state: a L{LineState}: C{UNREGISTERED} (not started, or
        stopped), C{REGISTERING} (a REGISTER is on its way, or being
        authenticated), C{REGISTERED} (the provider accepted it; refresh
        scheduled) or C{FAILING} (the last attempt failed; a retry is
        scheduled).
    @ivar lastStatus: the provider's last final answer, C{(code, reason)},
        or L{None}; C{(408, "Request Timeout")} when it did not answer.
    @ivar granted: the expiry the provider granted last, in seconds.
    @ivar retryDelay: the delay of the scheduled retry while failing.
    """

    _log = Logger()

    def __init__(self, stack: Any, lineConfig: Any, reactor: Any = None) -> None:
        """
        @param stack: the L{callback_tw.sip.stack.SipStack}; it must be
            started before this service (its transaction manager and
            address are read at start).
        @param lineConfig: the L{callback_tw.config.ExternalLineConfig}.
        """
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        self._reactor = reactor
        self._stack = stack
        self._line = lineConfig
        self.state = LineState.UNREGISTERED
        self.lastStatus: tuple[int, str] | None = None
        self.granted: int | None = None
        self.retryDelay: float | None = None
        self._failures = 0
        self._timer: Any = None
        self._callId = ""
        self._fromTag = ""
        self._cseq = 0
        #: the REGISTER in flight; a response to any other is ignored.
        self._pending: _Attempt | None = None
        self._challenges = 0
        self._unregistering: Deferred | None = None
        self._unregisterTimer: Any = None
        self._stopped: Deferred | None = None

    # -- service -----------------------------------------------------------

    def startService(self) -> None:
        """Send the first REGISTER."""
        Service.startService(self)
        self._stopped = None
        self._callId = str(SipCallId())
        self._fromTag = None
        self._failures = 0
        self._log.info(
            "external line: registering {aor} at {host}:{port} (expires {expires})",
            aor=self._aor(),
            host=self._line.sendTo[0],
            port=self._line.sendTo[1],
            expires=self._line.expires,
        )
        self._register()

    def stopService(self) -> Deferred:
        """
        Cancel every timer, then unregister (Expires: 0) when the line may
        be bound, and fire once the provider answered, or after
        L{UNREGISTER_TIMEOUT} seconds. Safe to call twice: the second call
        returns the same wait.

        The SIP stack must still be running until this fires (the caller
        orders it: see L{callback_tw.service.CallbackService.stopService}).
        """
        if self._stopped is not None:
            return self._stopped
        Service.stopService(self)
        self._cancelTimer()
        mayBeBound = self.state in (LineState.REGISTERED, LineState.REGISTERING)
        self._pending = None
        if not mayBeBound or self._stack.transactionManager is None:
            self._setState(LineState.UNREGISTERED)
            self._stopped = succeed(None)
            return self._stopped
        self._unregistering = Deferred()
        self._unregisterTimer = self._reactor.callLater(
            UNREGISTER_TIMEOUT, self._unregisterTimedOut
        )
        self._challenges = 0
        self._send(expires=0)
        self._stopped = self._unregistering
        return self._stopped

    # -- requests ----------------------------------------------------------

    def _aor(self) -> str:
        return f"sip:{self._line.username}@{self._line.registrarHost}"

    def _register(self) -> None:
        self._timer = None
        self._challenges = 0
        self._setState(LineState.REGISTERING)
        self._send(expires=self._line.expires)

    def _request(self, expires: int, authorization: Any = None) -> Any:
        """A REGISTER of the line; same Call-ID and From tag for its life."""
        line = self._line
        port = None if line.registrarPort == 5060 else line.registrarPort
        ruri = SipURL(host=line.registrarHost, port=port)
        aor = SipURL(username=line.username, host=line.registrarHost)
        fr0m = SipFrom(address=SipAddress(url=aor.getCopy()))
        if self._fromTag is None:
            fr0m.genTag()
            self._fromTag = fr0m.getTag()
        else:
            fr0m.setTag(self._fromTag)
        to = SipTo(address=SipAddress(url=aor.getCopy()))
        contact = SipContact(
            address=SipAddress(
                url=SipURL(
                    username=line.username,
                    host=self._stack.host,
                    port=self._stack.port,
                )
            )
        )
        self._cseq += 1
        request = SipRequest(
            method="REGISTER",
            ruri=ruri,
            fr0m=fr0m,
            to=to,
            contact=contact,
            callid=SipCallId(self._callId),
            cseq=self._cseq,
            target=(tuple(line.sendTo), "udp"),
            expires=SipExpires(number=expires),
            user_agent=USER_AGENT,
        )
        if authorization is not None:
            request.appendHeader(SipHeader(body=authorization))
        return request

    def _send(self, expires: int, authorization: Any = None) -> None:
        tm = self._stack.transactionManager
        attempt = _Attempt(self._request(expires, authorization), expires)
        self._pending = attempt
        try:
            if tm is None:
                raise RuntimeError("the SIP stack is not running")
            tm.newTransaction(
                attempt.request, lambda resp: self._gotResponse(attempt, resp)
            )
        except Exception as e:
            self._log.failure("external line: REGISTER could not be sent")
            if expires == 0:
                self._finishStop()
            else:
                self._failed(503, f"not sent: {e}")

    # -- responses ---------------------------------------------------------

    def _gotResponse(self, attempt: _Attempt, response: Any) -> None:
        if attempt is not self._pending:
            return  # an old attempt, or after stop
        code, reason = response.getSCode()
        if code < 200:
            return
        if code in _CHALLENGES and self._answerChallenge(attempt, response, code):
            return
        self._pending = None
        self.lastStatus = (code, reason)
        if attempt.expires == 0:
            self._unregistered(code, reason)
        elif 200 <= code < 300:
            self._registered(attempt, response)
        elif code == 423 and self._intervalTooBrief(attempt, response):
            return
        else:
            self._failed(code, reason)

    def _answerChallenge(self, attempt: _Attempt, response: Any, code: int) -> bool:
        """
        Send the request again with credentials for the challenge in
        C{response}; L{False} when it cannot or must not be answered (then
        the response is a failure).
        """
        challengeName, authName = _CHALLENGES[code]
        challenges = response.getHFBodys(challengeName)
        stale = any(
            name.lower() == "stale" and value.strip('"').lower() == "true"
            for c in challenges
            for name, value in c.otherparams
        )
        if self._challenges >= _MAX_CHALLENGES or (self._challenges and not stale):
            return False
        for challenge in challenges:
            supported, qop = challenge.supportedAlgorithm()
            if supported:
                break
        else:
            self._log.warn(
                "external line: {code} challenge with no supported digest"
                " algorithm ({algorithms})",
                code=code,
                algorithms=", ".join(str(c.algorithm or "MD5") for c in challenges),
            )
            return False
        self._challenges += 1
        authorization = challenge.genAuthHF(
            self._line.username,
            self._line.password,
            "REGISTER",
            str(attempt.request.getRURI()),
            qop=qop,
        )
        assert authorization.hf_names[0] == authName
        self._send(attempt.expires, authorization)
        return True

    def _intervalTooBrief(self, attempt: _Attempt, response: Any) -> bool:
        """423: ask again at once with the provider's Min-Expires."""
        try:
            minimum = int(str(response.getHFBody("min-expires")).strip())
        except (IndexError, ValueError):
            return False
        if minimum <= attempt.expires or minimum > 86400:
            return False
        self._log.info(
            "external line: provider wants expires >= {minimum}", minimum=minimum
        )
        self._challenges = 0
        self._send(expires=minimum)
        return True

    def _grantedExpiry(self, attempt: _Attempt, response: Any) -> int:
        """
        The expiry of our binding in a 2xx: the C{expires} parameter of our
        Contact (a registrar lists every binding of the AOR), else the
        Expires header, else what we asked for.
        """
        ours = (self._stack.host, int(self._stack.port))
        for contact in response.getHFBodys("contact"):
            url = contact.getUrl()
            if (url.host, int(url.port or 5060)) != ours:
                continue
            value = contact.address.params.get("expires")
            if value is not None and str(value).isdigit():
                return int(value)
        if response.countHFs("expires") > 0:
            try:
                return int(response.getHFBody("expires").getNum())
            except (TypeError, ValueError):
                pass
        return attempt.expires

    def _registered(self, attempt: _Attempt, response: Any) -> None:
        granted = self._grantedExpiry(attempt, response)
        if granted <= 0:
            self._failed(*self.lastStatus, why="binding not kept (expires 0)")
            return
        self.granted = granted
        self._failures = 0
        self.retryDelay = None
        if self.state != LineState.REGISTERED:
            self._log.info(
                "external line registered (expires {expires})", expires=granted
            )
        else:
            self._log.debug(
                "external line refreshed (expires {expires})", expires=granted
            )
        self._setState(LineState.REGISTERED)
        self._timer = self._reactor.callLater(refreshDelay(granted), self._register)

    def _failed(self, code: int, reason: str, why: str = "") -> None:
        if not self.running:
            return
        self.lastStatus = (code, reason)
        self._pending = None
        delay = min(BACKOFF_FIRST * 2**self._failures, BACKOFF_MAX)
        self._failures += 1
        self.retryDelay = delay
        self._setState(LineState.FAILING)
        self._log.warn(
            "external line failing: {code} {reason}{why}, retry in {delay:g} s",
            code=code,
            reason=reason,
            why=f" ({why})" if why else "",
            delay=delay,
        )
        self._cancelTimer()
        self._timer = self._reactor.callLater(delay, self._register)

    # -- stop --------------------------------------------------------------

    def _unregistered(self, code: int, reason: str) -> None:
        if 200 <= code < 300:
            self._log.info(
                "external line unregistered ({code} {reason})", code=code, reason=reason
            )
        else:
            self._log.warn(
                "external line: unregistration answered {code} {reason}",
                code=code,
                reason=reason,
            )
        self._finishStop()

    def _unregisterTimedOut(self) -> None:
        self._unregisterTimer = None
        self._pending = None
        self._log.warn(
            "external line: no answer to the unregistration within {t:g} s",
            t=UNREGISTER_TIMEOUT,
        )
        self._finishStop()

    def _finishStop(self) -> None:
        cancelDelayed(self._unregisterTimer)
        self._unregisterTimer = None
        self._setState(LineState.UNREGISTERED)
        d, self._unregistering = self._unregistering, None
        if d is not None:
            d.callback(None)

    # -- helpers -----------------------------------------------------------

    def _cancelTimer(self) -> None:
        cancelDelayed(self._timer)
        self._timer = None

    def _setState(self, state: LineState) -> None:
        if state != self.state:
            self._log.debug("external line: {old} -> {new}", old=self.state, new=state)
            self.state = state
