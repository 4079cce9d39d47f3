# -*- test-case-name: tests.test_iif_protocol -*-
"""
The inner interface (IIF) server: a UDP L{DatagramProtocol} between application servers
(AS) and the callback manager.

It asks L{callback_tw.iif.peers} who sent a datagram, whether it is signed as it must
be and whether the peer may do what it asks; turns datagrams into commands with
L{callback_tw.iif.message}; hands them to the manager; writes the ACK once the
callback's row is committed and the manager has started it (or at once when refused),
and the RESPONSE when the call's C{finished} Deferred fires and its end is committed
(L{callback_tw.iif.responses}), signed for a peer with a key.

UDP loses and repeats datagrams and an AS retransmits when it misses our ACK, so REQUEST
is idempotent here: a repeated REQUEST (same id, same parameters, same peer) is answered
again, from the manager while the callback runs here and from the store
(L{callback_tw.store}) otherwise, across restarts and servers, and never places a second
call.  A promise is on disk before it is made: C{ACK code=ok} follows the COMMIT of the
callback's row, and the RESPONSE follows the COMMIT of its end.

Nothing a peer (or someone speaking as one) sends can make us write a log line per
datagram on a refusal path: those lines go through
L{callback_tw.ratelimit.LogLimiter}, one per peer and kind of refusal per interval, with
the count of the ones not written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from callback_tw.callback.errors import CallbackRefused
from callback_tw.iif.known import Ending, Known, Pending
from callback_tw.iif.message import (
    Cancel,
    MessageError,
    Request,
    formatAck,
    parseMessage,
)
from callback_tw.iif.peers import Peer, PeerTable
from callback_tw.iif.repeats import RepeatAnswering, newCallback
from callback_tw.iif.responses import ResponseSending, formatSource
from callback_tw.iif.signing import SignatureError
from callback_tw.policy import Admission, Rule
from callback_tw.ratelimit import LogLimiter
from callback_tw.store.records import NewCallback

if TYPE_CHECKING:
    from callback_tw.metrics import CallbackMetrics

__all__ = ["IIFProtocol", "MAX_STORE_BACKLOG"]

#: Writes waiting for the store's writer thread above which new REQUESTs are
#: refused (a callback makes about 17; a healthy store keeps a few dozen).
MAX_STORE_BACKLOG = 500

_Address = tuple[Any, ...]


class IIFProtocol(RepeatAnswering, ResponseSending, DatagramProtocol):
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

    # Longer than 60 lines for its docstring: one @param per collaborator.
    def __init__(
        self,
        manager: Any,
        peers: Iterable[Peer | tuple[str, int | None]],
        maxDuration: int,
        reactor: Any = None,
        requestMemory: float = 86400.0,
        maxRemembered: int = 100_000,
        signatureWindow: float = 30.0,
        *,
        store: Any = None,
        metrics: CallbackMetrics | None = None,
    ) -> None:
        """
        @param manager: the callback manager, the one owner of running callback ids:
            C{admit(request)} (raises L{CallbackRefused}, else holds a slot until
            C{startCallback} or C{withdraw(callbackId)}), C{startCallback(request) ->
            call} (a started call, or raises L{CallbackRefused}),
            C{runningCallback(callbackId) -> call or None} and
            C{cancelCallback(callbackId) -> bool}. A call has its C{request} and the
            Deferred C{finished} (fires with an object with C{realDuration},
            C{cause} and optionally C{values}, the leg statuses to store).
        @param store: the L{callback_tw.store.Store} (or an object with its API):
            every accepted callback is committed there before its ACK.  It may
            be set later (L{store}), but before the port opens.
        @param peers: the peer servers: L{Peer}s (name, address, key, rules), or
            C{(ip literal, port or None)} for peers without rules or key. Only they
            may send commands, from that port exactly when one is given, from any
            port otherwise.
        @param maxDuration: the largest C{duration} a REQUEST may ask for.
        @param reactor: an L{IReactorTime}; the global reactor by default.
        @param requestMemory: seconds a finished REQUEST id is remembered (by the
            store, counted from its end), so a repeated REQUEST gets its ACK and
            RESPONSE again instead of a second call.
        @param maxRemembered: the most ended callbacks whose owning peer the peer
            table keeps in memory (for CANCEL); the store is not bounded by it.
        @param signatureWindow: the largest C{|now - ts|} of a keyed peer's command.
        @param metrics: where each command's outcome and each ACK's latency
            are counted, or L{None}.
        @raise ValueError: if a peer host is not an IP literal.
        """
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        self._reactor = reactor
        self._manager = manager
        self._maxDuration = maxDuration
        self._store = store
        self._metrics = metrics
        self._requestMemory = requestMemory
        self._pending: dict[str, Pending] = {}
        # Callbacks that ended here and whose end is being committed, by id.
        self._ending: dict[str, Request] = {}
        # RESPONSEs not yet sent (their end is being committed), for drain().
        self._responding: set[Deferred] = set()
        # Stored callbacks whose RESPONSE waits for the port to open.
        self._queuedResponses: list[Any] = []
        #: False between L{pause} and L{serve}: commands are ignored (the
        #: service pauses the protocol until recovery at start-up is done).
        self.serving = True
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

    @property
    def store(self) -> Any:
        """The store every accepted callback is committed to."""
        return self._store

    @store.setter
    def store(self, store: Any) -> None:
        self._store = store

    # -- DatagramProtocol

    def pause(self) -> None:
        """Ignore commands until L{serve} (no answer: the AS retransmits)."""
        self.serving = False

    def serve(self) -> None:
        """Answer commands again."""
        self.serving = True

    # Longer than 60 lines on purpose: the front door's checks in the order
    # they apply (peer, commands, signature, codec, then the command).
    def datagramReceived(self, datagram: bytes, addr: _Address) -> None:
        """
        Handle one IIF command. A non-peer's datagram, a datagram of a peer that may
        not send commands and a keyed peer's datagram that is not signed as it must
        be get no answer at all.
        """
        if not self.serving:
            # Bound, but recovery is not done yet: the AS retransmits.
            self._log.debug(
                "IIF not serving yet: datagram from {source} ignored",
                source=formatSource(addr),
            )
            return
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
                source=formatSource(addr),
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
                source=formatSource(addr),
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
                source=formatSource(addr),
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
        self._count(peer, kind)
        self._refusals.emit(
            self._log, (peer.name, kind), format, level, peer=peer.name, **fields
        )

    def _count(self, peer: Peer, kind: str) -> None:
        if self._metrics is not None:
            self._metrics.commandOutcome(peer.name, kind)

    def _ackLatency(self, pending: Pending) -> None:
        if self._metrics is not None:
            latency = self._reactor.seconds() - pending.receivedAt
            self._metrics.ackSeconds.observe(max(0.0, latency))

    def _dropped(self, addr: _Address) -> None:
        self._drops.emit(
            self._log,
            str(addr[0]),
            "IIF dropped datagram from non-peer {source}",
            source=formatSource(addr),
        )

    # -- REQUEST

    def _request(self, request: Request, addr: _Address, peer: Peer) -> None:
        """
        A REQUEST: a repeat of a callback running here is answered at once; a new
        id is admitted (policy, manager), committed to the store, then started and
        acknowledged; an id the store knows is answered from its row.
        """
        callbackId = request.callbackId
        running = self._manager.runningCallback(callbackId)
        if running is None and callbackId in self._ending:
            running = Ending(self._ending[callbackId])
        if running is not None:
            if not self._foreign(peer, "REQUEST", callbackId, addr):
                self._repeated(request, running.request, Known.RUNNING, addr, peer)
            return
        pending = self._pending.get(callbackId)
        if pending is not None:
            self._whilePending(pending, request, addr, peer)
            return
        if not self._store.healthy:
            self._refused(
                peer,
                "store",
                "IIF REQUEST {callbackId} from peer {peer} refused: store {url}"
                " unavailable",
                LogLevel.error,
                callbackId=callbackId,
                url=self._store.url,
            )
            self._send(formatAck(callbackId, False), addr, peer)
            return
        if self._store.pendingWrites > MAX_STORE_BACKLOG:
            # The writer thread lags behind (a saturated CPU or a slow disk):
            # every new callback would wait longer for its ACK. Like the
            # overload guard, refuse new ones; repeats are answered as usual.
            self._refuseUnlessKnown(
                request,
                addr,
                peer,
                lambda: self._storeBusy(request, addr, peer),
            )
            return
        verdict = self._admit(request, addr, peer)
        if verdict is None:
            return
        self._pending[callbackId] = pending = Pending(
            request, peer, self._reactor.seconds()
        )
        new = newCallback(request, addr, peer)
        forgetBefore = self._reactor.seconds() - self._requestMemory
        d = self._store.accept(new, forgetBefore=forgetBefore)
        d.addCallbacks(
            self._accepted,
            self._notAccepted,
            callbackArgs=(pending, new, verdict.duration, addr),
            errbackArgs=(pending, addr),
        )
        d.addErrback(self._bug, callbackId)

    def _storeBusy(self, request: Request, addr: _Address, peer: Peer) -> None:
        self._refused(
            peer,
            "store busy",
            "IIF REQUEST {callbackId} from peer {peer} refused: the store has"
            " {backlog} writes waiting",
            callbackId=request.callbackId,
            backlog=self._store.pendingWrites,
        )
        self._send(formatAck(request.callbackId, False), addr, peer)

    def _admit(self, request: Request, addr: _Address, peer: Peer) -> Admission | None:
        """
        The policy's and the manager's verdict on a new REQUEST; on a refusal the
        AS has its C{code=fail} and L{None} is returned.
        """
        callbackId = request.callbackId
        verdict = self._peers.admit(peer, request)
        if not isinstance(verdict, Admission):

            def refuse() -> None:
                self._refused(
                    peer,
                    f"policy {verdict.rule}",
                    "IIF REQUEST {callbackId} from peer {peer} refused by rule"
                    " {rule}: {detail}",
                    callbackId=callbackId,
                    rule=str(verdict.rule),
                    detail=verdict.detail,
                )
                self._send(formatAck(callbackId, False), addr, peer)

            if verdict.rule in (Rule.RATE, Rule.MAX_CALLS):
                self._refuseUnlessKnown(request, addr, peer, refuse)
            else:
                refuse()
            return None
        try:
            self._manager.admit(request)
        except Exception as e:
            error = e
            self._peers.refused(callbackId)
            self._refuseUnlessKnown(
                request,
                addr,
                peer,
                lambda: self._managerRefused(request, error, addr, peer),
            )
            return None
        return verdict

    def _notAccepted(self, failure: Failure, pending: Pending, addr: _Address) -> None:
        """
        The store could not commit the row: C{code=fail}, and nothing was promised.
        """
        request, peer = pending.request, pending.peer
        callbackId = request.callbackId
        del self._pending[callbackId]
        self._manager.withdraw(callbackId)
        self._peers.refused(callbackId)
        self._ackLatency(pending)
        self._refused(
            peer,
            "store",
            "IIF REQUEST {callbackId} from peer {peer} refused: {error}",
            LogLevel.error,
            callbackId=callbackId,
            error=failure.getErrorMessage(),
        )
        for dest, owner in [(addr, peer), *pending.waiters]:
            self._send(formatAck(callbackId, False), dest, owner)

    def _accepted(
        self,
        accepted: Any,
        pending: Pending,
        new: NewCallback,
        duration: int,
        addr: _Address,
    ) -> None:
        request, peer = pending.request, pending.peer
        callbackId = request.callbackId
        del self._pending[callbackId]
        answers = [(addr, peer), *pending.waiters]
        if not accepted.created:
            self._manager.withdraw(callbackId)
            for dest, owner in answers:
                self._known(accepted.record, new, request, dest, owner)
            return
        call = self._start(request, duration, addr, peer)
        if call is None:
            self._store.forget(callbackId).addErrback(self._bug, callbackId)
            for dest, owner in pending.waiters:
                self._send(formatAck(callbackId, False), dest, owner)
            return
        self._count(peer, "ok")
        self._ackLatency(pending)
        self._log.debug(
            "IIF REQUEST {callbackId} from {source}: user1={user1} user2={user2} "
            "duration={duration} (peer {peer})",
            callbackId=callbackId,
            source=formatSource(addr),
            user1=request.user1,
            user2=request.user2,
            duration=request.duration,
            peer=peer.name,
        )
        self._log.debug("IIF REQUEST {callbackId} accepted", callbackId=callbackId)
        for dest, owner in answers:
            self._send(formatAck(callbackId, True), dest, owner)
        call.finished.addBoth(self._finished, request, addr, peer)

    def _start(
        self, request: Request, duration: int, addr: _Address, peer: Peer
    ) -> Any:
        """
        Hand an admitted, committed REQUEST to the manager, with the duration
        the policy enforces.

        @return: the started call, or L{None} when the manager refused it (the
            AS has its C{code=fail} then, and the peer its slot back).
        """
        if duration != request.duration:
            request = replace(request, duration=duration)
        try:
            return self._manager.startCallback(request)
        except Exception as e:
            self._managerRefused(request, e, addr, peer)
        return None

    def _managerRefused(
        self, request: Request, error: Exception, addr: _Address, peer: Peer
    ) -> None:
        callbackId = request.callbackId
        if isinstance(error, CallbackRefused):
            self._refused(
                peer,
                "refused",
                "IIF REQUEST {callbackId} from peer {peer} refused: {reason}",
                callbackId=callbackId,
                reason=error.reason,
            )
        else:
            self._log.failure(
                "IIF REQUEST {callbackId}: the manager failed",
                Failure(error),
                callbackId=callbackId,
            )
        self._peers.refused(callbackId)
        self._send(formatAck(callbackId, False), addr, peer)

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
            self._count(peer, "cancelled")
            self._log.debug(
                "IIF CANCEL {callbackId} from {source}",
                callbackId=callbackId,
                source=formatSource(addr),
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
