# -*- test-case-name: tests.test_iif_durable -*-
"""
The RESPONSE side of the IIF protocol: a callback's end is committed to the
store, then its RESPONSE goes to the AS, then that is recorded; RESPONSEs of
callbacks a restart finished are sent (from the store's record) once the
port opens.

L{ResponseSending} is a mixin of L{callback_tw.iif.protocol.IIFProtocol},
kept in its own module so that each stays readable: it uses the protocol's
C{_store}, C{_peers}, C{_log}, C{_send}, C{_sendResponse}, C{_reactor} and
C{transport}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.python.failure import Failure

from callback_tw.iif.message import Request, formatResponse
from callback_tw.iif.peers import Peer
from callback_tw.store.records import endWord

__all__ = [
    "ResponseSending",
    "formatSource",
    "legOutcome",
    "parseAddress",
    "responseDetails",
]

_Address = tuple[Any, ...]


def formatSource(addr: _Address) -> str:
    """C{host:port} of an address (C{[v6]:port} for IPv6), for logs and the store."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def parseAddress(text: str) -> tuple[str, int]:
    """
    The C{(host, port)} of a stored C{peer_address} (C{"host:port"}, or
    C{"[v6]:port"}), where a RESPONSE goes.

    @raise ValueError: if it is not one.
    """
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"not host:port: {text!r}")
    return host.strip("[]"), int(port)


def legOutcome(values: dict[str, Any], leg: str) -> str:
    """
    What became of one leg, in a word for the summary line: C{answered},
    its final SIP status (C{486}, C{408}, C{487}...) or C{not-called}.  The
    provider's reason phrase is left out: it is remote text.
    """
    status = values.get(f"{leg}Status")
    if status is None:
        return "not-called"
    return "answered" if status == 200 else str(status)


_MOMENTS = (
    ("answer1", "answered1At"),
    ("answer2", "answered2At"),
    ("joined", "joinedAt"),
    ("ended", "endedAt"),
)


def responseDetails(values: Any) -> list[tuple[str, str]]:
    """
    The C{response_details} parameters of a callback (docs/iif.md): its end
    cause as a word, its moments in unix milliseconds and its legs' final
    SIP statuses; a moment or status that did not happen is empty.

    @param values: the callback's values under the store's names
        (C{endCause}, C{answered1At}...), a mapping or a
        L{callback_tw.store.records.CallbackRecord}: the live RESPONSE and
        the one re-sent from the store are built alike.
    """

    def get(name: str) -> Any:
        if isinstance(values, dict):
            return values.get(name)
        return getattr(values, name, None)

    details = [("cause", endWord(get("endCause")))]
    for name, key in _MOMENTS:
        at = get(key)
        details.append((name, "" if at is None else str(round(at * 1000))))
    for name, key in (("status1", "leg1Status"), ("status2", "leg2Status")):
        code = get(key)
        details.append((name, "" if code is None else str(int(code))))
    return details


def storedResponse(record: Any, peer: Peer) -> bytes:
    """The RESPONSE of an ended callback from its stored record."""
    return formatResponse(
        record.id,
        record.realDuration or 0,
        responseDetails(record) if peer.responseDetails else (),
    )


