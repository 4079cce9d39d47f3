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

sippy arms several timers per SIP transaction (retransmission, expiry) and
nearly all are cancelled when the answer comes, a few milliseconds later.
One reactor C{DelayedCall} per timer costs a Python object, a heap push with
Python comparisons (C{DelayedCall.__lt__}) and a heap rebuild after many
cancellations. So the timers of one reactor share one L{_TimerHeap}: a heap
of plain C{(deadline, sequence, timer)} tuples (compared in C), one
C{DelayedCall} for the earliest deadline, cancellation that only forgets the
timer's entry (dead entries are skipped, and dropped in one pass when they
outnumber the live ones), and no reactor timer at all once no sippy timer is
armed.
"""

from __future__ import annotations

import heapq
import sys
import types
from collections.abc import Callable
from itertools import count
from typing import Any

from sippy.Time.MonoTime import MonoTime
from twisted.logger import Logger

from callback_tw.timers import cancelDelayed

__all__ = ["ED2", "ReactorDispatcher", "ReactorTimer", "useReactor"]

_log = Logger(namespace="callback_tw.sip")


class _TimerHeap:
    """
    The sippy timers of one reactor, behind one C{DelayedCall}.

    @ivar live: how many entries of the heap belong to armed timers.
    """

    #: dead entries are dropped once there are more than this many and
    #: more than live ones.
    compactAbove = 64

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor
        self._entries: list[tuple[float, int, ReactorTimer]] = []
        self._sequence = count()
        self._wakeup: Any = None
        self._wakeupAt = float("inf")
        self.live = 0

    def push(self, timer: ReactorTimer, deadline: float) -> int:
        """Arm C{timer} for C{deadline}; return its entry's token."""
        token = next(self._sequence)
        heapq.heappush(self._entries, (deadline, token, timer))
        self.live += 1
        if deadline < self._wakeupAt:
            self._schedule(deadline)
        return token

    def forget(self) -> None:
        """One armed timer was cancelled: its entry is dead."""
        self.live -= 1
        if self.live == 0:
            self._entries.clear()
            cancelDelayed(self._wakeup)
            self._wakeup = None
            self._wakeupAt = float("inf")
        elif len(self._entries) > max(self.compactAbove, 2 * self.live):
            self._entries = [e for e in self._entries if e[2]._token == e[1]]
            heapq.heapify(self._entries)

    def _schedule(self, deadline: float) -> None:
        cancelDelayed(self._wakeup)
        self._wakeupAt = deadline
        self._wakeup = self.reactor.callLater(
            max(deadline - self.reactor.seconds(), 0.0), self._run
        )

    def _run(self) -> None:
        """
        Fire every timer due now; timers armed while they run wait for the
        next turn of the reactor, as C{callLater(0, ...)} would.
        """
        self._wakeup = None
        self._wakeupAt = float("inf")
        now = self.reactor.seconds()
        entries = self._entries
        due = []
        while entries and entries[0][0] <= now:
            _, token, timer = heapq.heappop(entries)
            if timer._token == token:
                timer._token = None
                self.live -= 1
                due.append(timer)
        for timer in due:
            timer._fire()
        # The timers may have armed others (a new wake-up) or compacted the heap.
        entries = self._entries
        while entries and entries[0][2]._token != entries[0][1]:
            heapq.heappop(entries)
        if entries and entries[0][0] < self._wakeupAt:
            self._schedule(entries[0][0])


class ReactorTimer:
    """
    One sippy timer (what C{ED2.regTimer} returns), run by its reactor's
    L{_TimerHeap}.

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
        self._etime: Any = None
        self._heap: _TimerHeap | None = None
        # The sequence number of this timer's live heap entry; None: not armed.
        self._token: int | None = None
        self._deadline = 0.0
        self._randomizer: Callable[[float], float] | None = None

    @property
    def etime(self) -> Any:
        """
        When the timer fires next, as a C{MonoTime} (built only when sippy
        asks: it rarely does).
        """
        if self._etime is None and self._heap is not None and not self.abs_time:
            reactor = self._heap.reactor
            self._etime = MonoTime().getOffsetCopy(self._deadline - reactor.seconds())
        return self._etime

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
        if self.cb_func is None:
            return
        if self._token is not None:
            # Armed again: the earlier deadline no longer counts.
            self._token = None
            self._heap.forget()
        dispatcher = self._dispatcher
        heap = dispatcher._timerHeap()
        now = heap.reactor.seconds()
        if self.abs_time:
            self._etime = self.ival
            delay = max(self.ival.monot - MonoTime().monot, 0.0)
            self.nticks = 1
        else:
            delay = self._interval()
            self._etime = None
        self._heap = heap
        self._deadline = now + delay
        self._token = heap.push(self, self._deadline)
        dispatcher._armed.add(self)

    def _fire(self) -> None:
        callback, params = self.cb_func, self.cb_params
        if callback is None:
            return
        repeat = self.nticks == -1 or self.nticks > 1
        if repeat:
            if self.nticks > 1:
                self.nticks -= 1
            self._deadline += self._interval()
            self._etime = None
            self._token = self._heap.push(self, self._deadline)
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
        if self._token is not None:
            self._token = None
            self._heap.forget()
        self._dispatcher._armed.discard(self)
        self._cleanup()

    def _cleanup(self) -> None:
        self.cb_func = None
        self.cb_params = ()

    @property
    def active(self) -> bool:
        return self._token is not None


class ReactorDispatcher:
    """
    What sippy expects of C{ED2}, on a Twisted reactor.

    @ivar reactor: the reactor timers run on; L{useReactor} swaps it.
    """

    def __init__(self, reactor: Any = None) -> None:
        self.reactor = reactor
        self._armed: set[ReactorTimer] = set()
        self._heap: _TimerHeap | None = None

    def _timerHeap(self) -> _TimerHeap:
        """The heap of the current reactor's timers (a new one after a swap)."""
        heap = self._heap
        if heap is None or heap.reactor is not self.reactor:
            heap = self._heap = _TimerHeap(self.reactor)
        return heap

    def regTimer(
        self,
        timeout_cb: Callable[..., Any],
        ival: Any,
        nticks: int | None = 1,
        abs_time: bool = False,
        *cb_params: Any,
    ) -> ReactorTimer | None:
        """Create (not arm) a timer, as C{EventDispatcher2.regTimer}."""
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
