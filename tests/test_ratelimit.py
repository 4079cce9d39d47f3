"""
Tests for L{callback_tw.ratelimit}: one log line per key per interval, a cap on
the lines of an interval over all keys, bounded memory, counts of what was not
logged.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import Logger, LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from callback_tw.ratelimit import LogLimiter, LogTicket


class KeyedTicketTests(SynchronousTestCase):
    """
    L{LogLimiter} writes at most one line per key per interval, and beyond
    C{maxKeys} keys one shared line per interval.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.limiter = LogLimiter(self.clock, interval=10, maxKeys=3, burst=None)

    def test_firstEventLogged(self) -> None:
        """
        The first event of a key gets a line with nothing suppressed.
        """
        self.assertEqual(self.limiter.ticket("a"), LogTicket(False, 0))

    def test_suppressedWithinInterval(self) -> None:
        """
        Further events within the interval are counted, and the next line after
        the interval reports them.
        """
        self.limiter.ticket("a")
        for _ in range(99):
            self.assertIsNone(self.limiter.ticket("a"))
        self.clock.advance(9.9)
        self.assertIsNone(self.limiter.ticket("a"))
        self.clock.advance(0.1)
        self.assertEqual(self.limiter.ticket("a"), LogTicket(False, 100))
        self.assertIsNone(self.limiter.ticket("a"))
        self.assertEqual(self.limiter.suppressedTotal, 101)

    def test_keysIndependent(self) -> None:
        """
        Each key has its own interval.
        """
        self.limiter.ticket("a")
        self.assertEqual(self.limiter.ticket("b"), LogTicket(False, 0))
        self.assertIsNone(self.limiter.ticket("a"))

    def test_boundedKeys(self) -> None:
        """
        Beyond C{maxKeys} keys in one interval, all others share one line per
        interval, so thousands of keys give C{maxKeys + 1} lines per interval.
        """
        tickets = [self.limiter.ticket(i) for i in range(1000)]
        self.assertEqual(
            [t for t in tickets if t is not None],
            [LogTicket(False, 0)] * 3 + [LogTicket(True, 0)],
        )
        self.assertEqual(len(self.limiter._keys), 3)
        self.clock.advance(10)
        tickets = [self.limiter.ticket(i) for i in range(1000, 2000)]
        self.assertEqual(
            [t for t in tickets if t is not None],
            [LogTicket(False, 0)] * 3 + [LogTicket(True, 996)],
        )
        self.assertEqual(len(self.limiter._keys), 3)

    def test_expiredKeyMakesRoom(self) -> None:
        """
        When all keys are tracked, the key with the oldest line makes room for a new
        one once its interval is over; until then the new key shares the line of
        the untracked ones. Keys not needed for room keep their suppressed counts.
        """
        for key in "abc":
            self.limiter.ticket(key)
            self.clock.advance(1)
        self.limiter.ticket("c")  # suppressed: c's line was 1 s ago
        self.assertEqual(self.limiter.ticket("d"), LogTicket(True, 0))
        self.clock.advance(7)  # t = 10: a's interval is over, b's is not
        self.assertEqual(self.limiter.ticket("e"), LogTicket(False, 0))
        self.assertEqual(list(self.limiter._keys), ["b", "c", "e"])
        self.assertIsNone(self.limiter.ticket("f"))
        self.clock.advance(2)  # t = 12: b and c are over
        self.assertEqual(self.limiter.ticket("c"), LogTicket(False, 1))

    def test_zeroKeys(self) -> None:
        """
        With C{maxKeys = 0} every key shares the one line per interval.
        """
        limiter = LogLimiter(self.clock, interval=10, maxKeys=0, burst=None)
        self.assertEqual(limiter.ticket("a"), LogTicket(True, 0))
        self.assertIsNone(limiter.ticket("b"))
        self.assertRaises(ValueError, LogLimiter, self.clock, maxKeys=-1)

    def test_badBurst(self) -> None:
        """
        A burst of less than one line would log nothing at all: a configuration
        error, not a silent limiter.
        """
        self.assertRaises(ValueError, LogLimiter, self.clock, burst=0)

    def test_emit(self) -> None:
        """
        L{LogLimiter.emit} logs the caller's line with the suppressed count,
        once per interval.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        log = Logger(namespace="test_ratelimit")
        for _ in range(5):
            self.limiter.emit(log, "as1", "IIF refused from {peer}", peer="as1")
        self.clock.advance(10)
        self.assertTrue(
            self.limiter.emit(log, "as1", "IIF refused from {peer}", peer="as1")
        )
        self.assertFalse(
            self.limiter.emit(log, "as1", "IIF refused from {peer}", peer="as1")
        )
        events = [e for e in observer if e.get("log_namespace") == "test_ratelimit"]
        self.assertEqual(
            [formatEvent(e) for e in events],
            [
                "IIF refused from as1",
                "IIF refused from as1 (4 similar events not logged)",
            ],
        )
        self.assertEqual([e["log_level"] for e in events], [LogLevel.warn] * 2)
        self.assertEqual([e["suppressed"] for e in events], [0, 4])

    def test_emitShared(self) -> None:
        """
        A shared line says that it stands for every key beyond the tracked ones.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        log = Logger(namespace="test_ratelimit")
        for i in range(4):
            self.limiter.emit(
                log, i, "bad datagram from {source}", LogLevel.info, source=i
            )
        events = [e for e in observer if e.get("log_namespace") == "test_ratelimit"]
        self.assertEqual(
            formatEvent(events[-1]),
            "bad datagram from 3 (one line for every key beyond 3 tracked ones)",
        )
        self.assertEqual(events[-1]["log_level"], LogLevel.info)
        self.assertTrue(events[-1]["shared"])


