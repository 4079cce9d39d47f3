# -*- test-case-name: tests.test_iif_durable,tests.test_iif_protocol -*-
"""
How the IIF protocol answers a REQUEST whose id is already known: running
here, being committed, in the store (ended, or owned by another server), or
another peer's.  A repeat gets the same answers as the original (its ACK, and
its RESPONSE once it ended); the id reused with other parameters or by
another peer gets C{code=fail}; a limit never refuses a repeat.

L{RepeatAnswering} is a mixin of L{callback_tw.iif.protocol.IIFProtocol},
kept in its own module so that each stays readable: it uses the protocol's
C{_store}, C{_peers}, C{_reactor}, C{_requestMemory}, C{_refused},
C{_send} and C{_bug}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import LogLevel

from callback_tw.iif.known import Known, Pending
from callback_tw.iif.message import Request, formatAck
from callback_tw.iif.peers import Peer
from callback_tw.iif.responses import formatSource, storedResponse
from callback_tw.store.records import NewCallback

__all__ = ["MAX_LOOKUPS", "RepeatAnswering", "newCallback"]

#: Store reads in flight for refused REQUESTs (see L{_refuseUnlessKnown}).
MAX_LOOKUPS = 64

_Address = tuple[Any, ...]


class RepeatAnswering:
    """Answers to REQUESTs whose id is known (see the module)."""

    #: store reads in flight for refused REQUESTs.
    _lookups = 0

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

    def _refuseUnlessKnown(
        self, request: Request, addr: _Address, peer: Peer, refuse: Callable[[], None]
    ) -> None:
        """
        A limit (the peer's rate or max_calls, the server's max_calls, the
        overload guard) refuses a REQUEST whose id is not running here; but it
        may repeat a callback the store remembers (the AS missed its ACK or
        its RESPONSE), which must get the same answers as before, not
        C{code=fail}. So the store is asked first; only limits pay this read,
        never a new callback that is admitted.
        """
        if self._lookups >= MAX_LOOKUPS:
            # A flood at a limit (a configured peer's address can be forged)
            # must not queue reads without bound: past this many, a refusal
            # is answered without asking the store.
            refuse()
            return
        new = newCallback(request, addr, peer)
        forgetBefore = self._reactor.seconds() - self._requestMemory

        def answer(record: Any) -> None:
            if record is None or (
                record.endedAt is not None and record.endedAt <= forgetBefore
            ):
                refuse()
            else:
                self._known(record, new, request, addr, peer)

        def done(result: Any) -> Any:
            self._lookups -= 1
            return result

        self._lookups += 1
        d = self._store.lookup(request.callbackId).addBoth(done)
        d.addCallbacks(answer, lambda _: refuse())
        d.addErrback(self._bug, request.callbackId)

    def _whilePending(
        self, pending: Pending, request: Request, addr: _Address, peer: Peer
    ) -> None:
        """
        A repeat while the original's row is being committed: the same answer
        when it comes, or C{code=fail} at once for another peer or other
        parameters.
        """
        effective = self._peers.effective
        if pending.peer.name != peer.name or effective(peer, pending.request) != (
            effective(peer, request)
        ):
            self._refused(
                peer,
                "reused",
                "IIF REQUEST {callbackId} from {source} reuses the id of a pending"
                " callback with different parameters or from another peer; refused",
                callbackId=request.callbackId,
                source=formatSource(addr),
            )
            self._send(formatAck(request.callbackId, False), addr, peer)
            return
        pending.waiters.append((addr, peer))

    def _known(
        self,
        record: Any,
        new: NewCallback,
        request: Request,
        addr: _Address,
        peer: Peer,
    ) -> None:
        """
        Answer a REQUEST whose id the store had already: another peer's id or
        other parameters get C{code=fail}; a callback of another server
        C{code=ok} (its owner sends the RESPONSE); an ended one the ACK and its
        RESPONSE again; one still running (its end being committed) the ACK.
        """
        callbackId = request.callbackId
        if record.peer != peer.name:
            self._peers.refused(callbackId)
            self._refused(
                peer,
                "owner",
                "IIF REQUEST {callbackId} from peer {peer} refused: the id belongs"
                " to peer {owner}",
                callbackId=callbackId,
                owner=record.peer,
            )
            self._send(formatAck(callbackId, False), addr, peer)
            return
        self._peers.ended(callbackId)
        if record.serverId != self._store.serverId:
            known, finished = Known.ELSEWHERE, None
        elif record.ended:
            known, finished = Known.FINISHED, record
        else:
            known, finished = Known.RUNNING, None
        self._repeated(
            request,
            None if record.sameRequest(new) else False,
            known,
            addr,
            peer,
            finished,
        )

    def _repeated(
        self,
        request: Request,
        original: Request | bool | None,
        known: Known,
        addr: _Address,
        peer: Peer,
        finished: Any = None,
    ) -> None:
        """
        Answer a REQUEST of C{peer} whose id is its own: when it repeats the
        original, the same ACK again, and the RESPONSE again when the callback has
        finished (C{finished}, its stored record); C{code=fail} when it reuses
        the id with other parameters.

        @param original: the original L{Request} to compare with, or the
            comparison already made (L{None}: the same; C{False}: different).
        """
        callbackId = request.callbackId
        source = formatSource(addr)
        if isinstance(original, Request):
            effective = self._peers.effective
            same = effective(peer, original) == effective(peer, request)
        else:
            same = original is None
        if not same:
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
        if finished is not None:
            self._send(storedResponse(finished, peer), addr, peer)


def newCallback(request: Request, addr: _Address, peer: Peer) -> NewCallback:
    """The store's record of a REQUEST from C{peer} at C{addr}."""
    return NewCallback(
        request.callbackId,
        peer.name,
        formatSource(addr),
        request.user1,
        request.user2,
        request.duration,
        request.annId1,
        request.annId2,
        request.annDigit2,
    )
