# -*- test-case-name: tests.test_callback_overload -*-
"""
The overload guard: how late the reactor runs.

A server past its capacity does not slow down evenly: timers fire late, SIP
retransmissions add load, durations overrun and callbacks fail across the
board. Refusing new callbacks while the reactor lags keeps the running ones
right; the AS gets C{code=fail} at once and can retry or go elsewhere. Lag,
not a fixed rate, is measured, so the guard fits any machine.
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

    @ivar maxLag: above this lag (seconds), L{overloaded} is true; 0 disables
        the guard (no timer at all).
    """

    _log = Logger()

    def __init__(
        self, reactor: Any, maxLag: float, interval: float = 0.05, window: float = 1.0
    ) -> None:
        """
        @param reactor: the L{IReactorTime} whose lateness is measured.
        @param interval: seconds between two ticks.
        @param window: L{lag} is the largest lateness over this many seconds.
        """
        super().__init__(interval, self._tick)
        self.clock = reactor
        self.maxLag = maxLag
        self._samples: deque[float] = deque(maxlen=max(1, round(window / interval)))
        self._expected: float | None = None
        self._wasOverloaded = False

    @property
    def lag(self) -> float:
        """The largest lateness (seconds) seen over the last C{window} seconds."""
        return max(self._samples, default=0.0)

    @property
    def overloaded(self) -> bool:
        """Whether new callbacks should be refused now."""
        return self.maxLag > 0 and self.lag > self.maxLag

    def startService(self) -> None:
        if self.maxLag <= 0:
            Service.startService(self)
            return
        self._expected = None
        super().startService()

    def stopService(self) -> Any:
        if self.maxLag <= 0:
            return Service.stopService(self)
        return super().stopService()

    def _tick(self) -> None:
        now = self.clock.seconds()
        if self._expected is not None:
            self._samples.append(max(0.0, now - self._expected))
        self._expected = now + self.step
        overloaded = self.overloaded
        if overloaded != self._wasOverloaded:
            self._wasOverloaded = overloaded
            if overloaded:
                self._log.warn(
                    "overloaded: the reactor runs {lag:.0f} ms late;"
                    " refusing new callbacks",
                    lag=self.lag * 1000,
                )
            else:
                self._log.info("no longer overloaded: accepting new callbacks")
