# -*- test-case-name: tests.test_store -*-
"""
The durable callback store: the reactor-side API the server uses.

Every method returns a L{Deferred} and never blocks: writes go through
L{callback_tw.store.groupcommit.GroupCommit} to one writer thread and fire
only after their COMMIT (so an C{ACK code=ok} sent from L{Store.accept}'s
callback is a promise already on disk); reads run on one reader thread and
see committed data.

While the database cannot be reached (PostgreSQL down, SQLite locked, disk
full), L{Store.healthy} is false, L{Store.accept} fails at once (the caller
refuses the REQUEST) and the other writes of running callbacks wait in a
bounded queue until the database is back.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from callback_tw.store.errors import StoreError, StoreUnavailable
from callback_tw.store.groupcommit import GroupCommit
from callback_tw.store.records import UPDATABLE, Accepted, LegDialog, NewCallback
from callback_tw.store.schema import migrate
from callback_tw.store.sql import Connection, Later
from callback_tw.store.url import StoreURL, parseURL, redact
from callback_tw.store.worker import DatabaseThread, transient

__all__ = ["Store", "open"]

_DAY = 86400.0


class Store:
    """
    Callbacks and their legs, durable.  Build it with L{open}.

    @ivar url: the store's URL without its password (for messages).
    @ivar serverId: this server's identity: the owner of the callbacks it
        accepts, and the only callbacks its recovery touches.

    @param timeout: how long connecting, or waiting for SQLite's write
        lock, may take before the database counts as unavailable.
    @param options: the write queue's tuning, see L{GroupCommit}
        (C{groupDelay}, C{maxBatch}, C{maxQueue}, C{retryDelays},
        C{logInterval}, C{probeInterval}).
    """

    def __init__(
        self,
        url: StoreURL,
        serverId: str,
        reactor: Any,
        timeout: float = 5.0,
        **options: Any,
    ) -> None:
        self.url = url.safe
        self.serverId = serverId
        self._reactor = reactor
        self._closed = False
        self._runStartedAt: float | None = None
        self._writer = DatabaseThread(url, "store-writer", reactor, timeout)
        self._reader = DatabaseThread(url, "store-reader", reactor, timeout)
        self._queue = GroupCommit(self._writer, self.url, reactor, **options)

    @property
    def healthy(self) -> bool:
        """
        False while the database cannot be written: the caller refuses new
        REQUESTs (and C{/health} says so) until it is back.
        """
        return self._queue.healthy

    @property
    def transactions(self) -> int:
        """Transactions committed so far (group commits, for metrics)."""
        return self._queue.transactions

    @property
    def pendingWrites(self) -> int:
        """Writes queued and not yet committed (excluding those in flight)."""
        return self._queue.pending

    # Writes.

    def accept(
        self,
        new: NewCallback,
        at: float | None = None,
        forgetBefore: float | None = None,
    ) -> Deferred:
        """
        Insert a new callback owned by this server, unless its id exists.

        @param at: the time accepted (now by default).
        @param forgetBefore: an ended callback with the same id that ended
            at or before this time (now minus the request memory) no longer
            counts: it is replaced, so the AS may reuse old ids.

        @return: a Deferred firing after the COMMIT with L{Accepted}: the
            stored row and whether this call created it (if not, the row is
            the earlier one: compare C{record.sameRequest(new)}, the owner,
            C{ended}).  It fails with L{StoreUnavailable} at once while the
            store is not healthy.
        """
        if not self.healthy:
            return fail(StoreUnavailable(f"store {self.url} is unavailable"))
        when = self._now(at)

        def apply(connection: Connection) -> Later[Accepted]:
            inserted = connection.insertCallback(self.serverId, new, when, forgetBefore)
            return lambda: Accepted(*inserted())

        return self._queue.enqueue(apply, retry=False, callbackId=new.id, first=True)

    def forget(self, callbackId: str) -> Deferred:
        """
        Delete a callback this server accepted but could not start (no RTP
        port, user1 could not even be called): its AS got C{code=fail}, so
        the id is not known and a repeat is evaluated afresh.  A callback
        that got further (state other than "accepted") is kept.

        @return: a Deferred firing with True after the COMMIT if a row went.
        """
        return self._queue.enqueue(
            lambda connection: connection.forgetCallback(callbackId, self.serverId),
            callbackId=callbackId,
        )

    def update(self, callbackId: str, **values: Any) -> Deferred:
        """
        Change a callback's state, timestamps, causes or statuses.

        @param values: attributes of L{CallbackRecord} from C{state} on
            (C{state="joined", joinedAt=...}); never its id, owner or
            REQUEST parameters.
        @return: a Deferred firing with True after the COMMIT (False: no such
            callback).
        @raise ValueError: a name that cannot be updated.
        """
        unknown = set(values) - set(UPDATABLE)
        if unknown:
            raise ValueError(f"cannot update {', '.join(sorted(unknown))}")
        columns = {UPDATABLE[name]: value for name, value in values.items()}
        # An update queued right behind another of the same callback joins
        # it (GroupCommit.enqueue): one UPDATE sets the same row.
        return self._queue.enqueue(
            lambda connection: connection.updateCallback(callbackId, columns),
            callbackId=callbackId,
            merge=("callback", columns),
        )

    def upsertLeg(self, dialog: LegDialog) -> Deferred:
        """
        Store a leg's dialog (first tagged 1xx, 2xx, each change of CSeq or
        target); the Deferred fires after the COMMIT.  A newer dialog of the
        same leg queued right behind replaces it: the row holds the whole
        dialog, so only the newest matters.
        """
        latest = {"dialog": dialog}
        return self._queue.enqueue(
            lambda connection: connection.upsertLeg(latest["dialog"]),
            callbackId=dialog.callbackId,
            merge=(("leg", dialog.leg), latest),
        )

    def heartbeat(self, at: float | None = None) -> Deferred:
        """
        Record that this server is alive at C{at} (now): one row per server,
        whatever the number of joined callbacks.  After a crash, a callback
        that was joined counts its talk time up to the last heartbeat (see
        L{settleCheckpoints}).  Queued heartbeats collapse into the newest,
        so a store that is down never piles them up.

        The first heartbeat of this store fixes the run's start
        (C{started_at}): the row speaks only for the callbacks accepted
        since, never for those an earlier run left unfinished.
        """
        when = self._now(at)
        if self._runStartedAt is None:
            self._runStartedAt = when
        started = self._runStartedAt
        owner = self.serverId

        return self._queue.enqueue(
            lambda connection: connection.heartbeat(owner, when, started),
            key=("heartbeat", owner),
        )

    def settleCheckpoints(self) -> Deferred:
        """
        Bring C{checkpoint_at} of every unfinished, joined callback of this
        server that the last run's heartbeat speaks for up to that
        heartbeat, in one statement: recovery does this first, before this
        run's heartbeat may move on, so that a restart never counts the
        downtime as talk time, and a crash during recovery settles the same
        values again.  Waits while the store is down, like other writes.

        @return: a Deferred firing with the number of callbacks changed.
        """
        owner = self.serverId

        return self._queue.enqueue(
            lambda connection: connection.settleCheckpoints(owner)
        )

    def markEnded(
        self,
        callbackId: str,
        cause: str,
        realDuration: int,
        at: float | None = None,
        **values: Any,
    ) -> Deferred:
        """
        Record the end: state "ended", C{endedAt}, the end cause and the
        real_duration the RESPONSE reports, plus any other L{update} values
        (the legs' statuses and reasons).
        """
        return self.update(
            callbackId,
            state="ended",
            endedAt=self._now(at),
            endCause=cause,
            realDuration=realDuration,
            **values,
        )

    def markResponseSent(self, callbackId: str, at: float | None = None) -> Deferred:
        """Record when the RESPONSE was sent to the AS."""
        return self.update(callbackId, responseSentAt=self._now(at))

    def purge(self, olderThanDays: float, chunk: int = 1000) -> Deferred:
        """
        Delete callbacks (and their legs) that ended more than
        C{olderThanDays} days ago, on the writer thread, C{chunk} callbacks
        per transaction: group commits queue behind one chunk at most, so
        the daily purge never holds up an ACK for long.  Not retried: the
        daily job runs again tomorrow.

        @return: a Deferred firing with the number of callbacks deleted.
        """
        before = self._reactor.seconds() - olderThanDays * _DAY

        def purgeChunk(connection: Connection) -> int:
            connection.begin()
            try:
                count = connection.purge(before, chunk)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            return count

        def more(count: int, total: int) -> Any:
            total += count
            if count < chunk:
                return total
            if self._closed:
                return total
            return self._writer.run(purgeChunk).addCallback(more, total)

        if self._closed:
            return fail(StoreUnavailable(f"store {self.url} is closed"))
        d = self._writer.run(purgeChunk).addCallback(more, 0)
        return d.addErrback(self._threadFailed)

    # Reads: committed data only.

    def lookup(self, callbackId: str) -> Deferred:
        """The committed L{CallbackRecord} for C{callbackId}, or L{None}."""
        return self._read(Connection.readCallback, callbackId)

    def legs(self, callbackId: str) -> Deferred:
        """The stored L{LegDialog}s of a callback, leg 1 first."""
        return self._read(Connection.readLegs, callbackId)

    def unfinished(self, serverId: str | None = None) -> Deferred:
        """
        The callbacks that have not ended and belong to C{serverId} (this
        server by default), oldest first: what recovery must finish.
        """
        return self._read(Connection.unfinished, serverId or self.serverId)

    def unfinishedWithLegs(self, serverId: str | None = None) -> Deferred:
        """
        L{unfinished}, each with its stored legs: a list of
        C{(CallbackRecord, [LegDialog])}, everything recovery needs in one
        read.
        """

        def read(connection: Connection, owner: str) -> list[Any]:
            return [
                (record, connection.readLegs(record.id))
                for record in connection.unfinished(owner)
            ]

        return self._read(read, serverId or self.serverId)

    def unanswered(self, serverId: str | None = None) -> Deferred:
        """
        The callbacks of C{serverId} (this server by default) that ended but
        whose RESPONSE is not recorded as sent (a crash between the two):
        the RESPONSEs to send again at start-up.
        """
        return self._read(Connection.unanswered, serverId or self.serverId)

    def aliveAt(self, serverId: str | None = None) -> Deferred:
        """
        The last committed heartbeat of C{serverId} (this server by
        default), L{None} if it never wrote one.
        """

        def read(connection: Connection, owner: str) -> float | None:
            row = connection.execute(
                "SELECT alive_at FROM servers WHERE server_id = ?", (owner,)
            ).fetchone()
            return None if row is None else row[0]

        return self._read(read, serverId or self.serverId)

    def listCallbacks(
        self,
        since: float | None = None,
        until: float | None = None,
        peer: str | None = None,
        limit: int | None = None,
    ) -> Deferred:
        """Callbacks accepted in [since, until) from C{peer}, oldest first."""
        return self._read(Connection.listCallbacks, since, until, peer, limit)

    def _read(self, function: Callable[..., Any], *args: Any) -> Deferred:
        if self._closed:
            return fail(StoreUnavailable(f"store {self.url} is closed"))
        return self._reader.read(function, *args).addErrback(self._threadFailed)

    def _threadFailed(self, failure: Failure) -> Failure:
        if isinstance(failure.value, StoreError):
            return failure
        message = redact(" ".join(str(failure.value).split()))
        error = StoreUnavailable if transient(failure.value) else StoreError
        return Failure(error(f"store {self.url}: {message}"))

    def _now(self, at: float | None) -> float:
        return self._reactor.seconds() if at is None else at

    def startProbing(self) -> None:
        """Start checking an idle database's health (L{open} does)."""
        self._queue.startProbing()

    def close(self) -> Deferred:
        """
        Commit what is queued, then close the connections and end the
        threads.  Writes that could not be committed fail with
        L{StoreUnavailable}, and their number is logged.
        """
        if self._closed:
            return succeed(None)
        self._closed = True
        d = self._queue.close()
        d.addBoth(lambda _: self._writer.stop())
        d.addBoth(lambda _: self._reader.stop())
        d.addBoth(lambda _: None)
        return d


def open(
    url: str,
    serverId: str,
    reactor: Any,
    baseDir: str | None = None,
    **options: Any,
) -> Deferred:
    """
    Open (creating if needed) and migrate the store at C{url}.

    @param url: C{sqlite:///path} or C{postgresql://user:pw@host:port/db}.
    @param serverId: this server's identity (see L{Store.serverId}).
    @param baseDir: what a relative SQLite path is relative to (the
        configuration file's directory).
    @param options: passed to L{Store} (C{timeout}, C{groupDelay}...).
    @return: a Deferred firing with the open L{Store}, or failing with a
        one-line L{StoreError} that names the URL without its password.
    """
    try:
        parsed = parseURL(url, baseDir)
        if parsed.dialect == "sqlite":
            os.makedirs(os.path.dirname(parsed.path), exist_ok=True)
    except StoreError:
        return fail()
    except OSError as e:
        return fail(StoreError(f"store {redact(url)}: cannot open: {e.strerror}"))
    store = Store(parsed, serverId, reactor, **options)

    def failed(failure: Failure) -> Deferred:
        error = failure.value
        if not isinstance(error, StoreError):
            message = redact(" ".join(str(error).split()))
            error = StoreError(f"store {store.url}: cannot migrate: {message}")
        d = store.close()
        d.addBoth(lambda _: Failure(error))
        return d

    def opened(ignored: Any) -> Store:
        store.startProbing()
        return store

    d = store._writer.run(migrate, parsed.dialect, store.url)
    d.addCallbacks(opened, failed)
    return d
