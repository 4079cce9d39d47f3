# -*- test-case-name: tests.test_callback_load -*-
"""
The overload guard: how late the reactor runs.

A server past its capacity does not slow down evenly: timers fire late, SIP
retransmissions add load, durations overrun and callbacks fail across the
board (bench/bench_callbacks.py at 300/s on one core: under half of the
callbacks right). Refusing new callbacks while the reactor lags keeps the
running ones right; the AS gets C{code=fail} at once and can retry or go
elsewhere. Lag, not a fixed rate, is measured, so the guard fits any machine.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger


class LagMonitor:
    """
    Measures how late a small periodic timer runs.

    @ivar lag: the largest lateness (seconds) seen over the last C{window}
        seconds.
    @param maxLag: above this, L{overloaded} is true; 0 disables the guard.
    """

    _log = Logger()

    def __init__(
        self, reactor: Any, maxLag: float, interval: float = 0.05, window: float = 1.0
    ) -> None:
        self._reactor = reactor
        self.maxLag = maxLag
        self._interval = interval
        self._samples: deque[float] = deque(maxlen=max(1, round(window / interval)))
        self._expected = 0.0
        self._loop: LoopingCall | None = None
        self._wasOverloaded = False

    @property
    def lag(self) -> float:
        return max(self._samples, default=0.0)

    @property
    def overloaded(self) -> bool:
        return self.maxLag > 0 and self.lag > self.maxLag

    def start(self) -> None:
        if self.maxLag <= 0 or self._loop is not None:
            return
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self._reactor
        self._expected = self._reactor.seconds()
        self._loop.start(self._interval, now=True)

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()

    def _tick(self) -> None:
        now = self._reactor.seconds()
        self._samples.append(max(0.0, now - self._expected))
        self._expected = now + self._interval
        overloaded = self.overloaded
        if overloaded != self._wasOverloaded:
            self._wasOverloaded = overloaded
            if overloaded:
                self._log.warn(
                    "overloaded: the reactor runs {lag:.0f} ms late; refusing new callbacks",
                    lag=self.lag * 1000,
                )
            else:
                self._log.info("no longer overloaded: accepting new callbacks")
