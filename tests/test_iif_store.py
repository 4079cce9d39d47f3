"""
The IIF on a real store (an SQLite file and the test run's PostgreSQL
server), on the real reactor: the ACK comes only once the callback's row is
committed, a repeat after a restart is answered from the database, and a
store that is down refuses new REQUESTs at once.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.internet.testing import FakeDatagramTransport
from twisted.trial.unittest import TestCase

from callback_tw.iif.protocol import IIFProtocol
from tests.iifhelpers import PEER, FakeManager
from tests.test_store import PostgreSQLBackend, SQLiteBackend, StoreTestBase

REQUEST = b"REQUEST: id=k1;user1=100;user2=101;duration=60;"
ACK_OK = b"ACK: id=k1;code=ok;"


async def _written(transport: FakeDatagramTransport, count: int) -> list:
    for _ in range(500):
        if len(transport.written) >= count:
            return transport.written
        await deferLater(reactor, 0.01, lambda: None)
    raise AssertionError(f"only {transport.written!r} written")


class IIFStoreTestsMixin(StoreTestBase):
    """
    The IIF's promises, on a real database.
    """

    def protocol(self, store: Any) -> tuple[IIFProtocol, FakeDatagramTransport, Any]:
        manager = FakeManager()
        protocol = IIFProtocol(manager, [PEER], 86400, reactor=reactor, store=store)
        transport = FakeDatagramTransport()
        protocol.makeConnection(transport)
        return protocol, transport, manager

    async def test_ackAfterCommit(self) -> None:
        """
        When the ACK ok is written, the callback's row is readable through
        another connection; no ACK is written before the commit.
        """
        store = await self.openStore()
        protocol, transport, manager = self.protocol(store)
        protocol.datagramReceived(REQUEST, PEER)
        self.assertEqual(transport.written, [])
        await _written(transport, 1)
        self.assertEqual(transport.written, [(ACK_OK, PEER)])
        rows = self.readDirectly("SELECT id, peer, user2 FROM callbacks")
        self.assertEqual([tuple(r) for r in rows], [("k1", "127.0.0.1", "101")])
        self.assertEqual(len(manager.calls), 1)

    async def test_repeatAfterRestart(self) -> None:
        """
        After the callback ended and the server "restarted" (a new store and
        protocol on the same database), the repeat gets the ACK and the
        RESPONSE again, and no call.
        """
        store = await self.openStore()
        protocol, transport, manager = self.protocol(store)
        protocol.datagramReceived(REQUEST, PEER)
        await _written(transport, 1)
        manager.calls[0].finish(33)
        await _written(transport, 2)
        await store.close()
        store2 = await self.openStore()
        protocol2, transport2, manager2 = self.protocol(store2)
        protocol2.datagramReceived(REQUEST, PEER)
        await _written(transport2, 2)
        self.assertEqual(
            transport2.written,
            [(ACK_OK, PEER), (b"RESPONSE: id=k1;real_duration=33;", PEER)],
        )
        self.assertEqual(manager2.calls, [])
        record = await store2.lookup("k1")
        self.assertEqual((record.realDuration, record.state), (33, "ended"))
        self.assertIsNotNone(record.responseSentAt)


class SQLiteIIFStoreTests(SQLiteBackend, IIFStoreTestsMixin, TestCase):
    """On an SQLite file."""


class PostgreSQLIIFStoreTests(PostgreSQLBackend, IIFStoreTestsMixin, TestCase):
    """On the test run's PostgreSQL server."""
