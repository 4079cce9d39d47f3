"""
Tests for the server heartbeat of L{callback_tw.store.Store} (one
C{servers} row per server) and for recovery's settling of the joined
callbacks' checkpoints, against a real SQLite file and a real PostgreSQL
server, and for the migration that adds the C{servers} table.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import TestCase

from callback_tw.store.schema import CURRENT, MIGRATIONS
from callback_tw.store.sql import connect
from callback_tw.store.url import parseURL
from tests.test_store import (
    PostgreSQLBackend,
    SQLiteBackend,
    StoreTestBase,
    request,
)


class HeartbeatTestsMixin(StoreTestBase):
    """The heartbeat and the settling, whatever the database."""

    async def test_oneRowPerServer(self) -> None:
        """
        Each server writes and reads only its own row: one row per server
        however often it beats, and another server's beats never move it.
        """
        one = await self.openStore("srv1")
        two = await self.openStore("srv2")
        self.assertIsNone(await one.aliveAt())
        for t in (10.0, 11.0, 12.0):
            await one.heartbeat(at=t)
        await two.heartbeat(at=50.0)
        self.assertEqual((await one.aliveAt(), await two.aliveAt()), (12.0, 50.0))
        self.assertEqual(await one.aliveAt("srv2"), 50.0)
        self.assertEqual(
            self.readDirectly(
                "SELECT server_id, alive_at, started_at FROM servers"
                " ORDER BY server_id"
            ),
            [("srv1", 12.0, 10.0), ("srv2", 50.0, 50.0)],
        )

    async def test_settleUpToTheLastHeartbeat(self) -> None:
        """
        After a crash, the next run's settling gives every joined,
        unfinished callback of this server accepted during the crashed run
        checkpoint_at = that run's last heartbeat: its recovered
        real_duration counts the talk time up to it.  Callbacks not joined,
        ended, or of another server are left alone.
        """
        crashed = await self.openStore("srv1")
        other = await self.openStore("srv2")
        await crashed.heartbeat(at=1000.0)
        await crashed.accept(request("joined"), at=1001.0)
        await crashed.update("joined", state="joined", joinedAt=1002.0)
        await crashed.update("joined", checkpointAt=1002.0)
        await crashed.accept(request("ringing"), at=1001.0)
        await crashed.accept(request("ended"), at=1001.0)
        await crashed.update("ended", joinedAt=1002.0)
        await crashed.markEnded("ended", "user2 hung up", 3, at=1005.0)
        await other.heartbeat(at=1000.0)
        await other.accept(request("theirs"), at=1001.0)
        await other.update("theirs", joinedAt=1002.0)
        await crashed.heartbeat(at=1050.4)
        await other.heartbeat(at=1060.0)

        restarted = await self.openStore("srv1")
        self.assertEqual(await restarted.settleCheckpoints(), 1)
        joined = await restarted.lookup("joined")
        self.assertEqual(
            (joined.checkpointAt, joined.recoveredDuration()), (1050.4, 48)
        )
        self.assertIsNone((await restarted.lookup("ringing")).checkpointAt)
        self.assertIsNone((await restarted.lookup("ended")).checkpointAt)
        self.assertIsNone((await restarted.lookup("theirs")).checkpointAt)

    async def test_settleIsIdempotentAndNeverUsesALaterRun(self) -> None:
        """
        Settling again (a crash during recovery) changes nothing; once the
        next run's heartbeat moves on, a callback the earlier run left
        unfinished (its end could not be stored) keeps the earlier run's
        heartbeat: the later run's uptime is never its talk time.
        """
        first = await self.openStore("srv1")
        await first.heartbeat(at=1000.0)
        await first.accept(request("k1"), at=1001.0)
        await first.update("k1", state="joined", joinedAt=1002.0)
        await first.heartbeat(at=1020.0)

        second = await self.openStore("srv1")
        self.assertEqual(await second.settleCheckpoints(), 1)
        self.assertEqual(await second.settleCheckpoints(), 0)
        self.assertEqual((await second.lookup("k1")).checkpointAt, 1020.0)
        await second.heartbeat(at=5000.0)
        await second.accept(request("k2"), at=5001.0)
        await second.update("k2", state="joined", joinedAt=5002.0)
        await second.heartbeat(at=5010.0)

        third = await self.openStore("srv1")
        self.assertEqual(await third.settleCheckpoints(), 1)
        self.assertEqual(
            [
                (r.id, r.checkpointAt, r.recoveredDuration())
                for r in await third.unfinished()
            ],
            [("k1", 1020.0, 18), ("k2", 5010.0, 8)],
        )

    async def test_settleNeverLowersACheckpoint(self) -> None:
        """A checkpoint later than the heartbeat (the join's own) stays."""
        store = await self.openStore("srv1")
        await store.heartbeat(at=1000.0)
        await store.accept(request("k1"), at=1001.0)
        await store.update("k1", joinedAt=1002.0, checkpointAt=1002.0)
        self.assertEqual(await store.settleCheckpoints(), 0)
        self.assertEqual((await store.lookup("k1")).checkpointAt, 1002.0)

    async def test_migratesAVersion1Database(self) -> None:
        """
        A database at schema version 1 (before the heartbeat) opens at
        L{CURRENT}, keeps its callbacks, and a callback it left joined is
        recovered from its own checkpoint (there is no heartbeat to use).
        """
        self.assertEqual(CURRENT, 2)
        url = parseURL(self.url)
        if url.path is not None:
            os.makedirs(os.path.dirname(url.path), exist_ok=True)
        connection = connect(url)
        connection.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        for statement in MIGRATIONS[0][1]:
            connection.execute(statement)
        connection.execute("INSERT INTO schema_version (version) VALUES (1)")
        connection.execute(
            "INSERT INTO callbacks (id, server_id, peer, peer_address, user1,"
            " user2, duration, state, accepted_at, joined_at, checkpoint_at)"
            " VALUES ('old', 'srv1', 'as1', '127.0.0.1:5060', '100', '101', 60,"
            " 'joined', 1000.0, 1002.0, 1030.0)"
        )
        connection.close()
        store = await self.openStore("srv1")
        self.assertEqual(
            self.readDirectly("SELECT version FROM schema_version"), [(2,)]
        )
        self.assertEqual(await store.settleCheckpoints(), 0)
        record = await store.lookup("old")
        self.assertEqual(
            (record.checkpointAt, record.recoveredDuration()), (1030.0, 28)
        )
        await store.heartbeat(at=2000.0)
        self.assertEqual(await store.aliveAt(), 2000.0)


class SQLiteHeartbeatTests(SQLiteBackend, HeartbeatTestsMixin, TestCase):
    """The heartbeat on an SQLite file."""


class PostgreSQLHeartbeatTests(PostgreSQLBackend, HeartbeatTestsMixin, TestCase):
    """The heartbeat on a real PostgreSQL server started by the tests."""
