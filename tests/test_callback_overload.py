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


class AdmissionPacingTests(SynchronousTestCase):
    """
    L{OverloadGuard.admit}: admissions paced by a rate that is cut when late
    ticks recur and grows while the reactor runs on time.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.guard = OverloadGuard(self.clock, maxLag=0.1)
        self.guard.startService()
        self.addCleanup(self.guard.stopService)

    def offer(self, perTick: int, ticks: int, lateness: float = 0.0) -> int:
        """
        Offer C{perTick} REQUESTs before each of C{ticks} ticks, each tick
        running C{lateness} seconds late; return how many were admitted.
        """
        admitted = 0
        for _ in range(ticks):
            admitted += sum(self.guard.admit() for _ in range(perTick))
            self.clock.advance(0.05 + lateness)
        return admitted

    def test_noLimitWhileOnTime(self) -> None:
        """
        A reactor that never lagged admits everything offered, however
        fast: pacing starts only once lag was seen.
        """
        self.assertEqual(self.offer(50, 40), 2000)
        self.assertIsNone(self.guard.rate)

    def test_oneLateTickNoCut(self) -> None:
        """
        One late tick alone (a collector pause) does not limit admissions.
        """
        self.offer(5, 20)
        self.offer(5, 1, lateness=0.2)
        self.assertIsNone(self.guard.rate)
        self.assertEqual(self.offer(5, 20), 100)

    def test_cutWhenLateTicksRecur(self) -> None:
        """
        A second late tick within the window cuts the rate to four fifths of
        what was admitted over the last second, without tripping the on/off
        guard; admissions then follow the rate, the rest is refused.
        """
        self.offer(5, 20)
        self.offer(5, 1, lateness=0.17)
        self.assertIsNone(self.guard.rate)
        self.offer(5, 1, lateness=0.17)
        self.assertFalse(self.guard.overloaded)
        # The second late tick runs at 1.44 s: the last second holds the
        # REQUESTs offered at 0.45 ... 0.95, 1.0 and 1.22 s, 5 each.
        self.assertEqual(self.guard.rate, 0.8 * 65)
        # Offered at 200/s for half a second: 52/s over the 0.45 s after the
        # first offer.
        self.assertEqual(self.offer(10, 10), 23)

    def test_slowTicksCut(self) -> None:
        """
        Ticks 70 ms late, under max_lag (the on/off rule tolerates them for
        ever), cut the rate once two of them fall within a second: a
        callback waits for the reactor at each of its steps, so such a lag
        already delays its join. One alone does not.
        """
        self.offer(5, 20)
        self.offer(5, 1, lateness=0.07)
        self.offer(5, 3)
        self.assertIsNone(self.guard.rate)
        self.offer(5, 1, lateness=0.07)
        self.assertFalse(self.guard.overloaded)
        self.assertIsNotNone(self.guard.rate)
        self.offer(5, 40, lateness=0.07)
        self.assertFalse(self.guard.overloaded)

    def test_smallLagNoCut(self) -> None:
        """Ticks a little late (40 ms, under half of max_lag) cut nothing."""
        self.offer(5, 60, lateness=0.04)
        self.assertIsNone(self.guard.rate)

    def test_oneCutPerWindow(self) -> None:
        """
        Late ticks that go on recurring cut the rate once per second, not at
        every late tick: a cut shows its effect only later.
        """
        self.offer(5, 20)
        self.offer(5, 2, lateness=0.17)
        first = self.guard.rate
        self.offer(5, 1)
        self.offer(5, 2, lateness=0.17)
        self.assertEqual(self.guard.rate, first)
        self.offer(5, 3)
        self.offer(5, 2, lateness=0.17)
        self.assertLess(self.guard.rate, first)

    def test_growWhileOnTime(self) -> None:
        """
        Once no tick of the last second was late, the rate grows by 5 % a
        second while admissions press against it.
        """
        self.offer(5, 20)
        self.offer(5, 2, lateness=0.17)
        cut = self.guard.rate
        self.offer(20, 20)
        self.assertEqual(self.guard.rate, cut)
        self.offer(20, 40)
        self.assertAlmostEqual(self.guard.rate, cut * 1.05**2, delta=cut * 0.01)

    def test_noWindUp(self) -> None:
        """
        While the load is light the rate grows no further than twice what
        is admitted, or the rate at which lag last appeared, whichever is
        more: a burst later cannot run far past what is known to be fine.
        """
        self.offer(5, 20)
        self.offer(5, 2, lateness=0.17)
        self.assertEqual(self.guard.rate, 0.8 * 65)
        # 20/s admitted: the rate grows back to 65/s, no further.
        self.offer(1, 600)
        self.assertEqual(self.guard.rate, 65)

    def test_refuseAllWhileOverloaded(self) -> None:
        """
        While the reactor lags for good, nothing is admitted, whatever the
        rate.
        """
        self.offer(5, 20)
        self.offer(0, 4, lateness=0.3)
        self.assertTrue(self.guard.overloaded)
        self.assertEqual(self.offer(5, 1, lateness=0.3), 0)

    def test_stallCuts(self) -> None:
        """One stall of more than three times max_lag cuts at once."""
        self.offer(5, 20)
        self.offer(5, 1, lateness=0.42)
        # At 1.47 s: the REQUESTs offered at 0.5 ... 0.95 and 1.0 s.
        self.assertEqual(self.guard.rate, 0.8 * 55)

    def test_disabled(self) -> None:
        """max_lag = 0: everything is admitted, nothing is counted."""
        guard = OverloadGuard(self.clock, maxLag=0)
        guard.startService()
        self.assertTrue(all(guard.admit() for _ in range(1000)))
        self.assertIsNone(guard.rate)


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

    def test_refusedBeyondRate(self) -> None:
        """
        While the guard paces admissions, a REQUEST beyond its rate is
        refused with the rate in the reason, and no leg is placed.
        """
        clock = Clock()
        guard = OverloadGuard(clock, maxLag=0.1)
        guard.startService()
        self.addCleanup(guard.stopService)
        dialer = FakeDialer()
        manager = CallbackManager(
            dialer, FakeMedia(), 1000, 100, clock, overloadGuard=guard
        )
        for i in range(20):
            manager.admit(request(callbackId=f"a{i}"))
            clock.advance(0.05)
        clock.advance(0.22)
        clock.advance(0.22)
        # Cut at 1.44 s to four fifths of the 11 admitted since 0.45 s.
        self.assertEqual(guard.rate, 0.8 * 11)
        exc = self.assertRaises(CallbackRefused, manager.admit, request(callbackId="b"))
        self.assertEqual(exc.reason, "overloaded (admitting at most 9 new callbacks/s)")
        self.assertEqual(dialer.legs, [])
