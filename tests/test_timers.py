"""
Tests for L{callback_tw.timers}.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from callback_tw.timers import cancelDelayed


class CancelDelayedTests(SynchronousTestCase):
    def test_cancelsPending(self) -> None:
        """A pending call is cancelled and never runs."""
        clock = Clock()
        ran = []
        call = clock.callLater(1, ran.append, 1)
        cancelDelayed(call)
        clock.advance(2)
        self.assertEqual(ran, [])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_noneRunAndCancelledAreFine(self) -> None:
        """None, a call that ran and a cancelled call are left alone, no error."""
        clock = Clock()
        cancelDelayed(None)
        ran = clock.callLater(1, lambda: None)
        clock.advance(1)
        cancelDelayed(ran)
        cancelled = clock.callLater(1, lambda: None)
        cancelled.cancel()
        cancelDelayed(cancelled)
        self.assertFalse(ran.active())
        self.assertFalse(cancelled.active())
