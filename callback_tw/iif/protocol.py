# -*- test-case-name: tests.test_iif_protocol -*-
"""
The inner interface (IIF) server: a UDP L{DatagramProtocol} between application servers
(AS) and the callback manager.

It decides who may talk to us (the peer-server allowlist), turns datagrams into commands
with L{callback_tw.iif.message}, hands them to the manager, writes the ACK as soon as
the manager has started (or refused) the callback, and the RESPONSE when the call's
C{finished} Deferred fires.

UDP loses and repeats datagrams and an AS retransmits when it misses our ACK, so REQUEST
is idempotent here: a repeated REQUEST (same id, same parameters) is answered again,
from the manager while the callback runs and from L{callback_tw.iif.memory} after it
ended, and never places a second call.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from callback_tw.callback.errors import CallbackRefused
from callback_tw.iif.memory import RequestMemory
from callback_tw.iif.message import (
    Cancel,
    MessageError,
    Request,
    formatAck,
    formatResponse,
    parseMessage,
)

__all__ = ["IIFProtocol"]


class _Known(StrEnum):
    """What a repeated REQUEST id is known as (a refused REQUEST is not known)."""

    RUNNING = "running"  # ACK ok sent; the manager runs its callback
    FINISHED = "finished"  # RESPONSE sent; remembered for requestMemory seconds


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
        @param manager: the callback manager, the one owner of running callback ids:
            C{startCallback(request) -> call} (a started call, or raises
            L{CallbackRefused}), C{runningCallback(callbackId) -> call or None} and
            C{cancelCallback(callbackId) -> bool}. A call has its C{request} and the
            Deferred C{finished} (fires with an object with C{realDuration} and
            C{cause}).
        @param peers: the peer servers as C{(ip literal, port or None)}; only they may
            send commands, from that port exactly when one is given, from any port
            otherwise.
        @param maxDuration: the largest C{duration} a REQUEST may ask for.
        @param reactor: an L{IReactorTime}; the global reactor by default.
        @param requestMemory: seconds a finished REQUEST id is remembered, so a repeated
            REQUEST gets its ACK and RESPONSE again instead of a second call.
        @param maxRemembered: the most finished ids remembered; the oldest go first.
            Running callbacks are the manager's and do not count.
        @raise ValueError: if a peer host is not an IP literal.
        """
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        self._reactor = reactor
        self._manager = manager
        self._maxDuration = maxDuration
        self._memory = RequestMemory(reactor, requestMemory, maxRemembered)
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
        # While not None, RESPONSEs are queued here instead of sent (see _cancel).
        self._heldResponses: list[tuple[bytes, tuple[Any, ...]]] | None = None

    # -- DatagramProtocol

    def startProtocol(self) -> None:
        self._memory.start()

    def stopProtocol(self) -> None:
        """
        Stop the memory's expiry timer; finished ids left over are then expired lazily.
        """
        self._memory.stop()

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
        finished = self._memory.recall(callbackId)
        if finished is not None:
            self._repeated(
                request, finished.request, _Known.FINISHED, addr, finished.realDuration
            )
            return
        running = self._manager.runningCallback(callbackId)
        if running is not None:
            self._repeated(request, running.request, _Known.RUNNING, addr)
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
        self._log.info("IIF REQUEST {callbackId} accepted", callbackId=callbackId)
        self._send(formatAck(callbackId, True), addr)
        call.finished.addCallbacks(
            self._finishedOk,
            self._finishedError,
            callbackArgs=(request, addr),
            errbackArgs=(request, addr),
        ).addErrback(self._bug, callbackId)

    def _repeated(
        self,
        request: Request,
        original: Request,
        known: _Known,
        addr: tuple[Any, ...],
        realDuration: int | None = None,
    ) -> None:
        """
        Answer a REQUEST whose id is known: when it repeats the original, the same ACK
        again, and the RESPONSE again when the callback has finished (C{realDuration});
        C{code=fail} when it reuses the id with other parameters.
        """
        callbackId = request.callbackId
        source = _formatSource(addr)
        if original != request:
            self._log.warn(
                "IIF REQUEST {callbackId} from {source} reuses the id of a {state} "
                "callback with different parameters; refused",
                callbackId=callbackId,
                source=source,
                state=known,
            )
            self._send(formatAck(callbackId, False), addr)
            return
        self._log.info(
            "IIF REQUEST {callbackId} from {source} repeated ({state} callback)",
            callbackId=callbackId,
            source=source,
            state=known,
        )
        self._send(formatAck(callbackId, True), addr)
        if realDuration is not None:
            self._send(formatResponse(callbackId, realDuration), addr)

    def _finishedOk(
        self, result: Any, request: Request, source: tuple[Any, ...]
    ) -> None:
        self._ended(request, source, int(result.realDuration), str(result.cause))

    def _finishedError(
        self, failure: Failure, request: Request, source: tuple[Any, ...]
    ) -> None:
        self._log.failure(
            "IIF callback {callbackId} ended with an error; reporting real_duration=0",
            failure,
            callbackId=request.callbackId,
        )
        self._ended(request, source, 0, "error: " + failure.getErrorMessage())

    def _ended(
        self, request: Request, source: tuple[Any, ...], realDuration: int, cause: str
    ) -> None:
        """
        Send the RESPONSE to where the REQUEST came from, and remember the id.
        """
        callbackId = request.callbackId
        realDuration = max(0, realDuration)
        self._log.info(
            "IIF callback {callbackId} finished: real_duration={realDuration} "
            "cause={cause}",
            callbackId=callbackId,
            realDuration=realDuration,
            cause=cause,
        )
        self._sendResponse(formatResponse(callbackId, realDuration), source)
        self._memory.remember(request, realDuration)

    def _bug(self, failure: Failure, callbackId: str) -> None:
        self._log.failure(
            "IIF callback {callbackId}: error in the IIF protocol",
            failure,
            callbackId=callbackId,
        )

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
