# -*- test-case-name: tests.test_callback_overload -*-
"""
The overload guard: whether the reactor runs late for good.

A server past its capacity does not slow down evenly: timers fire late, SIP
retransmissions add load, durations overrun and callbacks fail across the
board. Refusing new callbacks while the reactor lags keeps the running ones
right; the AS gets C{code=fail} at once and can retry or go elsewhere. Lag,
not a fixed rate, is measured, so the guard fits any machine.

Only sustained lag counts. A single late timer (a collector pause, the
process descheduled for a moment on a shared machine, a burst of datagrams)
says nothing about capacity, and refusing on it turns callbacks away while
the server still has CPU to spare. A reactor past its capacity is late at
every tick, so the guard trips when C{streak} ticks in a row, or most ticks
of the last C{window} seconds (and of at least the last four), ran more than
C{maxLag} late, or when one tick ran more than C{stallFactor} times C{maxLag}
late (with the collector tuned, a stall that long means the process is
starved of CPU, and every callback in flight is already late); and clears,
with some hysteresis so that it does not flap at the edge, when few of the
window's ticks do. The streak and the stall matter: each callback admitted
loads the reactor again seconds later (its answers, its join, its BYE), so a
guard that waits for a whole window of lag admits too much, and the reactor
falls so far behind that accepted callbacks overrun their duration.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import Service
from twisted.logger import Logger

__all__ = ["OverloadGuard"]


class OverloadGuard(TimerService):
    """
    A service that measures how late a small periodic timer runs.

    While it runs, it ticks every C{interval} seconds on the reactor it was
    given; each tick records how much later than planned it ran.

    @ivar maxLag: a tick later than this (seconds) is a late tick; 0 disables
        the guard (no timer at all).
    @ivar tripShare: L{overloaded} becomes true when more than this share of
        the ticks of the window are late...
    @ivar clearShare: ...and false again when at most this share are.
    @ivar streak: this many late ticks in a row trip the guard at once.
    @ivar stallFactor: one tick later than this many times C{maxLag} trips
        the guard at once.
    @ivar minTicks: the window keeps at least this many ticks, however old,
        and its share is judged on no fewer: a reactor late by more than the
        window at every tick is still judged on several ticks, and the first
        ticks after start are not judged alone.
    """

    _log = Logger()
    minTicks = 4
    streak = 3
    stallFactor = 3.0

    def __init__(
        self,
        reactor: Any,
        maxLag: float,
        interval: float = 0.05,
        window: float = 1.0,
        tripShare: float = 0.5,
        clearShare: float = 0.25,
    ) -> None:
        """
        @param reactor: the L{IReactorTime} whose lateness is measured.
        @param interval: seconds between two ticks.
        @param window: the ticks of the last C{window} seconds are judged; a
            late reactor ticks less often, so the window is a time span, not
            a number of ticks.
        """
        super().__init__(interval, self._tick)
        self.clock = reactor
        self.maxLag = maxLag
        self.window = window
        self.tripShare = tripShare
        self.clearShare = clearShare
        self._samples: deque[tuple[float, float]] = deque()
        self._late = 0
        self._inRow = 0
        self._expected: float | None = None
        self._overloaded = False

    @property
    def lag(self) -> float:
        """
        How late (seconds) the reactor runs now: the median lateness of the
        ticks of the last C{window} seconds, or the last tick's if that is
        more (a stall that just tripped the guard).
        """
        if not self._samples:
            return 0.0
        ordered = sorted(lateness for _, lateness in self._samples)
        return max(ordered[len(ordered) // 2], self._samples[-1][1])

    @property
    def overloaded(self) -> bool:
        """Whether new callbacks should be refused now."""
        return self._overloaded

    def startService(self) -> None:
        if self.maxLag <= 0:
            Service.startService(self)
            return
        self._expected = None
        self._samples.clear()
        self._late = 0
        self._inRow = 0
        self._overloaded = False
        super().startService()

    def stopService(self) -> Any:
        if self.maxLag <= 0:
            return Service.stopService(self)
        return super().stopService()

    def _tick(self) -> None:
        now = self.clock.seconds()
        if self._expected is not None:
            self._record(now, max(0.0, now - self._expected))
        self._expected = now + self.step

    def _record(self, now: float, lateness: float) -> None:
        samples = self._samples
        samples.append((now, lateness))
        if lateness > self.maxLag:
            self._late += 1
            self._inRow += 1
        else:
            self._inRow = 0
        horizon = now - self.window
        while len(samples) > self.minTicks and samples[0][0] < horizon:
            _, old = samples.popleft()
            if old > self.maxLag:
                self._late -= 1
        share = self._late / len(samples)
        if self._overloaded:
            if share <= self.clearShare:
                self._overloaded = False
                self._log.info("no longer overloaded: accepting new callbacks")
        elif (
            self._inRow >= self.streak
            or lateness > self.stallFactor * self.maxLag
            or (share > self.tripShare and len(samples) >= self.minTicks)
        ):
            self._overloaded = True
            self._log.warn(
                "overloaded: {late} of the reactor's last {ticks} ticks ran more"
                " than {maxLag:.0f} ms late (median {median:.0f} ms, last"
                " {last:.0f} ms); refusing new callbacks",
                late=self._late,
                ticks=len(samples),
                median=sorted(x for _, x in samples)[len(samples) // 2] * 1000,
                last=lateness * 1000,
                maxLag=self.maxLag * 1000,
            )
