# -*- test-case-name: tests.test_store -*-
"""
The versioned schema and its migrations, applied when a store opens.

C{schema_version} holds one row: the version of the newest migration applied.
Each entry of L{MIGRATIONS} takes the schema from the version before it to its
own, in one transaction with the version bump, so a crash during a migration
leaves the previous version intact.  The same DDL runs on SQLite and
PostgreSQL (SQLite accepts PostgreSQL's type names), so there is one list.
A database whose version is newer than L{CURRENT} belongs to a newer server:
it is refused, never "downgraded".
"""

from __future__ import annotations

from typing import Any

from callback_tw.store.errors import StoreError

__all__ = ["CURRENT", "MIGRATIONS", "migrate"]

# Times are POSIX seconds (DOUBLE PRECISION): one representation on both
# databases, and the CDR tool formats them.  Booleans are INTEGER 0/1 for the
# same reason.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """
            CREATE TABLE callbacks (
                id TEXT PRIMARY KEY,
                server_id TEXT NOT NULL,
                peer TEXT NOT NULL,
                peer_address TEXT NOT NULL,
                user1 TEXT NOT NULL,
                user2 TEXT NOT NULL,
                duration INTEGER NOT NULL,
                ann_id1 TEXT,
                ann_id2 TEXT,
                ann_digit2 TEXT,
                state TEXT NOT NULL,
                accepted_at DOUBLE PRECISION NOT NULL,
                answered1_at DOUBLE PRECISION,
                called2_at DOUBLE PRECISION,
                answered2_at DOUBLE PRECISION,
                joined_at DOUBLE PRECISION,
                ended_at DOUBLE PRECISION,
                checkpoint_at DOUBLE PRECISION,
                end_cause TEXT,
                leg1_status INTEGER,
                leg1_reason TEXT,
                leg2_status INTEGER,
                leg2_reason TEXT,
                real_duration INTEGER,
                response_sent_at DOUBLE PRECISION
            )
            """,
            "CREATE INDEX callbacks_accepted_at ON callbacks (accepted_at)",
            "CREATE INDEX callbacks_peer ON callbacks (peer, accepted_at)",
            # Recovery asks "what did this server leave unfinished?".
            """
            CREATE INDEX callbacks_unfinished ON callbacks (server_id)
            WHERE ended_at IS NULL
            """,
            """
            CREATE TABLE legs (
                callback_id TEXT NOT NULL
                    REFERENCES callbacks (id) ON DELETE CASCADE,
                leg INTEGER NOT NULL,
                call_id TEXT NOT NULL,
                local_tag TEXT NOT NULL,
                remote_tag TEXT,
                local_uri TEXT NOT NULL,
                remote_uri TEXT NOT NULL,
                remote_target TEXT,
                route_set TEXT NOT NULL,
                next_cseq INTEGER NOT NULL,
                invite_branch TEXT NOT NULL,
                invite_cseq INTEGER NOT NULL,
                destination TEXT NOT NULL,
                via_provider INTEGER NOT NULL,
                state TEXT NOT NULL,
                PRIMARY KEY (callback_id, leg)
            )
            """,
        ),
    ),
    (
        2,
        (
            # One heartbeat row per server (docs/decisions.md D79): while it
            # runs, a server writes alive_at every second instead of a
            # checkpoint per joined callback; started_at is when that run's
            # heartbeat began, so recovery knows which callbacks the row
            # speaks for (those accepted since).
            """
            CREATE TABLE servers (
                server_id TEXT PRIMARY KEY,
                alive_at DOUBLE PRECISION NOT NULL,
                started_at DOUBLE PRECISION NOT NULL
            )
            """,
        ),
    ),
)

CURRENT = MIGRATIONS[-1][0]


def migrate(connection: Any, dialect: str, safeURL: str) -> int:
    """
    Bring the schema of an open L{callback_tw.store.sql.Connection} to
    L{CURRENT}.

    Two servers starting together on one PostgreSQL database must not both
    migrate: the transaction takes an advisory lock first (SQLite's
    C{BEGIN IMMEDIATE} takes the write lock).

    @param dialect: C{"sqlite"} or C{"postgresql"}.
    @param safeURL: the URL without password, for the error message.
    @return: the version found before migrating (0 for a new database).
    @raise StoreError: the database's schema is newer than this code.
    """
    connection.begin()
    try:
        if dialect == "postgresql":
            connection.execute("SELECT pg_advisory_xact_lock(7263451)")
        connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
        )
        found = connection.execute(
            "SELECT max(version) FROM schema_version"
        ).fetchone()[0]
        found = found or 0
        if found > CURRENT:
            raise StoreError(
                f"store {safeURL}: schema version {found} is newer than this"
                f" server understands ({CURRENT}); upgrade callback_tw"
            )
        for version, statements in MIGRATIONS:
            if version > found:
                for statement in statements:
                    connection.execute(statement)
        if found < CURRENT:
            connection.execute("DELETE FROM schema_version")
            connection.execute(
                "INSERT INTO schema_version (version) VALUES (?)", (CURRENT,)
            )
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    return found
