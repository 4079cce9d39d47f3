# -*- test-case-name: tests.test_sip_adapter -*-
"""
A stand-in for sippy's event dispatcher (C{sippy.Core.EventDispatcher.ED2})
that runs sippy's timers on a Twisted reactor.

sippy's own dispatcher runs its own loop on the ElPeriodic extension, blocks
SIGURG and starts a thread; this server has one loop, Twisted's. sippy's
C{Timeout}, C{TimeoutAbsMono} and periodic timers, and its call-from-thread,
all go through C{ED2}, which C{sippy.Time.Timeout} and C{sippy.Udp_server}
bind when they are imported. So the stand-in is put in C{sys.modules} when
this module is imported, which C{callback_tw.sip.adapter} does before
anything imports sippy.

Everything is driven by C{ED2.reactor}; a unit test sets it to a
L{twisted.internet.task.Clock} with L{useReactor} and steps SIP timers.

Checked against sippy 2.5.0 (C{EventDispatcher2.regTimer},
C{EventListener}'s attributes).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from callback_tw.timers import cancelDelayed

__all__ = ["ED2", "ReactorDispatcher", "ReactorTimer", "useReactor"]

_log = Logger(namespace="callback_tw.sip")


class ReactorTimer:
    """
    One sippy timer (what C{ED2.regTimer} returns), scheduled with the
    reactor's C{callLater}.

    sippy reads C{etime} (a C{MonoTime}) and may set C{cb_with_ts}; it calls
    C{go()} to arm, C{cancel()} to disarm and C{spread_runs(p)} to randomise
    a periodic interval. C{nticks} is 1 for a one-shot timer, -1 for a
    periodic timer that runs until cancelled, and N > 1 for N runs. Periodic
    timers re-arm from their previous deadline, not from "now", so they do
    not drift.
    """

    cb_with_ts = False

    def __init__(
        self,
        dispatcher: ReactorDispatcher,
        callback: Callable[..., Any],
        ival: Any,
        nticks: int | None,
        absTime: bool,
        params: tuple[Any, ...],
    ) -> None:
        self._dispatcher = dispatcher
        self.cb_func: Callable[..., Any] | None = callback
        self.ival = ival
        self.nticks = 1 if nticks is None else nticks
        self.abs_time = absTime
        self.cb_params = params
        self.etime = None
        self._call = None
        self._deadline = 0.0
        self._randomizer: Callable[[float], float] | None = None

    def spread_runs(self, p: float) -> None:
        """Randomise each interval by +/- C{p} (a fraction), as ED2 does."""
        from random import random

        self._randomizer = lambda x: x * (1.0 + p * (1.0 - 2.0 * random()))

    def _interval(self) -> float:
        ival = float(self.ival)
        if self._randomizer is not None:
            ival = self._randomizer(ival)
        return max(ival, 0.0)

    def go(self) -> None:
        """Arm the timer."""
        from sippy.Time.MonoTime import MonoTime

        if self.cb_func is None:
            return
        reactor = self._dispatcher.reactor
        now = MonoTime()
        if self.abs_time:
            self.etime = self.ival
            delay = max(self.ival.monot - now.monot, 0.0)
            self.nticks = 1
        else:
            delay = self._interval()
            self.etime = now.getOffsetCopy(delay)
        self._deadline = reactor.seconds() + delay
        self._call = reactor.callLater(delay, self._fire)
        self._dispatcher._armed.add(self)

    def _fire(self) -> None:
        from sippy.Time.MonoTime import MonoTime

        self._call = None
        callback, params = self.cb_func, self.cb_params
        if callback is None:
            return
        repeat = self.nticks == -1 or self.nticks > 1
        if repeat:
            if self.nticks > 1:
                self.nticks -= 1
            reactor = self._dispatcher.reactor
            ival = self._interval()
            self._deadline += ival
            self.etime = self.etime.getOffsetCopy(ival)
            self._call = reactor.callLater(
                max(self._deadline - reactor.seconds(), 0.0), self._fire
            )
        else:
            self._dispatcher._armed.discard(self)
        try:
            if self.cb_with_ts:
                callback(MonoTime(), *params)
            else:
                callback(*params)
        except Exception:
            _log.failure("sippy timer callback {callback!r} failed", callback=callback)
        if not repeat:
            self._cleanup()

    def cancel(self) -> None:
        """Disarm the timer; safe to call more than once."""
        cancelDelayed(self._call)
        self._call = None
        self._dispatcher._armed.discard(self)
        self._cleanup()

    def _cleanup(self) -> None:
        self.cb_func = None
        self.cb_params = ()

    @property
    def active(self) -> bool:
        return self._call is not None and self._call.active()


class ReactorDispatcher:
    """
    What sippy expects of C{ED2}, on a Twisted reactor.

    @ivar reactor: the reactor timers run on; L{useReactor} swaps it.
    """

    def __init__(self, reactor: Any = None) -> None:
        self.reactor = reactor
        self._armed: set[ReactorTimer] = set()

    def regTimer(
        self,
        timeout_cb: Callable[..., Any],
        ival: Any,
        nticks: int | None = 1,
        abs_time: bool = False,
        *cb_params: Any,
    ) -> ReactorTimer | None:
        """Create (not arm) a timer, as C{EventDispatcher2.regTimer}."""
        from sippy.Time.MonoTime import MonoTime

        if self.reactor is None:
            raise RuntimeError("sippy timer created before a reactor was installed")
        if nticks == 0:
            return None
        if abs_time and not isinstance(ival, MonoTime):
            raise TypeError("ival is not MonoTime")
        return ReactorTimer(self, timeout_cb, ival, nticks, abs_time, cb_params)

    def callFromThread(self, thread_cb: Callable[..., Any], *cb_params: Any) -> None:
        """Run C{thread_cb} on the reactor thread."""
        self.reactor.callFromThread(self._runLogged, thread_cb, cb_params)

    def callFromThreadSync(self, thread_cb: Callable[..., Any], *cb_params: Any) -> Any:
        """Run C{thread_cb} on the reactor thread and wait for its result."""
        from twisted.internet.threads import blockingCallFromThread

        return blockingCallFromThread(self.reactor, thread_cb, *cb_params)

    @staticmethod
    def _runLogged(callback: Callable[..., Any], params: tuple[Any, ...]) -> None:
        try:
            callback(*params)
        except Exception:
            _log.failure(
                "sippy call-from-thread {callback!r} failed", callback=callback
            )

    def breakLoop(self, rval: int = 0) -> None:
        """sippy's way to stop its loop; the reactor is stopped by its owner."""
        _log.debug("sippy asked to break its loop (ignored: the reactor owns the loop)")

    def loop(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(
            "sippy's own loop must not run: callback_tw runs sippy on the reactor"
        )

    def regSignal(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("sippy signal handlers are not supported on the reactor")

    def armedTimers(self) -> list[ReactorTimer]:
        """The timers that are still armed (for shutdown and for tests)."""
        return list(self._armed)

    def cancelAll(self) -> int:
        """
        Cancel every armed sippy timer.

        sippy's C{SipTransactionManager.shutdown} cancels only its purge
        timer; transaction timers and the UA's go-dead timers keep firing and
        crash on a torn-down manager. Stopping the stack calls this.
        @return: how many were cancelled.
        """
        timers = list(self._armed)
        for timer in timers:
            timer.cancel()
        return len(timers)


ED2 = ReactorDispatcher()


def _installDispatcher() -> None:
    """
    Make C{sippy.Core.EventDispatcher} our stand-in before sippy loads it.
    """
    name = "sippy.Core.EventDispatcher"
    existing = sys.modules.get(name)
    if existing is not None:
        if getattr(existing, "ED2", None) is ED2:
            return
        raise ImportError(
            "sippy's own event dispatcher was imported before callback_tw.sip.adapter; "
            "import callback_tw.sip before any sippy module"
        )
    import sippy.Core  # the package only; its __init__ loads nothing else

    module = types.ModuleType(
        name, "callback_tw stand-in: sippy timers on the Twisted reactor"
    )
    module.ED2 = ED2  # type: ignore[attr-defined]
    module.EventDispatcher2 = ReactorDispatcher  # type: ignore[attr-defined]
    module.EventListener = ReactorTimer  # type: ignore[attr-defined]
    sys.modules[name] = module
    sippy.Core.EventDispatcher = module  # type: ignore[attr-defined]


_installDispatcher()


def useReactor(reactor: Any) -> Any:
    """
    Run sippy's timers on C{reactor} from now on.

    @return: the previous reactor, so a test can restore it.
    """
    previous = ED2.reactor
    ED2.reactor = reactor
    return previous
