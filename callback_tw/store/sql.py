# -*- test-case-name: tests.test_store -*-
"""
Blocking database access shared by the server's store (run on its worker
threads) and the C{callback-cdr} tool (run directly): connecting, the
dialect's differences, and every query.

Nothing here touches the reactor.  SQL is written once with C{?}
placeholders; L{Connection} turns them into C{%s} for psycopg.  Both drivers
run in autocommit mode and transactions are explicit (C{BEGIN}/C{COMMIT}),
so a group commit and its per-write savepoints read the same on both.

The write methods return their result as a function to call once the
statements have reached the database: inside L{Connection.pipeline} on
PostgreSQL a statement is only sent, and its answer is read with the others
when the pipeline syncs (one round trip for a whole group commit instead of
one per statement); elsewhere the result is read at once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from callback_tw.store.errors import StoreError
from callback_tw.store.records import (
    CALLBACK_COLUMNS,
    LEG_COLUMNS,
    CallbackRecord,
    LegDialog,
    NewCallback,
    callbackFromRow,
    legFromRow,
    legToRow,
)
from callback_tw.store.url import StoreURL, redact

__all__ = ["Connection", "Later", "connect", "isTransient"]

_CALLBACKS = ", ".join(CALLBACK_COLUMNS)
_LEGS = ", ".join(LEG_COLUMNS)
_LEG_UPSERT = (
    f"INSERT INTO legs ({_LEGS}) VALUES ({', '.join('?' for _ in LEG_COLUMNS)})"
    " ON CONFLICT (callback_id, leg) DO UPDATE SET "
    + ", ".join(f"{column} = excluded.{column}" for column in LEG_COLUMNS[2:])
)

_T = TypeVar("_T")

#: A write's result, to call after the statements reached the database.
Later = Callable[[], _T]


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StoreError(
            "PostgreSQL stores need psycopg 3 (pip install 'psycopg[binary]')"
        ) from None
    return psycopg


def isTransient(error: BaseException) -> bool:
    """
    True if C{error} says the database cannot be reached or written now
    (down, locked, disk full, connection lost), so the same write may succeed
    later; False if the write itself is wrong and will never succeed.
    """
    if isinstance(error, sqlite3.OperationalError):
        return True
    try:
        import psycopg
    except ImportError:
        return False
    if isinstance(error, psycopg.errors.PipelineAborted):
        # A statement before it in the same pipeline failed for its own
        # reason: the write is wrong, not the database.
        return False
    return isinstance(error, (psycopg.OperationalError, psycopg.InterfaceError))


# One statement that both SQLite (3.24+) and PostgreSQL run.
_UPSERT_SERVER = (
    "INSERT INTO servers (server_id, alive_at, started_at) VALUES (?, ?, ?)"
    " ON CONFLICT (server_id) DO UPDATE"
    " SET alive_at = excluded.alive_at, started_at = excluded.started_at"
)

# The callbacks the server row speaks for were accepted since its run began;
# those an earlier run left unfinished were settled by that run's recovery.
_SETTLE = (
    "UPDATE callbacks"
    " SET checkpoint_at = (SELECT alive_at FROM servers WHERE server_id = ?)"
    " WHERE server_id = ? AND ended_at IS NULL AND joined_at IS NOT NULL"
    " AND accepted_at >= (SELECT started_at FROM servers WHERE server_id = ?)"
    " AND (checkpoint_at IS NULL"
    "  OR checkpoint_at < (SELECT alive_at FROM servers WHERE server_id = ?))"
)


class Connection:
    """
    One open database connection in autocommit mode and its dialect.

    @ivar dialect: C{"sqlite"} or C{"postgresql"}.
    """

    def __init__(self, raw: Any, dialect: str) -> None:
        self.raw = raw
        self.dialect = dialect
        self._pipelining = False

    def execute(self, sql: str, params: Iterable[Any] = ()) -> Any:
        """
        Run one statement; return its cursor.  Inside L{pipeline} on
        PostgreSQL the statement is only sent: its rows and C{rowcount} are
        there after the pipeline synced.
        """
        if self.dialect == "postgresql":
            sql = sql.replace("?", "%s")
        cursor = self.raw.cursor()
        cursor.execute(sql, tuple(params))
        return cursor

    @contextmanager
    def pipeline(self) -> Iterator[None]:
        """
        Send the statements executed inside without waiting for each one's
        answer (PostgreSQL pipeline mode); leaving the block waits for all
        the answers and raises the first error.  SQLite runs in process, so
        it has no round trips to save: there, nothing changes.
        """
        if self.dialect != "postgresql" or self._pipelining:
            yield
            return
        self._pipelining = True
        error: Exception | None = None
        try:
            with self.raw.pipeline():
                try:
                    yield
                except Exception as e:
                    # Raised after the pipeline's own exit: an exit that fails
                    # too (a lost connection) then raises its own error, not
                    # a warning through the logging module.
                    error = e
        finally:
            self._pipelining = False
        if error is not None:
            raise error

    def _later(self, cursor: Any, read: Callable[[Any], _T]) -> Later[_T]:
        """C{read(cursor)} now, or once the pipeline has synced."""
        if self._pipelining:
            read_: list[_T] = []

            def later() -> _T:
                if not read_:
                    read_.append(read(cursor))
                return read_[0]

            return later
        value = read(cursor)
        return lambda: value

    def begin(self) -> None:
        """Start a write transaction (SQLite takes its write lock now)."""
        self.execute("BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN")

    def close(self) -> None:
        """Close, ignoring a connection that is broken already."""
        try:
            self.raw.close()
        except Exception:
            pass

    # Writes: each returns its result as a L{Later} (see the module).

    def insertCallback(
        self,
        serverId: str,
        new: NewCallback,
        at: float,
        forgetBefore: float | None = None,
    ) -> Later[tuple[CallbackRecord, bool]]:
        """
        Insert C{new} owned by C{serverId} unless its id exists (on any
        server); the result is the row now stored and whether this call
        made it.

        @param forgetBefore: an ended callback with the same id that ended
            at or before this time is forgotten (deleted with its legs) first, so
            that an AS may reuse an id after the request memory.  Between
            two servers doing so at once, PostgreSQL's row lock makes the
            second one's DELETE see the first one's new row and keep it.
        """
        if forgetBefore is not None:
            self.execute(
                "DELETE FROM legs WHERE callback_id IN (SELECT id FROM callbacks"
                " WHERE id = ? AND ended_at IS NOT NULL AND ended_at <= ?)",
                (new.id, forgetBefore),
            )
            self.execute(
                "DELETE FROM callbacks"
                " WHERE id = ? AND ended_at IS NOT NULL AND ended_at <= ?",
                (new.id, forgetBefore),
            )
        values = (
            new.id,
            serverId,
            new.peer,
            new.peerAddress,
            new.user1,
            new.user2,
            new.duration,
            new.annId1,
            new.annId2,
            new.annDigit2,
            "accepted",
            at,
        )
        created = self._later(
            self.execute(
                f"INSERT INTO callbacks ({', '.join(CALLBACK_COLUMNS[:12])})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (id) DO NOTHING",
                values,
            ),
            _oneRow,
        )
        existing: Later[Any] = lambda: None  # noqa: E731
        if self._pipelining or not created():
            # In a pipeline whether the row was there is not known yet: the
            # row is read in the same round trip either way, in the same
            # transaction as the INSERT.
            existing = self._later(
                self.execute(
                    f"SELECT {_CALLBACKS} FROM callbacks WHERE id = ?", (new.id,)
                ),
                _fetchOne,
            )

        def result() -> tuple[CallbackRecord, bool]:
            if created():
                return callbackFromRow(values), True
            row = existing()
            assert row is not None
            return callbackFromRow(row), False

        return result

    def forgetCallback(self, callbackId: str, serverId: str) -> Later[bool]:
        """
        Delete a callback C{serverId} accepted but never started (still
        "accepted": no leg was placed), so that its REQUEST, refused after
        all, is evaluated afresh when repeated.  The result: whether it went.
        """
        where = "id = ? AND server_id = ? AND state = 'accepted'"
        self.execute(
            f"DELETE FROM legs WHERE callback_id IN (SELECT id FROM callbacks"
            f" WHERE {where})",
            (callbackId, serverId),
        )
        cursor = self.execute(
            f"DELETE FROM callbacks WHERE {where}", (callbackId, serverId)
        )
        return self._later(cursor, _oneRow)

    def updateCallback(self, callbackId: str, values: dict[str, Any]) -> Later[bool]:
        """
        Set C{values} (column name -> value) on one callback.  The result is
        False if there is no such callback.
        """
        assignments = ", ".join(f"{column} = ?" for column in values)
        cursor = self.execute(
            f"UPDATE callbacks SET {assignments} WHERE id = ?",
            (*values.values(), callbackId),
        )
        return self._later(cursor, _oneRow)

    def heartbeat(self, serverId: str, at: float, startedAt: float) -> Later[None]:
        """Record that C{serverId}, running since C{startedAt}, is alive at C{at}."""
        self.execute(_UPSERT_SERVER, (serverId, at, startedAt))
        return lambda: None

    def settleCheckpoints(self, serverId: str) -> Later[int]:
        """
        Set C{checkpoint_at} of the unfinished, joined callbacks of
        C{serverId} that its heartbeat row speaks for up to that heartbeat
        (see L{callback_tw.store.store.Store.settleCheckpoints}); the result
        is how many changed.
        """
        cursor = self.execute(_SETTLE, (serverId,) * 4)
        return self._later(cursor, lambda c: max(c.rowcount, 0))

    def upsertLeg(self, dialog: LegDialog) -> Later[None]:
        """Insert or replace the stored dialog of one leg."""
        self.execute(_LEG_UPSERT, legToRow(dialog))
        return lambda: None

    def purge(self, before: float, limit: int = 1000) -> int:
        """
        Delete up to C{limit} callbacks that ended before C{before}, and
        their legs.  A callback that has not ended is never purged: recovery
        owns it.

        @return: how many callbacks were deleted (C{limit}: maybe more left).
        """
        ids = [
            row[0]
            for row in self.execute(
                f"SELECT id FROM callbacks WHERE ended_at < ? LIMIT {int(limit)}",
                (before,),
            ).fetchall()
        ]
        if ids:
            marks = ", ".join("?" for _ in ids)
            self.execute(f"DELETE FROM legs WHERE callback_id IN ({marks})", ids)
            self.execute(f"DELETE FROM callbacks WHERE id IN ({marks})", ids)
        return len(ids)

    # Reads.

    def readCallback(self, callbackId: str) -> CallbackRecord | None:
        """The callback C{callbackId}, or L{None}."""
        row = self.execute(
            f"SELECT {_CALLBACKS} FROM callbacks WHERE id = ?", (callbackId,)
        ).fetchone()
        return None if row is None else callbackFromRow(row)

    def readLegs(self, callbackId: str) -> list[LegDialog]:
        """The stored dialogs of one callback's legs, leg 1 first."""
        rows = self.execute(
            f"SELECT {_LEGS} FROM legs WHERE callback_id = ? ORDER BY leg",
            (callbackId,),
        ).fetchall()
        return [legFromRow(row) for row in rows]

    def unfinished(self, serverId: str) -> list[CallbackRecord]:
        """The callbacks C{serverId} owns that have not ended, oldest first."""
        rows = self.execute(
            f"SELECT {_CALLBACKS} FROM callbacks"
            " WHERE server_id = ? AND ended_at IS NULL ORDER BY accepted_at, id",
            (serverId,),
        ).fetchall()
        return [callbackFromRow(row) for row in rows]

    def unanswered(self, serverId: str) -> list[CallbackRecord]:
        """
        The callbacks C{serverId} owns that ended but whose RESPONSE was
        never recorded as sent, oldest first.
        """
        rows = self.execute(
            f"SELECT {_CALLBACKS} FROM callbacks WHERE server_id = ?"
            " AND ended_at IS NOT NULL AND response_sent_at IS NULL"
            " ORDER BY accepted_at, id",
            (serverId,),
        ).fetchall()
        return [callbackFromRow(row) for row in rows]

    def listCallbacks(
        self,
        since: float | None = None,
        until: float | None = None,
        peer: str | None = None,
        limit: int | None = None,
    ) -> list[CallbackRecord]:
        """
        Callbacks accepted in [C{since}, C{until}) from C{peer}, oldest
        first; each filter is optional.
        """
        return list(self.iterCallbacks(since, until, peer, limit))

    def iterCallbacks(
        self,
        since: float | None = None,
        until: float | None = None,
        peer: str | None = None,
        limit: int | None = None,
    ) -> Iterator[CallbackRecord]:
        """L{listCallbacks}, a page of rows at a time (for large exports)."""
        where, params = [], []
        if since is not None:
            where.append("accepted_at >= ?")
            params.append(since)
        if until is not None:
            where.append("accepted_at < ?")
            params.append(until)
        if peer is not None:
            where.append("peer = ?")
            params.append(peer)
        sql = f"SELECT {_CALLBACKS} FROM callbacks"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY accepted_at, id"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        cursor = self.execute(sql, params)
        while rows := cursor.fetchmany(1000):
            for row in rows:
                yield callbackFromRow(row)


