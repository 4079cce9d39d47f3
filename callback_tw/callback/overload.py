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

Between on and off, L{OverloadGuard.admit} paces admissions. On/off alone
oscillates: it admits at the offered rate until the lag shows, and the
callbacks admitted in that last half second still have their answers, join
and BYE ahead of them when it trips, so under a sudden loss of CPU some of
them overrun. So the guard also keeps an admission rate (additive increase,
multiplicative decrease, as TCP does with its window). It acts on slow
ticks, later than half of C{maxLag}: a callback waits for the reactor at
each of its steps (user2's INVITE, two re-INVITEs, ...), so a lag that stays
near C{maxLag} already delays its join by half a second. When slow ticks
recur (two within the window, or one stall), the rate becomes
C{cutFactor} times the rate actually admitted over the last window, at most
once per window (a cut shows its effect only seconds later, when the
callbacks it did not admit would have loaded the reactor); while no tick of
the window was slow, it grows by C{growth} a second, up to twice the rate
admitted or the rate at which lag last appeared, whichever is more (so it
cannot wind up while the load is light, and a burst after a quiet spell up
to the level known to be fine is let through). Before the first cut there
is no limit: a server that never lagged refuses nothing. A token bucket
holding a quarter of a second of the rate smooths the admissions.
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
    @ivar paceShare: for pacing, a tick later than this share of C{maxLag}
        is a slow tick: pacing acts before the on/off rule would.
    @ivar cutFactor: on recurring slow ticks the admission rate becomes this
        share of the rate admitted over the last window.
    @ivar growth: while no tick of the window was slow, the admission rate
        grows by this share per second.
    @ivar burst: the token bucket holds this many seconds of the rate.
    @ivar minRate: the admission rate is never cut below this (callbacks/s),
        so that the guard keeps learning from a trickle of admissions.
    @ivar minTicks: the window keeps at least this many ticks, however old,
        and its share is judged on no fewer: a reactor late by more than the
        window at every tick is still judged on several ticks, and the first
        ticks after start are not judged alone.
    """

    _log = Logger()
    minTicks = 4
    streak = 3
    stallFactor = 3.0
    paceShare = 0.5
    cutFactor = 0.8
    growth = 0.05
    burst = 0.25
    minRate = 1.0

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
        self._slow = 0
        self._inRow = 0
        self._expected: float | None = None
        self._overloaded = False
        self._admissions: deque[float] = deque()
        self._rate: float | None = None
        self._troubleRate = 0.0
        self._lastCut: float | None = None
        self._tokens = 0.0
        self._refilled = 0.0

    @property
    def rate(self) -> float | None:
        """
        New callbacks admitted per second at most, or L{None}: no limit
        (the reactor has not lagged, or the guard is off).
        """
        return self._rate

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

    def admit(self) -> bool:
        """
        Whether one new callback may start now; if so, it is counted as
        admitted. Called once per REQUEST, after every other check.
        """
        if self._overloaded:
            return False
        now = self.clock.seconds()
        if self._rate is not None:
            capacity = max(1.0, self._rate * self.burst)
            self._tokens = min(
                capacity, self._tokens + (now - self._refilled) * self._rate
            )
            self._refilled = now
            if self._tokens < 1.0:
                return False
            self._tokens -= 1.0
        if self.running and self.maxLag > 0:
            self._admissions.append(now)
        return True

    def _admittedRate(self, now: float) -> float:
        """Callbacks admitted per second over the last window."""
        admissions = self._admissions
        horizon = now - self.window
        while admissions and admissions[0] < horizon:
            admissions.popleft()
        return len(admissions) / self.window

    def startService(self) -> None:
        if self.maxLag <= 0:
            Service.startService(self)
            return
        self._expected = None
        self._samples.clear()
        self._late = 0
        self._slow = 0
        self._inRow = 0
        self._overloaded = False
        self._admissions.clear()
        self._rate = None
        self._troubleRate = 0.0
        self._lastCut = None
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
        slow = self.paceShare * self.maxLag
        if lateness > self.maxLag:
            self._late += 1
            self._inRow += 1
        else:
            self._inRow = 0
        if lateness > slow:
            self._slow += 1
        horizon = now - self.window
        while len(samples) > self.minTicks and samples[0][0] < horizon:
            _, old = samples.popleft()
            if old > self.maxLag:
                self._late -= 1
            if old > slow:
                self._slow -= 1
        self._pace(now, lateness)
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

    def _pace(self, now: float, lateness: float) -> None:
        """
        Cut the admission rate when slow ticks recur, grow it while no tick
        of the window was slow.
        """
        admitted = self._admittedRate(now)
        if self._slow == 0:
            if self._rate is not None:
                ceiling = max(2 * admitted, self._troubleRate, self.minRate)
                if self._rate < ceiling:
                    grown = self._rate * (1 + self.growth) ** self.step
                    self._rate = min(grown, ceiling)
            return
        recurring = self._slow >= 2 or lateness > self.stallFactor * self.maxLag
        if not recurring or lateness <= self.paceShare * self.maxLag:
            return
        if self._lastCut is not None and now - self._lastCut < self.window:
            return
        if admitted == 0:
            # Nothing new to pace: the on/off rule answers for the lag.
            return
        self._troubleRate = admitted
        cut = max(self.minRate, self.cutFactor * admitted)
        self._lastCut = now
        if self._rate is not None and cut >= self._rate:
            return
        self._rate = cut
        self._tokens = min(self._tokens, max(1.0, cut * self.burst))
        self._refilled = now
        self._log.info(
            "slow ticks recur: admitting at most {rate:.0f} new callbacks/s"
            " ({admitted:.0f}/s admitted over the last {window:.0f} s)",
            rate=self._rate,
            admitted=admitted,
            window=self.window,
        )
