# -*- test-case-name: tests.test_callback_call -*-
"""
The running callbacks: admission (limits, duplicate ids), lookup for CANCEL
and repeated REQUESTs, and the drain at shutdown.

The manager is the one owner of running callback ids; finished ids are the
IIF's memory (L{callback_tw.iif.memory}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from callback_tw.callback.call import CallbackCall, IDialer, IMediaPorts
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
        (L{callback_tw.callback.overload.OverloadGuard}); while it says
        C{overloaded}, new callbacks are refused.
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
    ) -> None:
        self._dialer = dialer
        self._media = media
        self._maxCalls = maxCalls
        self._maxDuration = maxDuration
        self._reactor = reactor
        self._announcer = announcer
        self._checkRequest = checkRequest
        self._overloadGuard = overloadGuard
        self._calls: dict[str, CallbackCall] = {}
        self._stopping = False

    @property
    def active(self) -> dict[str, CallbackCall]:
        """The running callbacks by id."""
        return dict(self._calls)

    def runningCallback(self, callbackId: str) -> CallbackCall | None:
        """The running callback with this id, if any."""
        return self._calls.get(callbackId)

    def startCallback(self, request: Any) -> CallbackCall:
        """
        Start a callback for a valid, authorised REQUEST.

        @return: the call, started: user1 is being called.
        @raise CallbackRefused: shutting down, at max_calls, overloaded, the
            id is running already, C{checkRequest} refused it, or user1
            could not even be called (the call has ended already).
        """
        if self._stopping:
            raise CallbackRefused("shutting down")
        if request.callbackId in self._calls:
            raise CallbackRefused(f"callback {request.callbackId} is running already")
        if len(self._calls) >= self._maxCalls:
            raise CallbackRefused(f"max_calls ({self._maxCalls}) reached")
        guard = self._overloadGuard
        if guard is not None and guard.overloaded:
            raise CallbackRefused(
                f"overloaded (reactor {guard.lag * 1000:.0f} ms late)"
            )
        if self._checkRequest is not None:
            self._checkRequest(request)
        duration = request.duration or self._maxDuration
        call = CallbackCall(
            request, self._dialer, self._media, duration, self._reactor, self._announcer
        )
        self._calls[call.callbackId] = call
        call.onEnd.append(self._ended)
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
