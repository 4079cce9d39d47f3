"""
Tests for L{callback_tw.callback.overload}: the overload guard.
"""

from __future__ import annotations

from twisted.internet.task import Clock
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

    def test_lateReactor(self) -> None:
        """
        A reactor that ran 300 ms late is overloaded for the next second,
        then recovers; the change is logged both ways.
        """
        self.runOnTime(1)
        self.clock.advance(0.35)
        self.assertTrue(self.monitor.overloaded)
        self.assertAlmostEqual(self.monitor.lag, 0.3, places=6)
        self.runOnTime(0.9)
        self.assertTrue(self.monitor.overloaded)
        self.runOnTime(0.2)
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
        clock.advance(0.5)
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
