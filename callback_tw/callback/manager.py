# -*- test-case-name: tests.test_callback_call -*-
"""
The running callbacks: admission (limits, duplicate ids), lookup for CANCEL
and repeated REQUESTs, the server's heartbeat (what a joined callback's
talk time counts up to after a crash), and the drain at shutdown.

The manager is the one owner of running callback ids; finished ids are the
store's (L{callback_tw.store}).  Admission comes in two steps because a
callback is committed to the store between them: L{CallbackManager.admit}
decides and holds a slot, L{CallbackManager.startCallback} dials once the
row is on disk (or L{CallbackManager.withdraw} gives the slot back).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from callback_tw.callback.call import (
    JOIN_TIMEOUT,
    CallbackCall,
    IDialer,
    IMediaPorts,
)
from callback_tw.callback.errors import CallbackRefused


class CallbackManager:
    """
    Accepts callbacks and keeps them until they end.

    @param maxCalls: concurrent callbacks; one more is refused.
    @param maxDuration: what C{duration=0} means. Larger durations never get
        here: the IIF codec refuses them (L{callback_tw.iif.message}).
    @param checkRequest: optional extra admission check (e.g. that the
        announcements a request names exist); raises L{CallbackRefused}.
    @param overloadGuard: the overload guard
        (L{callback_tw.callback.overload.OverloadGuard}); a new callback
        starts only if its C{admit()} says so (not while it is overloaded,
        and no faster than the rate it paces admissions to).
    @param store: the L{callback_tw.store.Store} each call writes its
        progress and its legs' dialogs to, or L{None}; the attribute
        C{store} may be set later (the service opens the store at start).
    @param metrics: the server's L{callback_tw.metrics.CallbackMetrics}:
        each leg's post-dial delay, each finished callback's cause, talk
        time and legs' final statuses are counted there; or L{None}.
    @param joinTimeout: C{[callback] join_timeout}: how long each join
        re-INVITE may wait for its final answer.
    """

    _log = Logger()

    def __init__(
        self,
        dialer: IDialer,
        media: IMediaPorts,
        maxCalls: int,
        maxDuration: int,
        reactor: Any,
        announcer: Any = None,
        checkRequest: Callable[[Any], None] | None = None,
        overloadGuard: Any = None,
        store: Any = None,
        metrics: Any = None,
        joinTimeout: float = JOIN_TIMEOUT,
    ) -> None:
        if metrics is not None:
            from callback_tw.metrics import MeasuredDialer

            dialer = MeasuredDialer(dialer, metrics, reactor)
        self._metrics = metrics
        self._dialer = dialer
        self._media = media
        self._maxCalls = maxCalls
        self._maxDuration = maxDuration
        self._reactor = reactor
        self._announcer = announcer
        self._checkRequest = checkRequest
        self._overloadGuard = overloadGuard
        self.store = store
        self._joinTimeout = joinTimeout
        self._calls: dict[str, CallbackCall] = {}
        # Ids admitted and being committed: they hold a max_calls slot.
        self._reserved: set[str] = set()
        self._stopping = False
        # The heartbeat not yet committed, if any (see heartbeat).
        self._heartbeat: Deferred | None = None

    @property
    def active(self) -> dict[str, CallbackCall]:
        """The running callbacks by id."""
        return dict(self._calls)

    def runningCallback(self, callbackId: str) -> CallbackCall | None:
        """The running callback with this id, if any."""
        return self._calls.get(callbackId)

    def admit(self, request: Any) -> None:
        """
        Decide whether a valid, authorised REQUEST may start, and hold a
        C{max_calls} slot for it until L{startCallback} or L{withdraw}.

        @raise CallbackRefused: shutting down, at max_calls, overloaded, the
            id is running or admitted already, or C{checkRequest} refused it.
        """
        callbackId = request.callbackId
        if self._stopping:
            raise CallbackRefused("shutting down")
        if callbackId in self._calls or callbackId in self._reserved:
            raise CallbackRefused(f"callback {callbackId} is running already")
        if len(self._calls) + len(self._reserved) >= self._maxCalls:
            raise CallbackRefused(f"max_calls ({self._maxCalls}) reached")
        if self._checkRequest is not None:
            self._checkRequest(request)
        guard = self._overloadGuard
        # Last: an admission the guard grants counts against its rate.
        if guard is not None and not guard.admit():
            if guard.overloaded:
                raise CallbackRefused(
                    f"overloaded (reactor {guard.lag * 1000:.0f} ms late)"
                )
            raise CallbackRefused(
                f"overloaded (admitting at most {guard.rate:.0f} new callbacks/s)"
            )
        self._reserved.add(callbackId)

    def withdraw(self, callbackId: str) -> None:
        """Give back the slot L{admit} held (the REQUEST was not started)."""
        self._reserved.discard(callbackId)

    def startCallback(self, request: Any) -> CallbackCall:
        """
        Start a callback for a valid, authorised REQUEST: the one L{admit}
        admitted, or, without it, after the same checks.

        @return: the call, started: user1 is being called.
        @raise CallbackRefused: see L{admit}; also when user1 could not even
            be called (the call has ended already).
        """
        if request.callbackId in self._reserved:
            self._reserved.discard(request.callbackId)
            if self._stopping:
                raise CallbackRefused("shutting down")
        else:
            self.admit(request)
            self._reserved.discard(request.callbackId)
        duration = request.duration or self._maxDuration
        call = CallbackCall(
            request,
            self._dialer,
            self._media,
            duration,
            self._reactor,
            self._announcer,
            store=self.store,
            joinTimeout=self._joinTimeout,
        )
        self._calls[call.callbackId] = call
        call.onEnd.append(self._ended)
        if self._metrics is not None:
            call.finished.addCallback(self._counted)
        call.start()
        # start() decides at once: accepted has fired, or failed and the
        # call has ended.
        refusal: list[Failure] = []
        call.accepted.addErrback(refusal.append)
        if refusal:
            refusal[0].raiseException()
        return call

    def cancelCallback(self, callbackId: str) -> bool:
        """Release a running callback on the AS's request."""
        call = self._calls.get(callbackId)
        if call is None:
            return False
        return call.cancel("cancelled by the application server")

    def heartbeat(self) -> None:
        """
        Record in the store that this server is still alive (a
        C{TimerService} calls this every second).  One write per server, not
        per callback: after a crash, a joined callback's real_duration counts
        from its join up to the last heartbeat, whatever the number of calls
        held.

        While one heartbeat waits for the store (the database is down), the
        next ones are skipped rather than queued: an outage of an hour would
        otherwise pile up 3 600 waiters on the one queued write, and as many
        warnings when it fails.  The next tick after it is committed writes
        the time again.
        """
        if self.store is None or self._heartbeat is not None:
            return
        d = self._heartbeat = self.store.heartbeat()
        d.addErrback(self._heartbeatFailed)
        d.addBoth(self._heartbeatDone)

    def _heartbeatFailed(self, failure: Failure) -> None:
        self._log.warn(
            "heartbeat not stored ({error})", error=failure.getErrorMessage()
        )

    def _heartbeatDone(self, ignored: Any) -> None:
        self._heartbeat = None

    def _counted(self, result: Any) -> Any:
        self._metrics.callbackFinished(result)
        return result

    def _ended(self, call: CallbackCall) -> None:
        if self._calls.get(call.callbackId) is call:
            del self._calls[call.callbackId]

    def releaseAll(self, cause: str = "server shutting down") -> int:
        """
        Refuse new callbacks and release every running one. A release is
        synchronous: each callback has hung up its legs and reported its
        result (its RESPONSE is sent) when this returns.

        @return: how many callbacks were released.
        """
        self._stopping = True
        calls = list(self._calls.values())
        if calls:
            self._log.info(
                "releasing {n} active callbacks: {cause}", n=len(calls), cause=cause
            )
        for call in calls:
            call.cancel(cause)
        return len(calls)
