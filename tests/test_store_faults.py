"""
Tests for L{callback_tw.store} when things go wrong: the database going away
and coming back (for real: SQLite's write lock held by another connection,
PostgreSQL's role locked out), the bounded queue, closing, a process that
never closes its store.  Same backends as L{tests.test_store}.
"""

from __future__ import annotations

import os
import sys

from twisted.internet.defer import gatherResults
from twisted.internet.testing import EventLoggingObserver
from twisted.internet.utils import getProcessOutputAndValue
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase

from callback_tw.store import StoreUnavailable
from callback_tw.store.url import parseURL
from tests.test_store import (
    PostgreSQLBackend,
    SQLiteBackend,
    StoreTestBase,
    request,
    sleep,
    waitFor,
)


class StoreFaultTestsMixin(StoreTestBase):
    """Outages and shutdown, whatever the database."""

    async def test_downThenRecovered(self) -> None:
        """
        While the database is down: healthy is false, accept fails at once,
        other writes wait (one log line, however many retries), then land in
        order when it is back; healthy turns true again.
        """
        store = await self.openStore(retryDelays=(0.05, 0.2), timeout=0.2)
        await store.accept(request("k1"))
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.breakDatabase(self.url)
        self.addCleanup(self.repairDatabase, self.url)
        answered = store.update("k1", state="calling2", answered1At=5.0)
        heartbeats = [store.heartbeat(at=float(t)) for t in range(6, 16)]
        await waitFor(lambda: not store.healthy)
        self.assertEqual(store.pendingWrites, 2)
        refused = store.accept(request("k2"))
        self.assertTrue(refused.called)
        await self.assertFailure(refused, StoreUnavailable)
        await sleep(1.0)
        self.repairDatabase(self.url)
        self.assertTrue(await answered)
        self.assertEqual(set(await gatherResults(heartbeats)), {None})
        self.assertTrue(store.healthy)
        record = await store.lookup("k1")
        self.assertEqual(
            (record.state, record.answered1At, await store.aliveAt()),
            ("calling2", 5.0, 15.0),
        )
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertIn("unavailable", errors[0]["log_format"])
        self.assertEqual(errors[0]["queued"], 2)
        self.assertEqual(errors[0]["url"], parseURL(self.url).safe)
        if self.password:
            self.assertNotIn(self.password, repr(errors))
        self.assertTrue(await store.accept(request("k2")))

    async def test_idleProbe(self) -> None:
        """
        With no write at all, the probe notices the database going away
        (healthy false, one error line) and coming back (healthy true).
        """
        store = await self.openStore(probeInterval=0.05, retryDelays=(0.05, 0.1))
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.breakDatabase(self.url)
        self.addCleanup(self.repairDatabase, self.url)
        await waitFor(lambda: not store.healthy)
        self.repairDatabase(self.url)
        await waitFor(lambda: store.healthy)
        levels = [
            e["log_level"]
            for e in events
            if e["log_namespace"].startswith("callback_tw.store")
        ]
        self.assertEqual(levels, [LogLevel.error, LogLevel.info])

    async def test_queueBounded(self) -> None:
        """
        The writes kept while the database is down are bounded: one more
        fails with StoreUnavailable instead of growing memory.
        """
        store = await self.openStore(retryDelays=(0.05, 0.2), timeout=0.2, maxQueue=3)
        await store.accept(request("k1"))
        self.breakDatabase(self.url)
        self.addCleanup(self.repairDatabase, self.url)
        kept = [store.update("k1", leg1Status=180 + i) for i in range(3)]
        await waitFor(lambda: not store.healthy)
        await self.assertFailure(store.update("k1", state="x"), StoreUnavailable)
        self.repairDatabase(self.url)
        self.assertEqual(await gatherResults(kept), [True, True, True])
        self.assertEqual((await store.lookup("k1")).leg1Status, 182)

    async def test_closeCommitsQueued(self) -> None:
        """close() commits what is queued before closing the connections."""
        store = await self.openStore()
        await store.accept(request("k1"))
        done = store.update("k1", state="ended")
        await store.close()
        self.assertTrue(done.called)
        self.assertEqual(
            self.readDirectly("SELECT state FROM callbacks")[0][0], "ended"
        )
        await self.assertFailure(store.lookup("k1"), StoreUnavailable)

    async def test_closeCommitsAllQueued(self) -> None:
        """close() drains a queue longer than one transaction's batch."""
        store = await self.openStore(maxBatch=3)
        await store.accept(request("k1"))
        done = [store.update("k1", leg1Status=100 + i) for i in range(10)]
        await store.close()
        self.assertEqual([d.called for d in done], [True] * 10)
        self.assertEqual(
            self.readDirectly("SELECT leg1_status FROM callbacks")[0][0], 109
        )


class SQLiteStoreFaultTests(SQLiteBackend, StoreFaultTestsMixin, TestCase):
    """Faults of an SQLite store."""

    async def test_unclosedStoreLetsProcessExit(self) -> None:
        """
        A process that opened a store and never closed it still exits (the
        store's threads do not hold it), and what it committed is there.
        """
        path = os.path.abspath(self.mktemp())
        # SIGALRM ends a child that hangs at exit, so the test fails, not hangs.
        script = (
            "import signal\n"
            "signal.alarm(20)\n"
            "from twisted.internet import defer, task\n"
            "from callback_tw.store import NewCallback, open as openStore\n"
            "async def main(reactor):\n"
            f"    store = await openStore('sqlite:///{path}', 's', reactor)\n"
            "    await store.accept(NewCallback('k1', 'as1', 'h:1', '1', '2', 6))\n"
            "    store.update('k1', state='calling1')\n"
            "task.react(lambda r: defer.ensureDeferred(main(r)))\n"
        )
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        d = getProcessOutputAndValue(
            sys.executable, ["-c", script], env={**os.environ, "PYTHONPATH": root}
        )
        # A child ended by a signal fails the Deferred with (out, err, signal).
        d.addErrback(lambda f: (b"", b"", f"ended by signal {f.value!r}"))
        out, err, code = await d
        self.assertEqual((code, err), (0, b""))
        self.url = "sqlite:///" + path
        self.assertEqual(self.readDirectly("SELECT id FROM callbacks"), [("k1",)])


class PostgreSQLStoreFaultTests(PostgreSQLBackend, StoreFaultTestsMixin, TestCase):
    """Faults of a PostgreSQL store."""
