"""
Tests for L{callback_tw.store}: the same tests against a real SQLite file and
a real PostgreSQL server (L{tests.pgserver}).  No mocks: every write goes
through the store's threads to the database, and "is it committed?" is asked
through a second, independent connection.
"""

from __future__ import annotations

import itertools
import sqlite3
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.task import deferLater
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from callback_tw.store import (
    CallbackRecord,
    LegDialog,
    NewCallback,
    PurgeJob,
    StoreError,
    StoreUnavailable,
)
from callback_tw.store import open as openStore
from callback_tw.store.sql import connect
from callback_tw.store.url import parseURL
from tests import pgserver

_DAY = 86400.0
_names = itertools.count()


def request(callbackId: str, user2: str = "101", **extra: Any) -> NewCallback:
    """A REQUEST from peer "as1" for user1=100 and C{user2}."""
    return NewCallback(callbackId, "as1", "127.0.0.1:5060", "100", user2, 60, **extra)


def dialog(callbackId: str, leg: int = 1, **changes: Any) -> LegDialog:
    """A leg dialog as the SIP side would store it after a tagged 180."""
    values = dict(
        callbackId=callbackId,
        leg=leg,
        callId=f"call-{callbackId}-{leg}@127.0.0.1",
        localTag="ltag",
        remoteTag="rtag",
        localURI="sip:callback@127.0.0.1",
        remoteURI="sip:100@127.0.0.1",
        remoteTarget="sip:100@127.0.0.1:5071",
        routeSet=("<sip:proxy@127.0.0.1:5080;lr>",),
        nextCSeq=2,
        inviteBranch="z9hG4bK-1",
        inviteCSeq=1,
        destination="127.0.0.1:5071",
        viaProvider=False,
        state="ringing",
    )
    values.update(changes)
    return LegDialog(**values)


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def waitFor(predicate: Any, timeout: float = 15.0) -> None:
    """Poll C{predicate} until it is true (fail after C{timeout} s)."""
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await sleep(0.02)
    raise AssertionError(f"still false after {timeout} s: {predicate}")


class RecoveredDurationTests(SynchronousTestCase):
    """L{CallbackRecord.recoveredDuration}: real_duration after a crash."""

    def record(self, **times: Any) -> CallbackRecord:
        values = dict(
            id="k1",
            serverId="s",
            peer="as1",
            peerAddress="h:1",
            user1="100",
            user2="101",
            duration=60,
            annId1=None,
            annId2=None,
            annDigit2=None,
            state="joined",
            acceptedAt=0.0,
        )
        return CallbackRecord(**values, **times)

    def test_untilLastCheckpoint(self) -> None:
        """From the join to the last checkpoint, halves rounded up."""
        self.assertEqual(
            self.record(
                answered2At=5.0, joinedAt=10.0, checkpointAt=52.5
            ).recoveredDuration(),
            43,
        )
        self.assertEqual(
            self.record(
                answered2At=5.0, joinedAt=10.0, checkpointAt=52.4
            ).recoveredDuration(),
            42,
        )

    def test_user2NeverAnswered(self) -> None:
        """0 when user2 never answered, even with checkpoints."""
        self.assertEqual(self.record(checkpointAt=50.0).recoveredDuration(), 0)

    def test_neverJoined(self) -> None:
        """
        0 when user2 answered but the parties were never joined (a crash
        during the announcements or the join): no talk time.
        """
        self.assertEqual(
            self.record(answered2At=10.0, checkpointAt=50.0).recoveredDuration(), 0
        )

    def test_noCheckpointYet(self) -> None:
        """Joined but no checkpoint since (or an older one): 0."""
        self.assertEqual(
            self.record(answered2At=10.0, joinedAt=10.0).recoveredDuration(), 0
        )
        self.assertEqual(
            self.record(
                answered2At=10.0, joinedAt=10.0, checkpointAt=9.0
            ).recoveredDuration(),
            0,
        )