def _oneRow(cursor: Any) -> bool:
    return bool(cursor.rowcount == 1)


def _fetchOne(cursor: Any) -> Any:
    return cursor.fetchone()


def connect(url: StoreURL, timeout: float = 5.0, create: bool = True) -> Connection:
    """
    Open a connection to the store at C{url}.

    SQLite: WAL mode (readers, such as C{callback-cdr}, never block the
    writer), C{synchronous=FULL} (a commit survives a power loss), foreign
    keys on; C{timeout} is how long a write waits for a lock.
    PostgreSQL: C{timeout} bounds connecting.

    @param create: create a missing SQLite file (the server does; the CDR
        tool does not, it reports the mistake).
    @raise StoreError: the database cannot be opened; the message names the
        URL without its password.
    """
    try:
        if url.dialect == "sqlite":
            if not create:
                raw = sqlite3.connect(
                    f"file:{url.path}?mode=rw",
                    uri=True,
                    isolation_level=None,
                    check_same_thread=False,
                    timeout=timeout,
                )
            else:
                raw = sqlite3.connect(
                    url.path,
                    isolation_level=None,
                    check_same_thread=False,
                    timeout=timeout,
                )
                raw.execute("PRAGMA journal_mode=WAL")
                raw.execute("PRAGMA synchronous=FULL")
            raw.execute("PRAGMA foreign_keys=ON")
            return Connection(raw, "sqlite")
        psycopg = _psycopg()
        # TCP keepalives and tcp_user_timeout bound how long a write can hang
        # on a server that vanished without closing the connection (a
        # network partition): the writer fails, and the store reports it.
        raw = psycopg.connect(
            autocommit=True,
            connect_timeout=max(2, int(timeout)),
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
            tcp_user_timeout=int(max(timeout, 1.0) * 3000),
            **dict(url.conninfo),
        )
        return Connection(raw, "postgresql")
    except StoreError:
        raise
    except Exception as e:
        message = redact(" ".join(str(e).split()))
        raise StoreError(f"store {url.safe}: cannot open: {message}") from None
