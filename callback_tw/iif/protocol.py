# -*- test-case-name: tests.test_iif_protocol -*-
"""
The inner interface (IIF) server: a UDP L{DatagramProtocol} between application servers
(AS) and the callback manager.

It asks L{callback_tw.iif.peers} who sent a datagram, whether it is signed as it must
be and whether the peer may do what it asks; turns datagrams into commands with
L{callback_tw.iif.message}; hands them to the manager; writes the ACK as soon as the
manager has started (or refused) the callback, and the RESPONSE when the call's
C{finished} Deferred fires, signed for a peer with a key.

UDP loses and repeats datagrams and an AS retransmits when it misses our ACK, so REQUEST
is idempotent here: a repeated REQUEST (same id, same parameters, same peer) is answered
again, from the manager while the callback runs and from L{callback_tw.iif.memory} after
it ended, and never places a second call.

Nothing a peer (or someone speaking as one) sends can make us write a log line per
datagram on a refusal path: those lines go through
L{callback_tw.ratelimit.LogLimiter}, one per peer and kind of refusal per interval, with
the count of the ones not written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from enum import StrEnum
from typing import Any

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger, LogLevel
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
from callback_tw.iif.peers import Peer, PeerTable
from callback_tw.iif.signing import SignatureError
from callback_tw.policy import Admission
from callback_tw.ratelimit import LogLimiter

__all__ = ["IIFProtocol"]

_Address = tuple[Any, ...]


class _Known(StrEnum):
    """What a repeated REQUEST id is known as (a refused REQUEST is not known)."""

    RUNNING = "running"  # ACK ok sent; the manager runs its callback
    FINISHED = "finished"  # RESPONSE sent; remembered for requestMemory seconds


def _formatSource(addr: _Address) -> str:
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


class IIFProtocol(DatagramProtocol):
    """
    Serve the IIF on one UDP port.

    @ivar dropLogInterval: seconds between two log lines about drops from one
        non-peer source.
    @ivar maxDropSources: non-peer sources logged individually per interval.
    @ivar refusalLogInterval: seconds between two log lines about one kind of
        refusal (bad signature, invalid command, a policy rule...) of one peer.
    """

    _log = Logger()
    dropLogInterval = 10.0
    maxDropSources = 32
    refusalLogInterval = 10.0
    _maxRefusalKeys = 1024

    def __init__(
        self,
        manager: Any,
        peers: Iterable[Peer | tuple[str, int | None]],
        maxDuration: int,
        reactor: Any = None,
        requestMemory: float = 3600.0,
        maxRemembered: int = 100_000,
        signatureWindow: float = 30.0,
    ) -> None:
        """
        @param manager: the callback manager, the one owner of running callback ids:
            C{startCallback(request) -> call} (a started call, or raises
            L{CallbackRefused}), C{runningCallback(callbackId) -> call or None} and
            C{cancelCallback(callbackId) -> bool}. A call has its C{request} and the
            Deferred C{finished} (fires with an object with C{realDuration} and
            C{cause}).
        @param peers: the peer servers: L{Peer}s (name, address, key, rules), or
            C{(ip literal, port or None)} for peers without rules or key. Only they
            may send commands, from that port exactly when one is given, from any
            port otherwise.
        @param maxDuration: the largest C{duration} a REQUEST may ask for.
        @param reactor: an L{IReactorTime}; the global reactor by default.
        @param requestMemory: seconds a finished REQUEST id is remembered, so a repeated
            REQUEST gets its ACK and RESPONSE again instead of a second call.
        @param maxRemembered: the most finished ids remembered; the oldest go first.
            Running callbacks are the manager's and do not count.
        @param signatureWindow: the largest C{|now - ts|} of a keyed peer's command.
        @raise ValueError: if a peer host is not an IP literal.
        """
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        self._reactor = reactor
        self._manager = manager
        self._maxDuration = maxDuration
        self._memory = RequestMemory(reactor, requestMemory, maxRemembered)
        self._peers = PeerTable(
            peers, reactor, signatureWindow, requestMemory, maxRemembered
        )
        self._drops = LogLimiter(
            reactor,
            interval=self.dropLogInterval,
            maxKeys=self.maxDropSources,
            burst=None,
        )
        self._refusals = LogLimiter(
            reactor,
            interval=self.refusalLogInterval,
            maxKeys=self._maxRefusalKeys,
            burst=None,
        )
        # While not None, RESPONSEs are queued here instead of sent (see _cancel).
        self._heldResponses: list[tuple[bytes, _Address, Peer]] | None = None

    @property
    def peers(self) -> PeerTable:
        """
        The peer table: rejected datagrams by peer and kind, running callbacks.
        """
        return self._peers

    # -- DatagramProtocol

    def startProtocol(self) -> None:
        self._memory.start()

    def stopProtocol(self) -> None:
        """
        Stop the memory's expiry timer; finished ids left over are then expired lazily.
        """
        self._memory.stop()

    def datagramReceived(self, datagram: bytes, addr: _Address) -> None:
        """
        Handle one IIF command. A non-peer's datagram, a datagram of a peer that may
        not send commands and a keyed peer's datagram that is not signed as it must
        be get no answer at all.
        """
        peer = self._peers.identify(addr)
        if peer is None:
            self._dropped(addr)
            return
        if not peer.commands:
            self._peers.dropped(peer)
            self._refused(
                peer,
                "commands",
                "IIF dropped datagram from {source}: peer {peer} may not send"
                " commands",
                source=_formatSource(addr),
            )
            return
        try:
            datagram = self._peers.open(peer, datagram)
        except SignatureError as e:
            self._refused(
                peer,
                "signature",
                "IIF ignored a datagram from peer {peer} ({source}), no answer:"
                " {kind}: {reason}",
                source=_formatSource(addr),
                kind=e.kind,
                reason=e.reason,
            )
            return
        try:
            message = parseMessage(datagram, self._maxDuration)
        except MessageError as e:
            self._refused(
                peer,
                "invalid",
                "IIF invalid command from {source} (id {callbackId!r}): {reason}",
                source=_formatSource(addr),
                callbackId=e.callbackId,
                reason=e.reason,
            )
            self._send(formatAck(e.callbackId, False), addr, peer)
            return
        if message.ignored:
            self._refused(
                peer,
                "ignored",
                "IIF {callbackId}: ignoring unknown parameters {names}",
                LogLevel.info,
                callbackId=message.callbackId,
                names=", ".join(message.ignored),
            )
        if isinstance(message, Cancel):
            self._cancel(message, addr, peer)
        else:
            self._request(message, addr, peer)

    # -- refusals and drops, rate-limited

    def _refused(
        self,
        peer: Peer,
        kind: str,
        format: str,
        level: LogLevel = LogLevel.warn,
        /,
        **fields: Any,
    ) -> None:
        """
        Log one refusal of C{peer}: at most one line per peer and C{kind} per
        L{refusalLogInterval}.
        """
        self._refusals.emit(
            self._log, (peer.name, kind), format, level, peer=peer.name, **fields
        )

    def _dropped(self, addr: _Address) -> None:
        self._drops.emit(
            self._log,
            str(addr[0]),
            "IIF dropped datagram from non-peer {source}",
            source=_formatSource(addr),
        )

    def _foreign(
        self, peer: Peer, command: str, callbackId: str, addr: _Address
    ) -> bool:
        """
        Refuse with C{code=fail} a command about another peer's callback.

        @return: whether it was refused.
        """
        refusal = self._peers.check(peer, callbackId)
        if refusal is None:
            return False
        self._refused(
            peer,
            "owner",
            "IIF {command} {callbackId} from peer {peer} refused: {refusal}",
            command=command,
            callbackId=callbackId,
            refusal=str(refusal),
        )
        self._send(formatAck(callbackId, False), addr, peer)
        return True

    # -- REQUEST

    def _request(self, request: Request, addr: _Address, peer: Peer) -> None:
        callbackId = request.callbackId
        finished = self._memory.recall(callbackId)
        if finished is not None:
            if not self._foreign(peer, "REQUEST", callbackId, addr):
                self._repeated(
                    request,
                    finished.request,
                    _Known.FINISHED,
                    addr,
                    peer,
                    finished.realDuration,
                )
            return
        running = self._manager.runningCallback(callbackId)
        if running is not None:
            if not self._foreign(peer, "REQUEST", callbackId, addr):
                self._repeated(request, running.request, _Known.RUNNING, addr, peer)
            return
        verdict = self._peers.admit(peer, request)
        if not isinstance(verdict, Admission):
            self._refused(
                peer,
                f"policy {verdict.rule}",
                "IIF REQUEST {callbackId} from peer {peer} refused by rule {rule}:"
                " {detail}",
                callbackId=callbackId,
                rule=str(verdict.rule),
                detail=verdict.detail,
            )
            self._send(formatAck(callbackId, False), addr, peer)
            return
        call = self._start(request, verdict.duration, addr, peer)
        if call is None:
            return
        self._log.info(
            "IIF REQUEST {callbackId} from {source}: user1={user1} user2={user2} "
            "duration={duration} (peer {peer})",
            callbackId=callbackId,
            source=_formatSource(addr),
            user1=request.user1,
            user2=request.user2,
            duration=request.duration,
            peer=peer.name,
        )
        self._log.info("IIF REQUEST {callbackId} accepted", callbackId=callbackId)
        self._send(formatAck(callbackId, True), addr, peer)
        call.finished.addCallbacks(
            self._finishedOk,
            self._finishedError,
            callbackArgs=(request, addr, peer),
            errbackArgs=(request, addr, peer),
        ).addErrback(self._bug, callbackId)

    def _start(
        self, request: Request, duration: int, addr: _Address, peer: Peer
    ) -> Any:
        """
        Hand an admitted REQUEST to the manager, with the duration the policy
        enforces.

        @return: the started call, or L{None} when the manager refused it (the
            AS has its C{code=fail} then, and the peer its slot back).
        """
        callbackId = request.callbackId
        if duration != request.duration:
            request = replace(request, duration=duration)
        try:
            return self._manager.startCallback(request)
        except CallbackRefused as e:
            self._refused(
                peer,
                "refused",
                "IIF REQUEST {callbackId} from peer {peer} refused: {reason}",
                callbackId=callbackId,
                reason=e.reason,
            )
        except Exception:
            self._log.failure(
                "IIF REQUEST {callbackId}: the manager failed", callbackId=callbackId
            )
        self._peers.refused(callbackId)
        self._send(formatAck(callbackId, False), addr, peer)
        return None

    def _repeated(
        self,
        request: Request,
        original: Request,
        known: _Known,
        addr: _Address,
        peer: Peer,
        realDuration: int | None = None,
    ) -> None:
        """
        Answer a REQUEST of C{peer} whose id is its own: when it repeats the
        original, the same ACK again, and the RESPONSE again when the callback has
        finished (C{realDuration}); C{code=fail} when it reuses the id with other
        parameters.
        """
        callbackId = request.callbackId
        source = _formatSource(addr)
        effective = self._peers.effective
        if effective(peer, original) != effective(peer, request):
            self._refused(
                peer,
                "reused",
                "IIF REQUEST {callbackId} from {source} reuses the id of a {state} "
                "callback with different parameters; refused",
                callbackId=callbackId,
                source=source,
                state=known,
            )
            self._send(formatAck(callbackId, False), addr, peer)
            return
        self._refused(
            peer,
            "repeated",
            "IIF REQUEST {callbackId} from {source} repeated ({state} callback)",
            LogLevel.info,
            callbackId=callbackId,
            source=source,
            state=known,
        )
        self._send(formatAck(callbackId, True), addr, peer)
        if realDuration is not None:
            self._send(formatResponse(callbackId, realDuration), addr, peer)

    def _finishedOk(
        self, result: Any, request: Request, source: _Address, peer: Peer
    ) -> None:
        self._ended(request, source, peer, int(result.realDuration), str(result.cause))

    def _finishedError(
        self, failure: Failure, request: Request, source: _Address, peer: Peer
    ) -> None:
        self._log.failure(
            "IIF callback {callbackId} ended with an error; reporting real_duration=0",
            failure,
            callbackId=request.callbackId,
        )
        self._ended(request, source, peer, 0, "error: " + failure.getErrorMessage())

    def _ended(
        self,
        request: Request,
        source: _Address,
        peer: Peer,
        realDuration: int,
        cause: str,
    ) -> None:
        """
        Give the peer its slot back, send the RESPONSE to where the REQUEST came
        from, and remember the id.
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
        self._peers.ended(callbackId)
        self._sendResponse(formatResponse(callbackId, realDuration), source, peer)
        self._memory.remember(request, realDuration)

    def _bug(self, failure: Failure, callbackId: str) -> None:
        self._log.failure(
            "IIF callback {callbackId}: error in the IIF protocol",
            failure,
            callbackId=callbackId,
        )

    # -- CANCEL

    def _cancel(self, cancel: Cancel, addr: _Address, peer: Peer) -> None:
        callbackId = cancel.callbackId
        if self._foreign(peer, "CANCEL", callbackId, addr):
            return
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
        if found:
            self._log.info(
                "IIF CANCEL {callbackId} from {source}",
                callbackId=callbackId,
                source=_formatSource(addr),
            )
        else:
            self._refused(
                peer,
                "cancel",
                "IIF CANCEL {callbackId} from peer {peer}: no running callback with"
                " this id",
                callbackId=callbackId,
            )
        self._send(formatAck(callbackId, found), addr, peer)
        for data, dest, owner in held:
            self._send(data, dest, owner)

    # -- output

    def _sendResponse(self, data: bytes, addr: _Address, peer: Peer) -> None:
        if self._heldResponses is not None:
            self._heldResponses.append((data, addr, peer))
        else:
            self._send(data, addr, peer)

    def _send(self, data: bytes, addr: _Address, peer: Peer) -> None:
        """
        Write C{data} to C{addr}, signed when C{peer} has a key (at the time it is
        sent, so a RESPONSE hours after its REQUEST carries a fresh C{ts}).
        """
        if self.transport is None:
            self._log.warn(
                "IIF not listening; lost {data!r} to {destination}",
                data=data,
                destination=_formatSource(addr),
            )
            return
        data = self._peers.seal(peer, data)
        try:
            self.transport.write(data, addr)
        except OSError:
            self._log.failure(
                "IIF could not send {data!r} to {destination}",
                data=data,
                destination=_formatSource(addr),
            )
