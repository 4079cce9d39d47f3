# -*- test-case-name: tests.test_client -*-
"""
The application server's (AS) side of the inner interface (IIF), as a library.

UDP loses datagrams, so an AS cannot just send a C{REQUEST} and wait: it must
retransmit until the C{ACK} arrives and, if the C{RESPONSE} is lost, ask for
it again.  The server makes both safe: a repeated C{REQUEST} (same id, same
parameters) never places a second call; it is answered with the same C{ACK}
and, once the callback has ended, with its C{RESPONSE} again.  Every AS would
otherwise write that loop itself; here it is once, with a Twisted API
(L{CallbackClient}, Deferreds) and a blocking one for scripts
(L{BlockingCallbackClient}, a plain socket, no reactor).  Both run the same
code: the blocking client drives a L{Clock} with the wall clock.

Replies are parsed strictly (exactly what the server writes) and only from
the server's address, so a stray or forged datagram cannot finish a callback.
With a key, every datagram sent ends with C{ts=<unix seconds>;sig=<hex>;}
(HMAC-SHA256 over the bytes before C{sig=}) and every reply must carry a
valid, fresh signature made the same way.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.python.failure import Failure

from callback_tw.iif.message import (
    Ack,
    Response,
    formatCancel,
    formatRequest,
    parseServerReply,
)
from callback_tw.iif.signing import SignatureError, sign, verify
from callback_tw.timers import cancelDelayed

__all__ = [
    "Ack",
    "AckTimeout",
    "BlockingCallbackClient",
    "CallbackClient",
    "CallbackRefused",
    "PendingCallback",
    "Response",
    "ResponseLost",
    "RetryPolicy",
    "formatCancel",
    "formatRequest",
    "parseReply",
]


class AckTimeout(Exception):
    """The server answered none of the attempts to send a command."""


class CallbackRefused(Exception):
    """The REQUEST got C{ACK ... code=fail}: no call was placed."""


class ResponseLost(Exception):
    """The RESPONSE is overdue and the server refused or ignored the requery."""


@dataclass(frozen=True)
class RetryPolicy:
    """
    When a command is sent again while its ACK is missing.

    @ivar initial: seconds before the first retransmission; each next wait doubles.
    @ivar cap: the longest wait between two sends.
    @ivar attempts: sends in all (the first one included); after the last one the
        client waits one more (capped) interval, then gives up.
    """

    initial: float = 0.5
    cap: float = 4.0
    attempts: int = 7

    def waits(self) -> Iterator[float]:
        """
        The wait after each send, one per attempt (the last one before giving up).
        """
        for index in range(self.attempts):
            yield min(self.initial * 2**index, self.cap)


def parseReply(
    data: bytes, key: bytes | None = None, now: float = 0.0, window: float = 30.0
) -> Ack | Response:
    """
    Decode an ACK or a RESPONSE exactly as the server writes it.

    @param key: when set, the reply must end with a valid signature made at most
        C{window} seconds from C{now}; without it, a signature is allowed and
        not checked.
    @raise ValueError: for anything else.
    """
    if key is not None:
        try:
            verify(data, key, now, window)
        except SignatureError as e:
            raise ValueError(f"reply refused: {e}") from None
    return parseServerReply(data)


def _normaliseHost(host: str) -> str:
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


class _Sender:
    """
    One command sent until it is answered: retransmission with back-off.

    The owner calls L{stop} when the answer comes; C{giveUp} runs when every
    attempt went unanswered.
    """

    def __init__(
        self,
        client: CallbackClient,
        data: bytes,
        giveUp: Callable[[], None],
    ) -> None:
        self._client = client
        self._data = data
        self._giveUp = giveUp
        self._waits = client.retry.waits()
        self._call: IDelayedCall | None = None
        self.attempts = 0

    def start(self) -> _Sender:
        self._send()
        return self

    def _send(self) -> None:
        self._call = None
        wait = next(self._waits, None)
        if wait is None:
            self._giveUp()
            return
        self.attempts += 1
        self._client._write(self._data)
        self._call = self._client._reactor.callLater(wait, self._send)

    def stop(self) -> None:
        cancelDelayed(self._call)
        self._call = None


class PendingCallback:
    """
    One REQUEST in flight.

    @ivar callbackId: its id.
    @ivar acked: fires with C{True} (C{code=ok}) or C{False} (C{code=fail});
        errbacks with L{AckTimeout} when the server never answered.
    @ivar finished: fires with C{real_duration} (an int); errbacks with
        L{CallbackRefused} after C{code=fail}, L{AckTimeout}, or L{ResponseLost}.
        Cancelling either Deferred abandons the callback on our side (the
        server's call goes on; send a CANCEL to end it).
    @ivar requeries: how many times the overdue RESPONSE was asked for again.
    """

    _log = Logger()

    def __init__(
        self, client: CallbackClient, callbackId: str, build: Callable[[], bytes]
    ) -> None:
        self._client = client
        self.callbackId = callbackId
        self._build = build
        self._duration = 0
        self.acked: Deferred[bool] = Deferred(self._abandon)
        self.finished: Deferred[int] = Deferred(self._abandon)
        self.requeries = 0
        self._sender: _Sender | None = None
        self._overdue: IDelayedCall | None = None
        self._whenAcked: list[Callable[[], None]] = []

    @property
    def awaitingAck(self) -> bool:
        """
        Whether a REQUEST of ours is out without its ACK (first send or requery).
        """
        return self._sender is not None

    def _start(self, duration: int) -> None:
        self._duration = duration
        self._sender = _Sender(self._client, self._build(), self._noAck).start()

    def _ackReceived(self, ok: bool) -> None:
        if self._sender is None:
            return  # the ACK of a retransmission we no longer wait for
        self._sender.stop()
        self._sender = None
        if not self.acked.called:
            self.acked.callback(ok)
            if not ok:
                self._close(Failure(CallbackRefused(self.callbackId)))
                return
            self._schedule(self._duration + self._client.responseMargin)
        elif not ok:
            self._close(Failure(ResponseLost("the server refused the requery")))
            return
        else:
            self._schedule(self._client.requeryInterval)
        self._runWhenAcked()

    def _runWhenAcked(self) -> None:
        waiting, self._whenAcked = self._whenAcked, []
        for f in waiting:
            f()

    def _responseReceived(self, realDuration: int) -> None:
        if not self.acked.called:
            # A reordered RESPONSE: the server only sends one after its ACK ok.
            self._ackReceived(True)
        self._close(realDuration)

    def _schedule(self, delay: float) -> None:
        cancelDelayed(self._overdue)
        self._overdue = self._client._reactor.callLater(delay, self._requery)

    def _requery(self) -> None:
        self._overdue = None
        if self.callbackId in self._client._cancels:
            # The ACK of one would be taken for the other's: wait for the CANCEL's.
            self._schedule(self._client.retry.cap)
            return
        self.requeries += 1
        self._log.info(
            "callback {id}: RESPONSE overdue, asking again ({n})",
            id=self.callbackId,
            n=self.requeries,
        )
        self._sender = _Sender(self._client, self._build(), self._noAck).start()

    def _noAck(self) -> None:
        self._sender = None
        if self.acked.called:
            failure = Failure(ResponseLost("the server did not answer the requery"))
        else:
            failure = Failure(AckTimeout(f"{self.callbackId}: no ACK"))
        self._close(failure)

    def _abandon(self, _: Deferred) -> None:
        self._close(Failure(CancelledError()))

    def _close(self, result: int | Failure) -> None:
        if self._sender is not None:
            self._sender.stop()
            self._sender = None
        cancelDelayed(self._overdue)
        self._overdue = None
        if self._client._requests.get(self.callbackId) is self:
            del self._client._requests[self.callbackId]
        if not self.acked.called:
            failure = result if isinstance(result, Failure) else None
            self.acked.errback(failure or Failure(CancelledError()))
        if not self.finished.called:
            self.finished.callback(result)
        self._runWhenAcked()


class _ClientProtocol(DatagramProtocol):
    def __init__(self, client: CallbackClient) -> None:
        self._client = client

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self._client.datagramReceived(datagram, addr)


class CallbackClient:
    """
    An AS's client of one callback server, on a Twisted reactor.

    @ivar retry: when commands are retransmitted (L{RetryPolicy}).
    @ivar responseMargin: seconds after C{duration}, counted from the ACK ok,
        before a missing RESPONSE is asked for again: the server's
        C{no_answer_timeout} for user1 (60 s by default) plus the release.
    @ivar requeryInterval: seconds between two requeries while the server
        answers C{code=ok} (the callback still runs).
    @ivar signatureWindow: largest accepted C{|now - ts|} of a signed reply.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        server: tuple[str, int],
        bind: tuple[str, int] = ("", 0),
        key: bytes | None = None,
        retry: RetryPolicy | None = None,
        responseMargin: float = 90.0,
        requeryInterval: float = 30.0,
        signatureWindow: float = 30.0,
    ) -> None:
        """
        @param server: the server's IIF address; the host is an IP literal.
        @param bind: our local address (the server knows its peers by it).
        @param key: the secret shared with the server, or L{None} to not sign.
        @raise ValueError: if the server's host is not an IP address.
        """
        self._reactor = reactor
        self._server = (_normaliseHost(server[0]), int(server[1]))
        self._serverAddress = server
        self._bind = bind
        self._key = key
        self.retry = retry if retry is not None else RetryPolicy()
        self.responseMargin = responseMargin
        self.requeryInterval = requeryInterval
        self.signatureWindow = signatureWindow
        self._port: Any = None
        self._writer: Callable[[bytes, tuple[str, int]], None] | None = None
        self._requests: dict[str, PendingCallback] = {}
        self._cancels: dict[str, tuple[_Sender, Deferred[bool]]] = {}

    def start(self) -> None:
        """
        Bind our UDP socket.

        @raise twisted.internet.error.CannotListenError: if C{bind} is not free.
        """
        self._port = self._reactor.listenUDP(
            self._bind[1], _ClientProtocol(self), interface=self._bind[0]
        )
        self._writer = self._port.write

    def stop(self) -> Deferred[None]:
        """
        Abandon every command in flight (their Deferreds fail with
        L{CancelledError}) and close the socket.
        """
        for pending in list(self._requests.values()):
            pending._close(Failure(CancelledError()))
        for callbackId in list(self._cancels):
            self._cancelDone(callbackId, Failure(CancelledError()))
        port, self._port, self._writer = self._port, None, None
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening)

    def request(
        self,
        callbackId: str,
        user1: str,
        user2: str,
        duration: int,
        annId1: str | None = None,
        annId2: str | None = None,
        annDigit2: str | None = None,
    ) -> PendingCallback:
        """
        Send a REQUEST and follow it to its RESPONSE.

        The same bytes are retransmitted until the ACK; when the RESPONSE is
        overdue the REQUEST is sent again (freshly signed: the server answers
        a repeated REQUEST of an ended callback with its RESPONSE).

        @raise ValueError: for a value that breaks the framing, or an id that
            is already in flight on this client.
        """
        data = formatRequest(
            callbackId, user1, user2, duration, annId1, annId2, annDigit2
        )
        if callbackId in self._requests:
            raise ValueError(f"callback {callbackId!r} is already in flight")
        pending = PendingCallback(self, callbackId, lambda: self._signed(data))
        self._requests[callbackId] = pending
        pending._start(duration)
        return pending

    def cancel(self, callbackId: str) -> Deferred[bool]:
        """
        Send C{CANCEL: id=..;} until its ACK; fire with C{True} for C{code=ok}.

        If our REQUEST of that id still waits for its ACK, the CANCEL waits for
        it: the two ACKs could not be told apart.

        @raise ValueError: for a bad id or a CANCEL of that id already in flight.
        """
        data = formatCancel(callbackId)
        if callbackId in self._cancels:
            raise ValueError(f"a CANCEL of {callbackId!r} is already in flight")
        done: Deferred[bool] = Deferred(lambda _: self._cancelDone(callbackId, None))

        def giveUp() -> None:
            self._cancelDone(callbackId, Failure(AckTimeout(f"{callbackId}: no ACK")))

        sender = _Sender(self, self._signed(data), giveUp)
        self._cancels[callbackId] = (sender, done)
        pending = self._requests.get(callbackId)
        if pending is not None and pending.awaitingAck:
            pending._whenAcked.append(self._startCancel(callbackId, sender))
        else:
            sender.start()
        return done

    def _startCancel(self, callbackId: str, sender: _Sender) -> Callable[[], None]:
        def start() -> None:
            if self._cancels.get(callbackId, (None,))[0] is sender:
                sender.start()

        return start

    def _cancelDone(self, callbackId: str, result: bool | Failure | None) -> None:
        sender, done = self._cancels.pop(callbackId)
        sender.stop()
        if not done.called and result is not None:
            done.callback(result)

    def _signed(self, data: bytes) -> bytes:
        if self._key is None:
            return data
        return sign(data, self._key, self._reactor.seconds())

    def _write(self, data: bytes) -> None:
        if self._writer is None:
            raise RuntimeError("CallbackClient.start() was not called")
        self._writer(data, self._serverAddress)

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        """
        Take a reply: only from the server, only a valid one, only for an id
        in flight; anything else is dropped with a debug line.
        """
        try:
            fromServer = (_normaliseHost(addr[0]), int(addr[1])) == self._server
        except ValueError:
            fromServer = False
        if not fromServer:
            self._log.debug("dropped a datagram from {addr!r}", addr=addr)
            return
        try:
            reply = parseReply(
                datagram, self._key, self._reactor.seconds(), self.signatureWindow
            )
        except ValueError as e:
            self._log.debug("dropped {data!r}: {why}", data=datagram[:100], why=str(e))
            return
        pending = self._requests.get(reply.callbackId)
        if isinstance(reply, Response):
            if pending is not None:
                pending._responseReceived(reply.realDuration)
        elif pending is not None and pending.awaitingAck:
            pending._ackReceived(reply.ok)
        elif reply.callbackId in self._cancels:
            if self._cancels[reply.callbackId][0].attempts:
                self._cancelDone(reply.callbackId, reply.ok)


