"""
Tests for the store's write queue (L{callback_tw.store.groupcommit}): when a
group is committed, that an accept does not wait behind other writes, and
that folded writes leave exactly the rows separate writes
leave.  The store tests run against a real SQLite file and the real
PostgreSQL server of L{tests.pgserver}; the timing tests drive
L{GroupCommit} with a clock and a writer that records its batches.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from callback_tw.store.groupcommit import GroupCommit
from tests.test_store import (
    PostgreSQLBackend,
    SQLiteBackend,
    StoreTestBase,
    dialog,
    request,
)


class RecordingWriter:
    """
    A L{callback_tw.store.worker.DatabaseThread} stand-in: C{run} records
    each batch and returns a Deferred the test fires (C{commit}).
    """

    def __init__(self) -> None:
        self.batches: list[tuple[Any, Deferred]] = []

    def run(self, function: Any, batch: Any) -> Deferred:
        d: Deferred = Deferred()
        self.batches.append((batch, d))
        return d

    def commit(self, index: int = -1) -> None:
        """Commit batch C{index}: every write in it returns its own tag."""
        batch, d = self.batches[index]
        d.callback([write.apply(None)() for write in batch])


def tagged(tag: str) -> Any:
    """A write that returns C{tag} (the recording writer has no connection)."""
    return lambda connection: lambda: tag


class GroupTimingTests(SynchronousTestCase):
    """When L{GroupCommit} sends a group to the writer."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.writer = RecordingWriter()
        self.queue = GroupCommit(
            self.writer, "sqlite:///x", self.clock, groupDelay=0.005, probeInterval=0
        )

    def tags(self, index: int) -> list[str]:
        return [write.apply(None)() for write in self.writer.batches[index][0]]

    def test_updateWaitsForCompany(self) -> None:
        """
        A write other than an accept waits up to groupDelay on an idle
        writer, so that the writes of that moment share one transaction.
        """
        done = self.queue.enqueue(tagged("u1"), callbackId="k1")
        self.clock.advance(0.004)
        self.queue.enqueue(tagged("u2"), callbackId="k2")
        self.assertEqual(self.writer.batches, [])
        self.clock.advance(0.001)
        self.assertEqual(self.tags(0), ["u1", "u2"])
        self.writer.commit()
        self.assertEqual(self.successResultOf(done), "u1")

    def test_acceptGoesAtOnce(self) -> None:
        """
        An accept is sent at the next reactor turn, ahead of the writes of
        other callbacks that were waiting, and takes them along.
        """
        self.queue.enqueue(tagged("u1"), callbackId="k1")
        accepted = self.queue.enqueue(
            tagged("a2"), retry=False, callbackId="k2", first=True
        )
        self.clock.advance(0)
        self.assertEqual(self.tags(0), ["a2", "u1"])
        self.writer.commit()
        self.assertEqual(self.successResultOf(accepted), "a2")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_acceptsKeepTheirOrder(self) -> None:
        """Accepts go ahead of other writes in the order they came."""
        self.queue.enqueue(tagged("u1"), callbackId="k1")
        for tag in ("a2", "a3"):
            self.queue.enqueue(tagged(tag), retry=False, callbackId=tag, first=True)
        self.clock.advance(0)
        self.assertEqual(self.tags(0), ["a2", "a3", "u1"])

    def test_acceptBehindItsOwnCallback(self) -> None:
        """
        A write that must go first never overtakes a queued write of its
        own callback: each callback's writes keep their order.
        """
        self.queue.enqueue(tagged("k1 end"), callbackId="k1")
        self.queue.enqueue(tagged("u2"), callbackId="k2")
        self.queue.enqueue(tagged("k1 again"), retry=False, callbackId="k1", first=True)
        self.clock.advance(0.005)
        self.assertEqual(self.tags(0), ["k1 end", "u2", "k1 again"])

    def test_acceptDuringTransaction(self) -> None:
        """
        An accept that comes while a transaction runs goes as soon as it is
        committed, with what was queued meanwhile, without waiting for the
        group delay.
        """
        self.queue.enqueue(tagged("u1"), callbackId="k1")
        self.clock.advance(0.005)
        self.queue.enqueue(tagged("u2"), callbackId="k2")
        self.queue.enqueue(tagged("a3"), retry=False, callbackId="k3", first=True)
        self.clock.advance(0)
        self.assertEqual(len(self.writer.batches), 1)
        self.writer.commit()
        self.clock.advance(0)
        self.assertEqual(self.tags(1), ["a3", "u2"])

    def test_waitedDuringTransaction(self) -> None:
        """
        Writes that came while a transaction ran go when it is committed if
        they have waited groupDelay by then, else when they have.
        """
        self.queue.enqueue(tagged("u1"), callbackId="k1")
        self.clock.advance(0.005)
        self.queue.enqueue(tagged("u2"), callbackId="k2")
        self.clock.advance(0.002)
        self.writer.commit()
        self.clock.advance(0.002)
        self.assertEqual(len(self.writer.batches), 1)
        self.clock.advance(0.001)
        self.assertEqual(self.tags(1), ["u2"])


