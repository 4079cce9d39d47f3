# -*- test-case-name: tests.e2e.test_peers -*-
"""
UDP peers of the end-to-end tests, in trial's reactor: L{DatagramPeer} sends
text and waits for the next datagram that matches; L{ASClient} is the
application server that sends IIF commands and waits for ACK and RESPONSE.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any, Union

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.python.failure import Failure

from tests.e2e.loopback import LOOPBACK, freePort

Match = Union[str, "re.Pattern[str]", Callable[[str], bool]]


def _matcher(match: Match) -> Callable[[str], bool]:
    if callable(match) and not isinstance(match, (str, re.Pattern)):
        return match
    if isinstance(match, re.Pattern):
        return lambda text: match.search(text) is not None
    return lambda text: text.startswith(match)


class DatagramPeer(DatagramProtocol):
    """
    A UDP peer on loopback in the test's reactor: C{send} text, C{expect} the
    next datagram that matches.

    Datagrams are queued as they arrive, so one that arrives before the test
    asks for it is not lost; each one satisfies at most one C{expect}.

    @ivar received: every datagram, as (time.time(), text, (host, port)).
    """

    def __init__(
        self,
        reactor: Any = None,
        port: int | None = None,
        defaultTarget: tuple[str, int] | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        self._reactor = reactor
        self.port = port if port is not None else freePort()
        self.defaultTarget = defaultTarget
        self.received: list[tuple[float, str, tuple[str, int]]] = []
        self._unclaimed: list[tuple[float, str, tuple[str, int]]] = []
        self._waiters: list[tuple[Callable[[str], bool], Deferred]] = []
        self._listening: Any = None

    def start(self) -> DatagramPeer:
        self._listening = self._reactor.listenUDP(self.port, self, interface=LOOPBACK)
        return self

    def stop(self) -> Deferred:
        for _, d in list(self._waiters):
            d.cancel()
        if self._listening is None:
            return defer.succeed(None)
        listening, self._listening = self._listening, None
        return defer.maybeDeferred(listening.stopListening)

    def send(self, text: str | bytes, to: tuple[str, int] | None = None) -> None:
        data = text.encode("ascii") if isinstance(text, str) else text
        target = to or self.defaultTarget
        if target is None:
            raise ValueError("send: no target address")
        self.transport.write(data, target)

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        entry = (time.time(), data.decode("utf-8", "replace"), addr)
        self.received.append(entry)
        for waiter in self._waiters:
            predicate, d = waiter
            if predicate(entry[1]):
                self._waiters.remove(waiter)
                d.callback(entry[1])
                return
        self._unclaimed.append(entry)

    def receivedTexts(self, match: Match | None = None) -> list[str]:
        predicate = _matcher(match) if match is not None else (lambda text: True)
        return [text for _, text, _ in self.received if predicate(text)]

    def expect(self, match: Match, timeout: float = 10.0) -> Deferred:
        """
        Fire with the text of the next unclaimed datagram that C{match}es (a
        prefix, a compiled regular expression searched, or a predicate);
        errback with L{defer.TimeoutError} (listing what did arrive) after
        C{timeout} seconds.
        """
        predicate = _matcher(match)
        for entry in self._unclaimed:
            if predicate(entry[1]):
                self._unclaimed.remove(entry)
                return defer.succeed(entry[1])
        d: Deferred = Deferred()
        waiter = (predicate, d)
        self._waiters.append(waiter)

        def timedOut(failure: Failure) -> Failure:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            if failure.check(defer.CancelledError, defer.TimeoutError):
                got = (
                    "\n".join(
                        f"  {text!r} from {addr}" for _, text, addr in self.received
                    )
                    or "  (nothing)"
                )
                raise defer.TimeoutError(
                    f"no datagram matching {match!r} within {timeout} s;"
                    f" received:\n{got}"
                )
            return failure

        d.addTimeout(timeout, self._reactor)
        d.addErrback(timedOut)
        return d

    def expectNone(self, match: Match, within: float) -> Deferred:
        """
        Fire with C{None} if no (unclaimed) datagram matching C{match} arrives
        within C{within} seconds; errback with C{AssertionError} naming it if
        one does.
        """
        predicate = _matcher(match)
        d: Deferred = self.expect(predicate, within)

        def arrived(text: str) -> None:
            raise AssertionError(f"unexpected datagram {text!r} (matching {match!r})")

        def quiet(failure: Failure) -> None:
            failure.trap(defer.TimeoutError)

        d.addCallbacks(arrived, quiet)
        return d


def parseIIF(text: str) -> tuple[str, dict[str, str]]:
    """
    C{"ACK: id=1;code=ok;"} -> C{("ACK", {"id": "1", "code": "ok"})}.
    """
    method, _, rest = text.strip().partition(":")
    params: dict[str, str] = {}
    for item in rest.strip().split(";"):
        if item.strip():
            name, _, value = item.partition("=")
            params[name.strip()] = value.strip()
    return method.strip(), params


class ASClient(DatagramPeer):
    """
    An application server: sends IIF commands to the server's IIF port from
    its own loopback port and waits for ACK and RESPONSE datagrams.
    """

    def __init__(
        self,
        reactor: Any = None,
        port: int | None = None,
        server: tuple[str, int] | None = None,
    ) -> None:
        super().__init__(reactor, port, server)

    def request(
        self,
        callbackId: str,
        user1: str,
        user2: str,
        duration: int = 3600,
        **extra: Any,
    ) -> str:
        """
        Send C{REQUEST: id=..;user1=..;user2=..;duration=..;} (plus C{extra}
        parameters); return the text sent.
        """
        params = {
            "id": callbackId,
            "user1": user1,
            "user2": user2,
            "duration": duration,
            **extra,
        }
        text = "REQUEST: " + "".join(f"{k}={v};" for k, v in params.items())
        self.send(text)
        return text

    def expectAck(self, callbackId: str, timeout: float = 5.0) -> Deferred:
        """
        Fire with the C{code} of the next C{ACK: id=<callbackId>;...}.
        """
        d = self.expect(_iifMatcher("ACK", callbackId), timeout)
        d.addCallback(lambda text: parseIIF(text)[1].get("code"))
        return d

    def expectResponse(self, callbackId: str, timeout: float = 20.0) -> Deferred:
        """
        Fire with (real_duration as int, arrival time.time()) of the next
        C{RESPONSE: id=<callbackId>;...}.
        """
        d = self.expect(_iifMatcher("RESPONSE", callbackId), timeout)

        def parsed(text: str) -> tuple[int, float]:
            when = next(t for t, got, _ in reversed(self.received) if got == text)
            return int(parseIIF(text)[1]["real_duration"]), when

        d.addCallback(parsed)
        return d


def _iifMatcher(method: str, callbackId: str) -> Callable[[str], bool]:
    def predicate(text: str) -> bool:
        got, params = parseIIF(text)
        return got == method and params.get("id") == callbackId

    return predicate