class BlockingCallbackClient:
    """
    The same client for plain Python (scripts, WSGI workers): a UDP socket and
    timeouts, no reactor.  Each call blocks until its answer.

    Use it as a context manager, or call L{close}.
    """

    def __init__(
        self,
        server: tuple[str, int],
        bind: tuple[str, int] = ("", 0),
        key: bytes | None = None,
        **options: Any,
    ) -> None:
        """
        @param options: L{CallbackClient}'s C{retry}, C{responseMargin},
            C{requeryInterval} and C{signatureWindow}.
        """
        self._clock = Clock()
        self._clock.rightNow = time.time()
        self._client = CallbackClient(self._clock, server, bind, key, **options)
        family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._socket.bind(bind)
        except OSError:
            self._socket.close()
            raise
        self._client._writer = self._socket.sendto

    def __enter__(self) -> BlockingCallbackClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.stop()
        self._socket.close()

    def request(
        self,
        callbackId: str,
        user1: str,
        user2: str,
        duration: int,
        annId1: str | None = None,
        annId2: str | None = None,
        annDigit2: str | None = None,
        timeout: float | None = None,
        onAck: Callable[[bool], object] | None = None,
    ) -> int:
        """
        Send a REQUEST; return its C{real_duration} once the RESPONSE is in.

        @param timeout: seconds to wait in all, or L{None} for as long as the
            server says the callback runs.
        @param onAck: called with the ACK's C{ok} as soon as it arrives.
        @raise CallbackRefused: C{code=fail}; L{AckTimeout}, L{ResponseLost};
            L{TimeoutError} after C{timeout} (the server's call goes on).
        """
        pending = self._client.request(
            callbackId, user1, user2, duration, annId1, annId2, annDigit2
        )
        if onAck is not None:
            pending.acked.addCallback(onAck)
        pending.acked.addErrback(lambda _: None)
        return self._wait(pending.finished, timeout)

    def cancel(self, callbackId: str, timeout: float | None = None) -> bool:
        """
        Send a CANCEL; return whether the server answered C{code=ok}.

        @raise AckTimeout: no answer; L{TimeoutError} after C{timeout}.
        """
        return self._wait(self._client.cancel(callbackId), timeout)

    def _wait(self, d: Deferred[Any], timeout: float | None) -> Any:
        deadline = None if timeout is None else time.time() + timeout
        outcome: list[Any] = []
        d.addBoth(outcome.append)
        while not outcome:
            now = time.time()
            self._clock.advance(max(0.0, now - self._clock.seconds()))
            if outcome:
                break
            if deadline is not None and now >= deadline:
                d.cancel()
                raise TimeoutError(f"no answer within {timeout} s")
            due = [call.getTime() for call in self._clock.getDelayedCalls()]
            wait = min(due, default=now + 1.0) - now
            if deadline is not None:
                wait = min(wait, deadline - now)
            self._socket.settimeout(max(wait, 0.001))
            try:
                datagram, addr = self._socket.recvfrom(65535)
            except TimeoutError:
                continue
            self._clock.advance(max(0.0, time.time() - self._clock.seconds()))
            self._client.datagramReceived(datagram, addr)
        result = outcome[0]
        if isinstance(result, Failure):
            result.raiseException()
        return result