class StoreTestBase:
    """
    What every store test needs, whatever the database: a backend mixin
    (L{SQLiteBackend}, L{PostgreSQLBackend}) provides C{newURL()},
    C{breakDatabase()} and C{repairDatabase()}.
    """

    password: str | None = None

    def newURL(self) -> str:
        raise NotImplementedError()

    def breakDatabase(self, url: str) -> None:
        raise NotImplementedError()

    def repairDatabase(self, url: str) -> None:
        raise NotImplementedError()

    def setUp(self) -> None:
        self.url = self.newURL()

    async def openStore(
        self, serverId: str = "srv1", url: str | None = None, **options: Any
    ) -> Any:
        options.setdefault("timeout", 1.0)
        store = await openStore(url or self.url, serverId, reactor, **options)
        self.addCleanup(store.close)
        return store

    def readDirectly(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Rows read through a new connection, not the store's."""
        connection = connect(parseURL(self.url))
        try:
            return connection.execute(sql, params).fetchall()
        finally:
            connection.close()


class SQLiteBackend:
    """Stores on an SQLite file (WAL) in the test's temporary directory."""

    password: str | None = None

    def newURL(self) -> str:
        return "sqlite:///" + self.mktemp() + "/callbacks.db"

    def breakDatabase(self, url: str) -> None:
        """Another process holds the write lock: every write times out."""
        self._locker = sqlite3.connect(parseURL(url).path, isolation_level=None)
        self._locker.execute("BEGIN EXCLUSIVE")

    def repairDatabase(self, url: str) -> None:
        locker = getattr(self, "_locker", None)
        if locker is not None:
            self._locker = None
            locker.execute("ROLLBACK")
            locker.close()


class PostgreSQLBackend:
    """Stores on the real PostgreSQL server the tests start, one database each."""

    password: str | None = pgserver.PASSWORD

    def newURL(self) -> str:
        self.server = pgserver.server()
        return self.server.createDatabase(f"store_{next(_names)}")

    def breakDatabase(self, url: str) -> None:
        """The store's role is locked out and its connections ended."""
        self.server.lockOut()

    def repairDatabase(self, url: str) -> None:
        self.server.letIn()


class StoreTestsMixin(StoreTestBase):
    """The store's behaviour while the database works, whatever it is."""

    async def test_acceptCommitsBeforeFiring(self) -> None:
        """
        When accept's Deferred fires, the row is committed: another
        connection reads it at that very moment (the ACK may be sent).
        """
        store = await self.openStore()
        seen: list[Any] = []
        d = store.accept(request("k1", annId1="00000001"))
        d.addCallback(
            lambda accepted: seen.append(
                (
                    accepted,
                    self.readDirectly("SELECT id, server_id, ann_id1 FROM callbacks"),
                )
            )
        )
        await d
        accepted, rows = seen[0]
        self.assertTrue(accepted.created)
        self.assertEqual(accepted.record.serverId, "srv1")
        self.assertEqual(accepted.record.state, "accepted")
        self.assertEqual([tuple(row) for row in rows], [("k1", "srv1", "00000001")])

    async def test_groupCommit(self) -> None:
        """
        Writes that arrive together share one transaction, and each one's
        Deferred fires after it.
        """
        store = await self.openStore()
        results = await gatherResults(
            [store.accept(request(f"g{i}")) for i in range(50)]
        )
        self.assertEqual(store.transactions, 1)
        self.assertTrue(all(result.created for result in results))
        self.assertEqual(self.readDirectly("SELECT count(*) FROM callbacks")[0][0], 50)

    async def test_badWriteFailsAlone(self) -> None:
        """
        A write that can never succeed (a leg of an unknown callback) fails
        by itself; the others in its transaction are committed.
        """
        store = await self.openStore()
        await store.accept(request("k1"))
        good = store.update("k1", state="calling1")
        bad = store.upsertLeg(dialog("nosuch"))
        other = store.upsertLeg(dialog("k1"))
        self.assertTrue(await good)
        await other
        error = await self.assertFailure(bad, Exception)
        self.assertNotIsInstance(error, StoreUnavailable)
        self.assertEqual(store.transactions, 2)
        self.assertTrue(store.healthy)
        self.assertEqual(
            [d.callId for d in await store.legs("k1")], ["call-k1-1@127.0.0.1"]
        )

    async def test_repeatedRequest(self) -> None:
        """
        A second accept of a known id creates nothing and returns the stored
        row, which tells whether the parameters are the same.
        """
        store = await self.openStore()
        await store.accept(request("k1"))
        again = await store.accept(request("k1"))
        other = await store.accept(request("k1", user2="102"))
        self.assertFalse(again.created)
        self.assertTrue(again.record.sameRequest(request("k1")))
        self.assertFalse(other.created)
        self.assertFalse(other.record.sameRequest(request("k1", user2="102")))
        self.assertEqual(other.record.user2, "101")

    async def test_twoServersRaceForOneId(self) -> None:
        """
        Two servers on one database accepting the same ids at the same time:
        each id has exactly one owner, and both servers see the same one.
        """
        first = await self.openStore("srv1")
        second = await self.openStore("srv2")
        ids = [f"race{i}" for i in range(20)]
        results = await gatherResults(
            [store.accept(request(i)) for i in ids for store in (first, second)]
        )
        for index, callbackId in enumerate(ids):
            one, two = results[2 * index], results[2 * index + 1]
            self.assertEqual([one.created, two.created].count(True), 1, callbackId)
            self.assertEqual(one.record.serverId, two.record.serverId)
        owners = self.readDirectly(
            "SELECT server_id, count(*) FROM callbacks GROUP BY server_id"
        )
        self.assertEqual(sum(count for _, count in owners), 20)

    async def test_lifecycleAndLookup(self) -> None:
        """
        Updates, legs, checkpoints, the end and the RESPONSE are all read
        back by lookup and legs.
        """
        store = await self.openStore()
        await store.accept(request("k1", annDigit2="42"), at=1000.0)
        await store.upsertLeg(dialog("k1"))
        await store.update("k1", state="joined", answered1At=1001.0, joinedAt=1003.0)
        await store.upsertLeg(dialog("k1", state="answered", nextCSeq=3))
        await store.update("k1", checkpointAt=1010.0)
        await store.markEnded(
            "k1", "user2 hung up", 7, at=1010.5, leg2Status=200, leg2Reason="OK"
        )
        await store.markResponseSent("k1", at=1010.6)
        record = await store.lookup("k1")
        self.assertEqual(
            (record.state, record.acceptedAt, record.joinedAt, record.checkpointAt),
            ("ended", 1000.0, 1003.0, 1010.0),
        )
        self.assertEqual(
            (
                record.endedAt,
                record.endCause,
                record.realDuration,
                record.responseSentAt,
            ),
            (1010.5, "user2 hung up", 7, 1010.6),
        )
        self.assertEqual((record.leg2Status, record.leg2Reason), (200, "OK"))
        self.assertEqual(record.annDigit2, "42")
        self.assertTrue(record.ended)
        self.assertEqual(
            await store.legs("k1"), [dialog("k1", state="answered", nextCSeq=3)]
        )
        self.assertIsNone(await store.lookup("nosuch"))

    async def test_idReusedAfterRequestMemory(self) -> None:
        """
        With forgetBefore, an ended callback accepted before that time is
        replaced by the new one (the AS reused an old id); a newer or a
        running one is kept and reported as the existing row.
        """
        store = await self.openStore()
        await store.accept(request("old"), at=100.0)
        await store.upsertLeg(dialog("old"))
        await store.markEnded("old", "timer", 60, at=200.0)
        await store.accept(request("running"), at=100.0)
        reused = await store.accept(request("old", user2="102"), forgetBefore=1000.0)
        kept = await store.accept(request("running", user2="102"), forgetBefore=1000.0)
        self.assertTrue(reused.created)
        self.assertEqual((reused.record.user2, reused.record.ended), ("102", False))
        self.assertEqual(await store.legs("old"), [])
        self.assertFalse(kept.created)
        self.assertEqual(kept.record.user2, "101")
        recent = await store.accept(request("old", user2="103"), forgetBefore=50.0)
        self.assertFalse(recent.created)

    async def test_requestMemoryCountsFromTheEnd(self) -> None:
        """
        forgetBefore counts from a callback's end, not from its REQUEST: a
        callback accepted long ago that ended recently is still the same
        one, and is forgotten once it ended before forgetBefore.
        """
        store = await self.openStore()
        await store.accept(request("long"), at=100.0)
        await store.markEnded("long", "timer", 900, at=1000.0)
        kept = await store.accept(request("long", user2="102"), forgetBefore=500.0)
        self.assertFalse(kept.created)
        self.assertEqual(kept.record.realDuration, 900)
        reused = await store.accept(request("long", user2="102"), forgetBefore=1000.5)
        self.assertTrue(reused.created)

    async def test_forget(self) -> None:
        """
        forget() deletes a callback that never got past "accepted", so the
        same id can be accepted again; a started one is kept.
        """
        store = await self.openStore()
        await store.accept(request("refused"))
        await store.accept(request("started"))
        await store.update("started", state="calling1")
        self.assertTrue(await store.forget("refused"))
        self.assertFalse(await store.forget("started"))
        self.assertIsNone(await store.lookup("refused"))
        self.assertTrue((await store.accept(request("refused"))).created)
        self.assertEqual((await store.lookup("started")).state, "calling1")

    async def test_unanswered(self) -> None:
        """
        unanswered() lists this server's ended callbacks whose RESPONSE is
        not recorded as sent: neither running ones nor answered ones.
        """
        store = await self.openStore()
        for callbackId in ("running", "ended", "answered"):
            await store.accept(request(callbackId))
        await store.markEnded("ended", "user1 hung up", 3)
        await store.markEnded("answered", "user2 hung up", 4)
        await store.markResponseSent("answered")
        self.assertEqual([r.id for r in await store.unanswered()], ["ended"])
        self.assertEqual(await store.unanswered("another server"), [])

    async def test_unfinishedWithLegs(self) -> None:
        """
        Recovery reads each unfinished callback of this server with the
        dialogs its BYEs and CANCELs need.
        """
        store = await self.openStore()
        await store.accept(request("a"), at=1.0)
        await store.upsertLeg(dialog("a", 1, state="answered"))
        await store.upsertLeg(dialog("a", 2, remoteTag=None, remoteTarget=None))
        await store.accept(request("b"), at=2.0)
        result = await store.unfinishedWithLegs()
        self.assertEqual(
            [(r.id, [leg.leg for leg in legs]) for r, legs in result],
            [("a", [1, 2]), ("b", [])],
        )
        self.assertEqual(
            result[0][1][1], dialog("a", 2, remoteTag=None, remoteTarget=None)
        )
        self.assertEqual(result[0][1][0].routeSet, ("<sip:proxy@127.0.0.1:5080;lr>",))
        self.assertIs(result[0][1][0].viaProvider, False)

    async def test_updateRefusesIdentity(self) -> None:
        """The id, owner and REQUEST parameters cannot be updated."""
        store = await self.openStore()
        self.assertRaises(ValueError, store.update, "k1", serverId="srv2")
        self.assertRaises(ValueError, store.update, "k1", user2="102")

    async def test_unfinishedPerServer(self) -> None:
        """
        unfinished() lists the callbacks one server owns that have not
        ended, never another server's.
        """
        first = await self.openStore("srv1")
        second = await self.openStore("srv2")
        await first.accept(request("a"), at=1.0)
        await first.accept(request("b"), at=2.0)
        await first.accept(request("c"), at=3.0)
        await second.accept(request("d"))
        await first.markEnded("b", "user1 busy", 0)
        self.assertEqual([r.id for r in await first.unfinished()], ["a", "c"])
        self.assertEqual([r.id for r in await second.unfinished()], ["d"])
        self.assertEqual([r.id for r in await second.unfinished("srv1")], ["a", "c"])

    async def test_purge(self) -> None:
        """
        purge() deletes callbacks (and their legs) that ended more than N
        days ago; newer ones and unfinished ones stay.
        """
        store = await self.openStore()
        now = reactor.seconds()
        for name in ("old", "recent", "running"):
            await store.accept(request(name), at=now - 200 * _DAY)
            await store.upsertLeg(dialog(name))
        await store.markEnded("old", "timer", 60, at=now - 91 * _DAY)
        await store.markEnded("recent", "timer", 60, at=now - 89 * _DAY)
        self.assertEqual(await store.purge(90), 1)
        self.assertEqual(
            sorted(row[0] for row in self.readDirectly("SELECT id FROM callbacks")),
            ["recent", "running"],
        )
        self.assertEqual(
            sorted(row[0] for row in self.readDirectly("SELECT callback_id FROM legs")),
            ["recent", "running"],
        )

    async def test_purgeInChunks(self) -> None:
        """
        A purge larger than one chunk goes on, chunk after chunk, until
        everything old is gone.
        """
        store = await self.openStore()
        for i in range(5):
            await store.accept(request(f"old{i}"), at=0.0)
            await store.markEnded(f"old{i}", "timer", 1, at=1.0)
        self.assertEqual(await store.purge(90, chunk=2), 5)
        self.assertEqual(self.readDirectly("SELECT count(*) FROM callbacks")[0][0], 0)

    async def test_purgeJob(self) -> None:
        """
        The daily job purges with its retention and logs how many records
        went; it never fails (a failure would stop TimerService's loop).
        """
        store = await self.openStore()
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        await store.accept(request("old"), at=0.0)
        await store.markEnded("old", "timer", 60, at=1.0)
        job = PurgeJob(store, 90)
        self.assertEqual(await job(), 1)
        await store.close()
        self.assertIsNone(await job())
        counts = [e.get("count") for e in events if "purged" in e["log_format"]]
        self.assertEqual(counts, [1])
        self.assertEqual(
            [e["log_level"] for e in events if "purge failed" in e["log_format"]],
            [LogLevel.error],
        )

    async def test_newerSchemaRefused(self) -> None:
        """
        A database migrated by a newer server is refused at open with one
        line naming the URL, without its password.
        """
        store = await self.openStore()
        await store.close()
        connection = connect(parseURL(self.url))
        connection.execute("UPDATE schema_version SET version = 99")
        connection.close()
        error = await self.assertFailure(
            openStore(self.url, "srv1", reactor), StoreError
        )
        message = str(error)
        self.assertIn("schema version 99 is newer", message)
        self.assertIn(parseURL(self.url).safe, message)
        self.assertNotIn("\n", message)
        if self.password:
            self.assertNotIn(self.password, message)

    async def test_reopenKeepsData(self) -> None:
        """Opening an existing store migrates nothing and keeps its rows."""
        store = await self.openStore()
        await store.accept(request("k1"))
        await store.close()
        again = await self.openStore()
        self.assertEqual((await again.lookup("k1")).user1, "100")


class SQLiteStoreTests(SQLiteBackend, StoreTestsMixin, TestCase):
    """The store on an SQLite file (WAL)."""

    async def test_walMode(self) -> None:
        """The file is in WAL mode, so CDR readers never block the writer."""
        await self.openStore()
        self.assertEqual(self.readDirectly("PRAGMA journal_mode")[0][0], "wal")

    async def test_relativePath(self) -> None:
        """A relative SQLite path is relative to the base directory given."""
        base = self.mktemp()
        store = await self.openStore(url="sqlite:///data/cb.db", baseDir=base)
        self.assertTrue(store.url.endswith("/data/cb.db"))
        self.assertTrue(store.url.startswith("sqlite:////"))


class PostgreSQLStoreTests(PostgreSQLBackend, StoreTestsMixin, TestCase):
    """The store on a real PostgreSQL server started by the tests."""

    async def test_wrongPasswordNeverShown(self) -> None:
        """
        A store that cannot be opened stops with one line naming the URL
        without the password (here: a wrong one).
        """
        url = self.url.replace(pgserver.PASSWORD, "Wrong-Secret")
        error = await self.assertFailure(openStore(url, "srv1", reactor), StoreError)
        self.assertNotIn("Wrong-Secret", str(error))
        self.assertIn("postgresql://callback:***@127.0.0.1", str(error))
        self.assertNotIn("\n", str(error))
