# -*- test-case-name: tests.test_iif_protocol -*-
"""
The inner interface (IIF) server: a UDP L{DatagramProtocol} between application servers
(AS) and the callback manager.

It decides who may talk to us (the peer-server allowlist), turns datagrams into commands
with L{callback_tw.iif.message}, hands them to the manager, and writes the ACK and the
RESPONSE when the call's C{accepted} and C{finished} Deferreds fire.

UDP loses and repeats datagrams and an AS retransmits when it misses our ACK, so REQUEST
is idempotent here: a repeated REQUEST (same id, same parameters) is answered again from
memory and never places a second call.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from callback_tw.callback.errors import CallbackRefused
from callback_tw.iif.message import (
    Cancel,
    MessageError,
    Request,
    formatAck,
    formatResponse,
    parseMessage,
)

__all__ = ["IIFProtocol"]

# States of a remembered REQUEST.
_PENDING = "pending"  # startCallback returned, call.accepted has not fired yet
_RUNNING = "running"  # ACK ok sent, call.finished has not been reported yet
_FINISHED = "finished"  # RESPONSE sent; remembered for requestMemory seconds
_REFUSED = "refused"  # ACK fail sent; forgotten


def _normaliseHost(host: str) -> str:
    """
    Canonical text of an IP literal, so C{"::ffff:127.0.0.1"}, C{"0:0::1"} and
    C{"::1"} compare as the addresses they are.

    @raise ValueError: if C{host} is not an IP literal.
    """
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


def _formatSource(addr: tuple[Any, ...]) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


class _Remembered:
    """
    What we know about one REQUEST id.

    @ivar request: the REQUEST that created the callback.
    @ivar source: the address that REQUEST came from; its RESPONSE goes there.
    @ivar state: one of the C{_PENDING}... constants.
    @ivar realDuration: set when the call finished (possibly before it was accepted).
    @ivar cause: the release cause reported by the call, for the log.
    """

    __slots__ = ("request", "source", "state", "realDuration", "cause")

    def __init__(self, request: Request, source: tuple[Any, ...]) -> None:
        self.request = request
        self.source = source
        self.state = _PENDING
        self.realDuration: int | None = None
        self.cause = ""


class _DropLimiter:
    """
    Decide which dropped datagrams get a log line, so a flood cannot fill the log.

    Each source host gets at most one line per C{interval} seconds; the next line says
    how many drops were suppressed in between. At most C{maxSources} hosts are tracked
    per interval; beyond that (a flood from many, maybe spoofed, addresses) all other
    sources share one line per interval.
    """

    def __init__(self, interval: float, maxSources: int) -> None:
        self._interval = interval
        self._maxSources = maxSources
        # host -> [time of its last line, drops suppressed since]; oldest line first.
        self._sources: OrderedDict[str, list[float]] = OrderedDict()
        self._othersLastLine: float | None = None
        self._othersSuppressed = 0

    def drop(self, host: str, now: float) -> tuple[bool, int] | None:
        """
        Count one dropped datagram from C{host}.

        @return: L{None} if it should not be logged, else C{(aggregate, suppressed)}:
            whether the line stands for many sources, and how many drops were not logged
            since the previous line of the same kind.
        """
        state = self._sources.get(host)
        if state is not None:
            if now - state[0] < self._interval:
                state[1] += 1
                return None
            suppressed = int(state[1])
            self._sources.move_to_end(host)
            state[:] = [now, 0]
            return (False, suppressed)
        while self._sources:
            oldest = next(iter(self._sources.values()))
            if now - oldest[0] < self._interval:
                break
            self._sources.popitem(last=False)
        if len(self._sources) < self._maxSources:
            self._sources[host] = [now, 0]
            return (False, 0)
        if (
            self._othersLastLine is not None
            and now - self._othersLastLine < self._interval
        ):
            self._othersSuppressed += 1
            return None
        suppressed, self._othersSuppressed = self._othersSuppressed, 0
        self._othersLastLine = now
        return (True, suppressed)


class IIFProtocol(DatagramProtocol):
    """
    Serve the IIF on one UDP port.

    @ivar dropLogInterval: seconds between two log lines about drops from one source.
    @ivar maxDropSources: non-peer sources logged individually per interval.
    """

    _log = Logger()
    dropLogInterval = 10.0
    maxDropSources = 32

    def __init__(
        self,
        manager: Any,
        peers: Iterable[tuple[str, int | None]],
        maxDuration: int,
        reactor: Any = None,
        requestMemory: float = 3600.0,
        maxRemembered: int = 100_000,
    ) -> None:
        """
        @param manager: the callback manager: C{startCallback(request) -> call} (may
            raise L{CallbackRefused}) and C{cancelCallback(callbackId) -> bool}. A call
            has the Deferreds C{accepted} (fires L{None} or fails with
            L{CallbackRefused}) and C{finished} (fires with an object with
            C{realDuration} and C{cause}).
        @param peers: the peer servers as C{(ip literal, port or None)}; only they may
            send commands, from that port exactly when one is given, from any port
            otherwise.
        @param maxDuration: the largest C{duration} a REQUEST may ask for.
        @param reactor: an L{IReactorTime}; the global reactor by default.
        @param requestMemory: seconds a finished REQUEST id is remembered, so a repeated
            REQUEST gets its ACK and RESPONSE again instead of a second call.
        @param maxRemembered: the most finished ids remembered; the oldest go first.
            Running callbacks are always remembered and do not count.
        @raise ValueError: if a peer host is not an IP literal.
        """
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        self._reactor = reactor
        self._manager = manager
        self._maxDuration = maxDuration
        self._requestMemory = requestMemory
        self._maxRemembered = maxRemembered
        self._peers: dict[str, set[int] | None] = {}
        for host, port in peers:
            try:
                key = _normaliseHost(host)
            except ValueError:
                raise ValueError(f"peer host {host!r} is not an IP address") from None
            if port is None or self._peers.get(key, set()) is None:
                self._peers[key] = None
            else:
                self._peers.setdefault(key, set()).add(port)  # type: ignore[union-attr]
        self._drops = _DropLimiter(self.dropLogInterval, self.maxDropSources)
        self._remembered: dict[str, _Remembered] = {}
        # Finished ids in the order they finished -> time they finished.
        self._finished: OrderedDict[str, float] = OrderedDict()
        self._expiryCall: IDelayedCall | None = None
        self._running = False
        # While not None, RESPONSEs are queued here instead of sent (see _cancel).
        self._heldResponses: list[tuple[bytes, tuple[Any, ...]]] | None = None

    # -- DatagramProtocol

    def startProtocol(self) -> None:
        self._running = True
        self._scheduleExpiry()

    def stopProtocol(self) -> None:
        """
        Stop the expiry timer; finished ids left over are then expired lazily.
        """
        self._running = False
        if self._expiryCall is not None and self._expiryCall.active():
            self._expiryCall.cancel()
        self._expiryCall = None

    def datagramReceived(self, datagram: bytes, addr: tuple[Any, ...]) -> None:
        """
        Handle one IIF command; anything from a non-peer is dropped without an answer.
        """
        if not self._isPeer(addr):
            self._dropped(addr)
            return
        try:
            message = parseMessage(datagram, self._maxDuration)
        except MessageError as e:
            self._log.warn(
                "IIF invalid command from {source} (id {callbackId!r}): {reason}",
                source=_formatSource(addr),
                callbackId=e.callbackId,
                reason=e.reason,
            )
            self._send(formatAck(e.callbackId, False), addr)
            return
        if message.ignored:
            self._log.info(
                "IIF {callbackId}: ignoring unknown parameters {names}",
                callbackId=message.callbackId,
                names=", ".join(message.ignored),
            )
        if isinstance(message, Cancel):
            self._cancel(message, addr)
        else:
            self._request(message, addr)

    # -- the allowlist

    def _isPeer(self, addr: tuple[Any, ...]) -> bool:
        try:
            host = _normaliseHost(addr[0])
        except ValueError:
            return False
        if host not in self._peers:
            return False
        ports = self._peers[host]
        return ports is None or addr[1] in ports

    def _dropped(self, addr: tuple[Any, ...]) -> None:
        verdict = self._drops.drop(str(addr[0]), self._reactor.seconds())
        if verdict is None:
            return
        aggregate, suppressed = verdict
        if aggregate:
            self._log.warn(
                "IIF dropped datagram from non-peer {source} "
                "(too many non-peer sources; "
                "{suppressed} more drops from them not logged)",
                source=_formatSource(addr),
                suppressed=suppressed,
            )
        else:
            self._log.warn(
                "IIF dropped datagram from non-peer {source} "
                "({suppressed} more drops from this host not logged)",
                source=_formatSource(addr),
                suppressed=suppressed,
            )

    # -- REQUEST

    def _request(self, request: Request, addr: tuple[Any, ...]) -> None:
        callbackId = request.callbackId
        self._expire()
        known = self._remembered.get(callbackId)
        if known is not None:
            self._repeated(known, request, addr)
            return
        self._log.info(
            "IIF REQUEST {callbackId} from {source}: user1={user1} user2={user2} "
            "duration={duration}",
            callbackId=callbackId,
            source=_formatSource(addr),
            user1=request.user1,
            user2=request.user2,
            duration=request.duration,
        )
        try:
            call = self._manager.startCallback(request)
        except CallbackRefused as e:
            self._log.warn(
                "IIF REQUEST {callbackId} refused: {reason}",
                callbackId=callbackId,
                reason=e.reason,
            )
            self._send(formatAck(callbackId, False), addr)
            return
        except Exception:
            self._log.failure(
                "IIF REQUEST {callbackId}: the manager failed", callbackId=callbackId
            )
            self._send(formatAck(callbackId, False), addr)
            return
        entry = _Remembered(request, addr)
        self._remembered[callbackId] = entry
        call.accepted.addCallbacks(
            self._accepted,
            self._notAccepted,
            callbackArgs=(entry,),
            errbackArgs=(entry,),
        ).addErrback(self._bug, entry)
        call.finished.addCallbacks(
            self._finishedOk,
            self._finishedError,
            callbackArgs=(entry,),
            errbackArgs=(entry,),
        ).addErrback(self._bug, entry)

    def _repeated(
        self, known: _Remembered, request: Request, addr: tuple[Any, ...]
    ) -> None:
        callbackId = request.callbackId
        source = _formatSource(addr)
        if known.request != request:
            self._log.warn(
                "IIF REQUEST {callbackId} from {source} reuses the id of a {state} "
                "callback with different parameters; refused",
                callbackId=callbackId,
                source=source,
                state=known.state,
            )
            self._send(formatAck(callbackId, False), addr)
            return
        self._log.info(
            "IIF REQUEST {callbackId} from {source} repeated ({state} callback)",
            callbackId=callbackId,
            source=source,
            state=known.state,
        )
        if known.state == _PENDING:
            # Its ACK is sent as soon as the call says whether it accepted.
            return
        self._send(formatAck(callbackId, True), addr)
        if known.state == _FINISHED:
            assert known.realDuration is not None
            self._send(formatResponse(callbackId, known.realDuration), addr)

    def _accepted(self, _: object, entry: _Remembered) -> None:
        if entry.state != _PENDING:
            return
        entry.state = _RUNNING
        self._log.info(
            "IIF REQUEST {callbackId} accepted", callbackId=entry.request.callbackId
        )
        self._send(formatAck(entry.request.callbackId, True), entry.source)
        if entry.realDuration is not None:
            self._finish(entry)

    def _notAccepted(self, failure: Failure, entry: _Remembered) -> None:
        callbackId = entry.request.callbackId
        if failure.check(CallbackRefused):
            self._log.warn(
                "IIF REQUEST {callbackId} refused: {reason}",
                callbackId=callbackId,
                reason=failure.value.reason,
            )
        else:
            self._log.failure(
                "IIF REQUEST {callbackId} failed to start",
                failure,
                callbackId=callbackId,
            )
        if entry.state != _PENDING:
            return
        entry.state = _REFUSED
        # A refused REQUEST is not remembered: a retry is evaluated afresh.
        if self._remembered.get(callbackId) is entry:
            del self._remembered[callbackId]
        self._send(formatAck(callbackId, False), entry.source)

    def _finishedOk(self, result: Any, entry: _Remembered) -> None:
        self._ended(entry, int(result.realDuration), str(result.cause))

    def _finishedError(self, failure: Failure, entry: _Remembered) -> None:
        self._log.failure(
            "IIF callback {callbackId} ended with an error; reporting real_duration=0",
            failure,
            callbackId=entry.request.callbackId,
        )
        self._ended(entry, 0, "error: " + failure.getErrorMessage())

    def _ended(self, entry: _Remembered, realDuration: int, cause: str) -> None:
        if entry.state in (_REFUSED, _FINISHED) or entry.realDuration is not None:
            # Refused: the AS got code=fail and expects no RESPONSE.
            return
        entry.realDuration = max(0, realDuration)
        entry.cause = cause
        if entry.state == _RUNNING:
            self._finish(entry)
        # Still _PENDING: the RESPONSE follows the ACK in _accepted.

    def _finish(self, entry: _Remembered) -> None:
        callbackId = entry.request.callbackId
        assert entry.realDuration is not None
        entry.state = _FINISHED
        self._log.info(
            "IIF callback {callbackId} finished: real_duration={realDuration} "
            "cause={cause}",
            callbackId=callbackId,
            realDuration=entry.realDuration,
            cause=entry.cause,
        )
        self._sendResponse(formatResponse(callbackId, entry.realDuration), entry.source)
        if self._remembered.get(callbackId) is entry:
            self._finished[callbackId] = self._reactor.seconds()
            while len(self._finished) > self._maxRemembered:
                oldest, _ = self._finished.popitem(last=False)
                del self._remembered[oldest]
            self._scheduleExpiry()

    def _bug(self, failure: Failure, entry: _Remembered) -> None:
        self._log.failure(
            "IIF callback {callbackId}: error in the IIF protocol",
            failure,
            callbackId=entry.request.callbackId,
        )

    # -- memory of finished ids

    def _expire(self) -> None:
        """
        Forget the finished ids older than C{requestMemory}.
        """
        deadline = self._reactor.seconds() - self._requestMemory
        while self._finished:
            callbackId, finishedAt = next(iter(self._finished.items()))
            if finishedAt > deadline:
                break
            del self._finished[callbackId]
            del self._remembered[callbackId]

    def _scheduleExpiry(self) -> None:
        """
        Keep one timer, due when the oldest finished id expires, while we are listening.
        """
        if not self._running or not self._finished:
            return
        if self._expiryCall is not None and self._expiryCall.active():
            return
        oldest = next(iter(self._finished.values()))
        delay = max(0.0, oldest + self._requestMemory - self._reactor.seconds())
        self._expiryCall = self._reactor.callLater(delay, self._expiryDue)

    def _expiryDue(self) -> None:
        self._expiryCall = None
        self._expire()
        self._scheduleExpiry()

    # -- CANCEL

    def _cancel(self, cancel: Cancel, addr: tuple[Any, ...]) -> None:
        callbackId = cancel.callbackId
        self._log.info(
            "IIF CANCEL {callbackId} from {source}",
            callbackId=callbackId,
            source=_formatSource(addr),
        )
        # A manager that ends the call synchronously must not get its RESPONSE on the
        # wire before this CANCEL's ACK.
        self._heldResponses = []
        try:
            found = bool(self._manager.cancelCallback(callbackId))
        except Exception:
            self._log.failure(
                "IIF CANCEL {callbackId}: the manager failed", callbackId=callbackId
            )
            found = False
        finally:
            held, self._heldResponses = self._heldResponses, None
        if not found:
            self._log.warn(
                "IIF CANCEL {callbackId}: no running callback with this id",
                callbackId=callbackId,
            )
        self._send(formatAck(callbackId, found), addr)
        for data, dest in held:
            self._send(data, dest)

    # -- output

    def _sendResponse(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if self._heldResponses is not None:
            self._heldResponses.append((data, addr))
        else:
            self._send(data, addr)

    def _send(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if self.transport is None:
            self._log.warn(
                "IIF not listening; lost {data!r} to {destination}",
                data=data,
                destination=_formatSource(addr),
            )
            return
        try:
            self.transport.write(data, addr)
        except OSError:
            self._log.failure(
                "IIF could not send {data!r} to {destination}",
                data=data,
                destination=_formatSource(addr),
            )