class BurstTests(SynchronousTestCase):
    """
    C{burst} caps the lines of one interval over all keys; what it holds back
    is told in the next line written.
    """

    def test_allow(self) -> None:
        """One line per key per interval; the next one tells how many were dropped."""
        clock = Clock()
        limiter = LogLimiter(clock, interval=10, burst=100)
        self.assertEqual(limiter.allow("a"), 0)
        self.assertIsNone(limiter.allow("a"))
        self.assertIsNone(limiter.allow("a"))
        self.assertEqual(limiter.allow("b"), 0)
        clock.advance(10)
        self.assertEqual(limiter.allow("a"), 2)

    def test_allowGlobal(self) -> None:
        """Many keys at once: at most C{burst} lines per interval."""
        clock = Clock()
        limiter = LogLimiter(clock, interval=10, burst=3)
        allowed = [limiter.allow(f"k{i}") for i in range(10)]
        self.assertEqual(allowed, [0, 0, 0] + [None] * 7)
        clock.advance(10)
        self.assertEqual(limiter.allow("k0"), 7)

    def test_defaults(self) -> None:
        """
        By default a key gets one line per 10 s and all keys together 20 lines
        per 10 s.
        """
        clock = Clock()
        limiter = LogLimiter(clock)
        allowed = [limiter.allow(f"k{i}") for i in range(25)]
        self.assertEqual(allowed, [0] * 20 + [None] * 5)
        clock.advance(9.9)
        self.assertIsNone(limiter.allow("k0"))
        clock.advance(0.1)
        self.assertEqual(limiter.allow("k0"), 6)

    def test_capAndOwnCountAdd(self) -> None:
        """
        A key's line tells both its own suppressed events and those the cap held
        back, and the cap's count is told only once.
        """
        clock = Clock()
        limiter = LogLimiter(clock, interval=10, burst=1)
        self.assertEqual(limiter.ticket("a"), LogTicket(False, 0))
        self.assertIsNone(limiter.ticket("a"))
        self.assertIsNone(limiter.ticket("b"))
        self.assertIsNone(limiter.ticket("c"))
        clock.advance(10)
        self.assertEqual(limiter.ticket("a"), LogTicket(False, 3))
        clock.advance(10)
        self.assertEqual(limiter.ticket("b"), LogTicket(False, 0))
        self.assertEqual(limiter.suppressedTotal, 3)

    def test_sharedLineCapped(self) -> None:
        """
        The shared line counts against the cap too: with C{burst} below
        C{maxKeys + 1} the cap is the bound.
        """
        clock = Clock()
        limiter = LogLimiter(clock, interval=10, maxKeys=2, burst=2)
        tickets = [limiter.ticket(i) for i in range(100)]
        self.assertEqual(
            [t for t in tickets if t is not None], [LogTicket(False, 0)] * 2
        )
        clock.advance(10)
        self.assertEqual(limiter.ticket(100), LogTicket(False, 98))
        self.assertEqual(limiter.suppressedTotal, 98)


class PropertyTests(SynchronousTestCase):
    """
    Whatever the events, the bounds hold and no event goes uncounted.
    """

    @settings(max_examples=200, deadline=None)
    @given(
        events=st.lists(
            st.tuples(st.integers(0, 30), st.sampled_from([0, 0, 0.5, 3, 11])),
            max_size=300,
        ),
        maxKeys=st.integers(0, 5),
        burst=st.one_of(st.none(), st.integers(1, 8)),
    )
    def test_bounds(self, events, maxKeys, burst) -> None:
        """
        Memory stays within C{maxKeys}; no interval-long stretch of time has more
        than C{maxKeys + 1} lines; no burst window (opened by the first line after
        the previous window closed) has more than C{burst} lines; every event is
        either a line or counted in C{suppressedTotal}.
        """
        clock = Clock()
        limiter = LogLimiter(clock, interval=10, maxKeys=maxKeys, burst=burst)
        lines: list[float] = []
        for key, step in events:
            clock.advance(step)
            if limiter.ticket(key) is not None:
                lines.append(clock.seconds())
            self.assertLessEqual(len(limiter._keys), maxKeys)
        for i, start in enumerate(lines):
            within = [t for t in lines[i:] if t - start < 10]
            self.assertLessEqual(len(within), maxKeys + 1)
        windowStart, windowLines = float("-inf"), 0
        for t in lines:
            if t - windowStart >= 10:
                windowStart, windowLines = t, 0
            windowLines += 1
            self.assertLessEqual(windowLines, burst or len(lines))
        self.assertEqual(len(lines) + limiter.suppressedTotal, len(events))