class ResponseSending:
    """
    Send RESPONSEs after their end is committed, and the stored ones after a
    restart; write every reply (signed for a keyed peer).
    """

    _store: Any
    _peers: Any
    _log: Any
    transport: Any
    _responding: set[Deferred]
    _ending: dict[str, Request]
    _queuedResponses: list[Any]

    def drain(self) -> Deferred:
        """
        Fire when every RESPONSE whose end was being committed has been sent
        (the service waits for it before it closes the port).
        """
        return DeferredList(list(self._responding)).addCallback(lambda _: None)

    def startProtocol(self) -> None:
        """The port is open: send the RESPONSEs recovery queued."""
        queued, self._queuedResponses = self._queuedResponses, []
        for record in queued:
            self.resendResponse(record)

    def _finished(
        self, result: Any, request: Request, source: _Address, peer: Peer
    ) -> Deferred | None:
        """
        The callback of C{request} has ended (C{result}) or failed: report
        it. One callback with one argument tuple on the call's C{finished}
        (not a callback, an errback and a third for a bug in them): it
        waits as long as the callback is held, hours, by thousands.
        """
        try:
            if isinstance(result, Failure):
                ended = self._finishedError(result, request, source, peer)
            else:
                ended = self._finishedOk(result, request, source, peer)
        except Exception:
            self._bug(Failure(), request.callbackId)
            return None
        return ended.addErrback(self._bug, request.callbackId)

    def _finishedOk(
        self, result: Any, request: Request, source: _Address, peer: Peer
    ) -> Deferred:
        return self._ended(
            request,
            source,
            peer,
            int(result.realDuration),
            str(result.cause),
            getattr(result, "values", None) or {},
            getattr(result, "times", None) or {},
        )

    def _finishedError(
        self, failure: Failure, request: Request, source: _Address, peer: Peer
    ) -> Deferred:
        self._log.failure(
            "IIF callback {callbackId} ended with an error; reporting real_duration=0",
            failure,
            callbackId=request.callbackId,
        )
        return self._ended(
            request, source, peer, 0, "error: " + failure.getErrorMessage(), {}, {}
        )

    def _ended(
        self,
        request: Request,
        source: _Address,
        peer: Peer,
        realDuration: int,
        cause: str,
        values: dict[str, Any],
        times: dict[str, float],
    ) -> Deferred:
        """
        Give the peer its slot back, commit the end, then send the RESPONSE to
        where the REQUEST came from and record that it went.  While the store is
        down the RESPONSE goes at once (its end is written when the store is
        back): an AS is not kept waiting on a database.
        """
        callbackId = request.callbackId
        realDuration = max(0, realDuration)
        self._summarise(request, peer, realDuration, cause, values, times)
        self._peers.ended(callbackId)
        self._ending[callbackId] = request
        healthy = self._store.healthy
        # The moments are stored with the end (the call wrote them as they
        # happened too): a RESPONSE re-sent from the store is this one.
        moments = dict(times)
        endedAt = moments.pop("endedAt", None)
        committed = self._store.markEnded(
            callbackId, cause, realDuration, at=endedAt, **values, **moments
        )
        details: list[tuple[str, str]] = []
        if peer.responseDetails:
            if endedAt is None:
                endedAt = self._reactor.seconds()
            details = responseDetails(
                {**values, **times, "endedAt": endedAt, "endCause": cause}
            )
        done: Deferred = Deferred()

        def respond(result: Any) -> None:
            if isinstance(result, Failure):
                self._log.error(
                    "IIF callback {callbackId}: its end is not stored ({error});"
                    " sending the RESPONSE anyway",
                    callbackId=callbackId,
                    error=result.getErrorMessage(),
                )
            if self._ending.get(callbackId) is request:
                del self._ending[callbackId]
            self._sendResponse(
                formatResponse(callbackId, realDuration, details), source, peer
            )
            self._store.markResponseSent(callbackId).addErrback(
                lambda f: self._log.warn(
                    "IIF callback {callbackId}: RESPONSE not recorded as sent"
                    " ({error})",
                    callbackId=callbackId,
                    error=f.getErrorMessage(),
                )
            )
            self._responding.discard(done)
            done.callback(None)

        self._responding.add(done)
        if healthy:
            committed.addBoth(respond)
        else:
            committed.addErrback(lambda f: None)
            respond(None)
        return done

    def _summarise(
        self,
        request: Request,
        peer: Peer,
        realDuration: int,
        cause: str,
        values: dict[str, Any],
        times: dict[str, float],
    ) -> None:
        """
        The one line an operator reads per callback at level info (every step
        before it is at debug); its moments (Unix seconds, "-" when one did
        not happen) let an AS that bills differently recompute from the log.
        """
        moment = {k: "-" if v is None else f"{v:.3f}" for k, v in times.items()}
        self._log.info(
            "callback {callbackId} finished: peer={peer} user1={user1}"
            " user2={user2} leg1={leg1} leg2={leg2} real_duration={realDuration}"
            " cause={cause} answer1={answer1} answer2={answer2} joined={joined}"
            " ended={ended}",
            callbackId=request.callbackId,
            peer=peer.name,
            user1=request.user1,
            user2=request.user2,
            leg1=legOutcome(values, "leg1"),
            leg2=legOutcome(values, "leg2"),
            realDuration=realDuration,
            cause=cause,
            answer1=moment.get("answered1At", "-"),
            answer2=moment.get("answered2At", "-"),
            joined=moment.get("joinedAt", "-"),
            ended=moment.get("endedAt", "-"),
        )

    def resendResponse(self, record: Any) -> None:
        """
        Send the RESPONSE of an ended callback whose RESPONSE may never have
        gone out (a crash between its end and its RESPONSE, or a callback
        finished by recovery), to the address that asked, signed when that
        peer has a key, and record it.  Before the port is open (recovery
        runs first), it is queued and sent as soon as the port opens.
        """
        if self.transport is None:
            self._queuedResponses.append(record)
            return
        try:
            addr = parseAddress(record.peerAddress)
        except ValueError:
            self._log.error(
                "IIF callback {callbackId}: stored peer address {address!r} is"
                " unusable; its RESPONSE cannot be sent",
                callbackId=record.id,
                address=record.peerAddress,
            )
            return
        peer = self._peers.identify(addr) or Peer(record.peer, addr[0], addr[1])
        self._send(storedResponse(record, peer), addr, peer)
        self._store.markResponseSent(record.id).addErrback(
            lambda f: self._log.warn(
                "IIF callback {callbackId}: RESPONSE not recorded as sent ({error})",
                callbackId=record.id,
                error=f.getErrorMessage(),
            )
        )

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
                destination=formatSource(addr),
            )
            return
        data = self._peers.seal(peer, data)
        try:
            self.transport.write(data, addr)
        except OSError:
            self._log.failure(
                "IIF could not send {data!r} to {destination}",
                data=data,
                destination=formatSource(addr),
            )
