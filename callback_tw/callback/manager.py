# -*- test-case-name: tests.test_callback_manager -*-
"""
The running callbacks: admission (limits, duplicate ids), lookup for CANCEL,
and the drain at shutdown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from callback_tw.callback.call import CallbackCall, IDialer, IMediaPorts
from callback_tw.callback.errors import CallbackRefused


class CallbackManager:
    """
    Accepts callbacks and keeps them until they end.

    @param maxCalls: concurrent callbacks; one more is refused.
    @param maxDuration: the cap on C{duration}; C{duration=0} means this cap.
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

    def startCallback(self, request: Any) -> CallbackCall:
        """
        Start a callback for a valid, authorised REQUEST.

        @raise CallbackRefused: shutting down, at max_calls, the id is
            running already, or C{checkRequest} refused it.
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
        duration = request.duration if request.duration > 0 else self._maxDuration
        duration = min(duration, self._maxDuration)
        call = CallbackCall(
            request, self._dialer, self._media, duration, self._reactor, self._announcer
        )
        self._calls[call.callbackId] = call
        call.onEnd.append(self._ended)
        call.start()
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
