"""
Tests for L{callback_tw.callback.overload}: the overload guard.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from callback_tw.callback.errors import CallbackRefused
from callback_tw.callback.manager import CallbackManager
from callback_tw.callback.overload import OverloadGuard
from tests.test_callback_call import FakeDialer, FakeMedia, request


class OverloadGuardTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.monitor = OverloadGuard(self.clock, maxLag=0.1)
        self.monitor.startService()
        self.addCleanup(self.monitor.stopService)

    def runOnTime(self, seconds: float) -> None:
        for _ in range(round(seconds / 0.05)):
            self.clock.advance(0.05)

    def test_onTime(self) -> None:
        """A reactor that runs its timers on time is not overloaded."""
        self.runOnTime(2)
        self.assertFalse(self.monitor.overloaded)
        self.assertLess(self.monitor.lag, 0.001)

    def runLate(self, lateness: float, ticks: int) -> None:
        """Let C{ticks} ticks each run C{lateness} seconds late."""
        for _ in range(ticks):
            self.clock.advance(0.05 + lateness)

    def test_oneLateTickTolerated(self) -> None:
        """
        One timer 250 ms late (a collector pause, the process descheduled
        for a moment) is not an overload: callbacks are still accepted.
        """
        self.runOnTime(1)
        self.clock.advance(0.30)
        self.assertFalse(self.monitor.overloaded)
        self.runOnTime(1)
        self.assertFalse(self.monitor.overloaded)

    def test_longStall(self) -> None:
        """
        One stall of more than three times max_lag trips the guard at once:
        the process is starved of CPU and every callback in flight is late
        already; the lag reported is the stall's; it clears after about a
        second on time.
        """
        self.runOnTime(1)
        self.clock.advance(0.4)
        self.assertTrue(self.monitor.overloaded)
        self.assertAlmostEqual(self.monitor.lag, 0.35, places=6)
        self.runOnTime(1.1)
        self.assertFalse(self.monitor.overloaded)

    def test_sustainedLag(self) -> None:
        """
        A reactor 300 ms late at every tick is overloaded, and the median
        lateness says how late; it stays so while late ticks are still
        recent, and once it runs on time again for about a second, it is
        not; the change is logged both ways.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.runOnTime(1)
        self.runLate(0.3, 2)
        self.assertFalse(self.monitor.overloaded)
        self.runLate(0.3, 2)
        self.assertTrue(self.monitor.overloaded)
        self.assertAlmostEqual(self.monitor.lag, 0.3, places=6)
        self.runOnTime(0.2)
        self.assertTrue(self.monitor.overloaded)
        self.runOnTime(1)
        self.assertFalse(self.monitor.overloaded)
        texts = [formatEvent(e) for e in events]
        self.assertEqual(len(texts), 2, texts)
        self.assertEqual(
            texts[0],
            "overloaded: 3 of the reactor's last 4 ticks ran more than"
            " 100 ms late (median 300 ms, last 300 ms); refusing new callbacks",
        )
        self.assertEqual(texts[1], "no longer overloaded: accepting new callbacks")

    def test_lateTicksInARow(self) -> None:
        """
        Three ticks in a row each 150 ms late trip the guard at once, even
        though most ticks of the last second were on time: a reactor that
        starts falling behind is stopped early, before the callbacks it
        admitted overrun.
        """
        self.runOnTime(1)
        self.runLate(0.15, 2)
        self.assertFalse(self.monitor.overloaded)
        self.runLate(0.15, 1)
        self.assertTrue(self.monitor.overloaded)

    def test_lateTicksApart(self) -> None:
        """
        Late ticks with on-time ticks between them, a minority of the window,
        do not trip the guard.
        """
        self.runOnTime(1)
        for _ in range(5):
            self.runLate(0.15, 1)
            self.runOnTime(0.3)
            self.assertFalse(self.monitor.overloaded)

    def test_slowReactorWindow(self) -> None:
        """
        A reactor 250 ms late at two ticks out of three (never three in a
        row, never a stall) is overloaded once most ticks of the last second
        are late.
        """
        self.runOnTime(1)
        self.runLate(0.25, 2)
        self.runOnTime(0.05)
        self.assertFalse(self.monitor.overloaded)
        self.runLate(0.25, 2)
        self.assertTrue(self.monitor.overloaded)

    def test_noFlapping(self) -> None:
        """
        Once tripped, the guard stays tripped while a third of the ticks are
        still late: it does not flip with every other tick at the edge.
        """
        self.runLate(0.3, 8)
        self.assertTrue(self.monitor.overloaded)
        for _ in range(10):
            self.runLate(0.3, 1)
            self.runOnTime(0.1)
            self.assertTrue(self.monitor.overloaded)

    def test_sustainedSmallLagTolerated(self) -> None:
        """A reactor always a little late, under max_lag, is not overloaded."""
        self.runLate(0.08, 40)
        self.assertFalse(self.monitor.overloaded)

    def test_smallLagTolerated(self) -> None:
        """Lateness under max_lag does not trip the guard."""
        self.runOnTime(1)
        self.clock.advance(0.12)
        self.assertFalse(self.monitor.overloaded)

    def test_disabled(self) -> None:
        """max_lag = 0 turns the guard off: no timer at all."""
        clock = Clock()
        monitor = OverloadGuard(clock, maxLag=0)
        monitor.startService()
        self.assertEqual(clock.getDelayedCalls(), [])
        clock.advance(10)
        self.assertFalse(monitor.overloaded)

    def test_stop(self) -> None:
        """Stopping leaves nothing scheduled."""
        self.monitor.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ManagerGuardTests(SynchronousTestCase):
    def test_refusedWhileOverloaded(self) -> None:
        """
        While the reactor lags, a REQUEST is refused (ACK code=fail) and no
        leg is placed; running callbacks are left alone; once the lag is
        gone callbacks are accepted again.
        """
        clock = Clock()
        monitor = OverloadGuard(clock, maxLag=0.1)
        monitor.startService()
        self.addCleanup(monitor.stopService)
        dialer = FakeDialer()
        manager = CallbackManager(
            dialer, FakeMedia(), 10, 100, clock, overloadGuard=monitor
        )
        running = manager.startCallback(request(callbackId="a"))
        for _ in range(5):
            clock.advance(0.35)
        exc = self.assertRaises(
            CallbackRefused, manager.startCallback, request(callbackId="b")
        )
        self.assertIn("overloaded", exc.reason)
        self.assertEqual(len(dialer.legs), 1)
        self.assertEqual(running.state, "calling1")
        for _ in range(30):
            clock.advance(0.05)
        manager.startCallback(request(callbackId="b"))
        self.assertEqual(len(dialer.legs), 2)