class StoreQueueTestsMixin(StoreTestBase):
    """The store's queue against a real database, whatever it is."""

    async def test_acceptAheadOfBacklog(self) -> None:
        """
        With more writes queued than one transaction takes, a new accept is
        committed in the next transaction, not behind the backlog; the
        backlog's writes still land in their order.
        """
        store = await self.openStore(maxBatch=3)
        await store.accept(request("k0"))
        writes = []
        for n in range(3):
            writes.append(store.update("k0", leg1Status=180 + n))
            writes.append(store.upsertLeg(dialog("k0", nextCSeq=2 + n)))
        start = store.transactions
        seen: list[int] = []
        accepted = store.accept(request("k1"))
        accepted.addCallback(lambda result: seen.append(store.transactions) or result)
        self.assertTrue((await accepted).created)
        await gatherResults(writes)
        self.assertEqual(seen, [start + 1])
        self.assertEqual(store.transactions, start + 3)
        record = await store.lookup("k0")
        self.assertEqual(record.leg1Status, 182)
        self.assertEqual([leg.nextCSeq for leg in await store.legs("k0")], [4])

    async def test_updatesFolded(self) -> None:
        """
        Updates of one callback queued one behind the other are one write,
        and leave the row that the same updates committed one by one leave.
        """
        store = await self.openStore()
        for callbackId in ("folded", "separate"):
            await store.accept(request(callbackId), at=100.0)
        updates = [
            {"state": "calling1"},
            {"state": "calling2", "answered1At": 101.0, "called2At": 101.0},
            {"leg1Status": 200, "state": "joining"},
            {"state": "joined", "joinedAt": 103.0, "checkpointAt": 103.0},
        ]
        folded = [store.update("folded", **values) for values in updates]
        self.assertEqual(store.pendingWrites, 1)
        self.assertEqual(await gatherResults(folded), [True] * 4)
        for values in updates:
            self.assertTrue(await store.update("separate", **values))
        one, other = await store.lookup("folded"), await store.lookup("separate")
        self.assertEqual(one.state, "joined")
        self.assertEqual(
            {**asdict(one), "id": None}, {**asdict(other), "id": None}, "same row"
        )

    async def test_foldingKeepsOrderOfOneCallback(self) -> None:
        """
        An update never folds into an earlier one across another write of
        the same callback (a leg dialog): three writes stay three, in order.
        Another callback's write in between does not count.
        """
        store = await self.openStore()
        await store.accept(request("k1"))
        await store.accept(request("k2"))
        writes = [
            store.update("k1", state="calling1"),
            store.update("k2", state="calling1"),
            store.update("k1", leg1Status=180),
            store.upsertLeg(dialog("k1")),
            store.update("k1", state="calling2"),
        ]
        self.assertEqual(store.pendingWrites, 4)
        await gatherResults(writes)
        record = await store.lookup("k1")
        self.assertEqual((record.state, record.leg1Status), ("calling2", 180))

    async def test_legDialogsFolded(self) -> None:
        """
        A leg's newer dialog queued right behind its older one replaces it
        (the row holds the whole dialog); the other leg's is its own write.
        """
        store = await self.openStore()
        await store.accept(request("k1"))
        writes = [
            store.upsertLeg(dialog("k1", 1, state="ringing")),
            store.upsertLeg(dialog("k1", 1, state="answered", nextCSeq=3)),
            store.upsertLeg(dialog("k1", 2, state="ringing")),
        ]
        self.assertEqual(store.pendingWrites, 2)
        await gatherResults(writes)
        self.assertEqual(
            await store.legs("k1"),
            [
                dialog("k1", 1, state="answered", nextCSeq=3),
                dialog("k1", 2, state="ringing"),
            ],
        )


class SQLiteStoreQueueTests(SQLiteBackend, StoreQueueTestsMixin, TestCase):
    """The write queue of an SQLite store."""


class PostgreSQLStoreQueueTests(PostgreSQLBackend, StoreQueueTestsMixin, TestCase):
    """The write queue of a PostgreSQL store (one pipeline per group)."""
