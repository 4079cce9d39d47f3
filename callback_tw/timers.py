# -*- test-case-name: tests.test_timers -*-
"""
Small helpers for the reactor's delayed calls.

Every object that owns a C{callLater} handle keeps it and cancels it when it
leaves the state that owns it (a finished callback leaves no delayed call
behind). The test "is it still pending?" before C{cancel()} is needed each
time, because cancelling a call that has run or was cancelled raises; it
lives here once.
"""

from __future__ import annotations

from twisted.internet.interfaces import IDelayedCall

__all__ = ["cancelDelayed"]


def cancelDelayed(call: IDelayedCall | None) -> None:
    """
    Cancel C{call} if it is still pending; do nothing for L{None} or a call
    that has already run or been cancelled. The owner sets its own
    attribute to L{None}.
    """
    if call is not None and call.active():
        call.cancel()
