# -*- test-case-name: tests.test_store -*-
"""
The durable callback store: the reactor-side API the server uses.

Every method returns a L{Deferred} and never blocks: writes are queued and
committed by one writer thread, reads run on one reader thread.

Writes are committed in groups: a write waits at most C{groupDelay} (2 ms)
for others, and everything queued by then is committed in one transaction,
each write inside its own savepoint so that one bad write fails alone.  A
write's Deferred fires only after the COMMIT, so an C{ACK code=ok} sent from
L{Store.accept}'s callback is a promise already on disk.

When the database cannot be reached (PostgreSQL down, SQLite locked, disk
full), L{Store.healthy} turns false, new callbacks are refused
(L{Store.accept} fails at once), and the other writes of running callbacks
wait in a bounded queue and are retried with a growing delay until the
database is back; then they land in their original order.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from callback_tw.store.errors import StoreError, StoreUnavailable
from callback_tw.store.records import (
    UPDATABLE,
    Accepted,
    LegDialog,
    NewCallback,
)
from callback_tw.store.schema import migrate
from callback_tw.store.sql import Connection
from callback_tw.store.url import StoreURL, parseURL, redact
from callback_tw.store.worker import DatabaseThread, transient
from callback_tw.timers import cancelDelayed

__all__ = ["Store", "open"]

_DAY = 86400.0


@dataclass
class _Write:
    """
    One queued write.

    @ivar apply: C{apply(connection)} performs it (inside a transaction).
    @ivar waiters: fired with its result after the COMMIT.
    @ivar retry: kept and retried while the database is down; False for
        accepts, which must fail at once so that the REQUEST is refused.
    @ivar key: writes with the same key replace each other while queued
        (checkpoints: only the newest one matters).
    """

    apply: Callable[[Connection], Any]
    waiters: list[Deferred] = field(default_factory=list)
    retry: bool = True
    key: Any = None


def _applyBatch(connection: Connection, batch: list[_Write]) -> list[Any]:
    """
    On the writer thread: apply C{batch} in one transaction.  A write that
    fails for its own reason is rolled back to its savepoint and its
    exception is its result; an unreachable database fails the whole batch.
    """
    results: list[Any] = []
    isolate = len(batch) > 1
    connection.begin()
    try:
        for write in batch:
            if isolate:
                connection.execute("SAVEPOINT one_write")
            try:
                results.append(write.apply(connection))
            except Exception as e:
                if transient(e) or not isolate:
                    raise
                connection.execute("ROLLBACK TO SAVEPOINT one_write")
                results.append(Failure(e))
            if isolate:
                connection.execute("RELEASE SAVEPOINT one_write")
        connection.execute("COMMIT")
    except BaseException:
        try:
            connection.execute("ROLLBACK")
        except Exception:
            pass
        raise
    return results


class Store:
    """
    Callbacks and their legs, durable.  Build it with L{open}.

    @ivar url: the store's URL without its password (for messages).
    @ivar serverId: this server's identity: the owner of the callbacks it
        accepts, and the only callbacks its recovery touches.
    @ivar healthy: False while the database cannot be written; the caller
        refuses new REQUESTs meanwhile.
    @ivar transactions: group commits done so far (for metrics).

    @param groupDelay: how long a write waits for others to share its
        transaction, in seconds.
    @param maxBatch: the most writes in one transaction.
    @param maxQueue: the most writes kept while the database is down; more
        fail with L{StoreUnavailable}.
    @param retryDelays: the first and the longest delay between two tries
        while the database is down.
    @param logInterval: at most one "still unavailable" line this often.
    """

    _log = Logger()

    def __init__(
        self,
        url: StoreURL,
        serverId: str,
        reactor: Any,
        timeout: float = 5.0,
        groupDelay: float = 0.002,
        maxBatch: int = 500,
        maxQueue: int = 10000,
        retryDelays: tuple[float, float] = (0.25, 5.0),
        logInterval: float = 60.0,
    ) -> None:
        self.url = url.safe
        self.serverId = serverId
        self.healthy = True
        self.transactions = 0
        self._reactor = reactor
        self._groupDelay = groupDelay
        self._maxBatch = maxBatch
        self._maxQueue = maxQueue
        self._retryDelays = retryDelays
        self._retryDelay = retryDelays[0]
        self._logInterval = logInterval
        self._lastLog: float | None = None
        self._writer = DatabaseThread(url, "store-writer", reactor, timeout)
        self._reader = DatabaseThread(url, "store-reader", reactor, timeout)
        self._pending: list[_Write] = []
        self._keyed: dict[Any, _Write] = {}
        self._flushCall: Any = None
        self._retryCall: Any = None
        self._flushing = False
        self._idleWaiters: list[Deferred] = []
        self._closed = False

    @property
    def pendingWrites(self) -> int:
        """Writes queued and not yet committed (excluding one in flight)."""
        return len(self._pending)

    # Writes.

    def accept(self, new: NewCallback, at: float | None = None) -> Deferred:
        """
        Insert a new callback owned by this server, unless its id exists.

        @return: a Deferred firing after the COMMIT with L{Accepted}: the
            stored row and whether this call created it (if not, the row is
            the earlier one: compare C{record.sameRequest(new)}, the owner,
            C{ended}).  It fails with L{StoreUnavailable} at once while the
            store is not healthy.
        """
        if not self.healthy:
            return fail(StoreUnavailable(f"store {self.url} is unavailable"))
        when = self._now(at)

        def apply(connection: Connection) -> Accepted:
            record, created = connection.insertCallback(self.serverId, new, when)
            return Accepted(record, created)

        return self._enqueue(_Write(apply, retry=False))

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
        return self._enqueue(
            _Write(lambda connection: connection.updateCallback(callbackId, columns))
        )

    def upsertLeg(self, dialog: LegDialog) -> Deferred:
        """
        Store a leg's dialog (first tagged 1xx, 2xx, each change of CSeq or
        target); the Deferred fires after the COMMIT.
        """
        return self._enqueue(_Write(lambda connection: connection.upsertLeg(dialog)))

    def checkpoint(self, callbackId: str, at: float | None = None) -> Deferred:
        """
        Record that C{callbackId} was still running at C{at} (now): after a
        crash its real_duration counts up to the last checkpoint.  Queued
        checkpoints of one callback collapse into the newest.
        """
        when = self._now(at)
        return self._enqueue(
            _Write(
                lambda connection: connection.updateCallback(
                    callbackId, {"checkpoint_at": when}
                ),
                key=("checkpoint", callbackId),
            )
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

    def purge(self, olderThanDays: float) -> Deferred:
        """
        Delete callbacks (and their legs) that ended more than
        C{olderThanDays} days ago, in one transaction of its own on the
        writer thread.  Not retried: the daily job runs again tomorrow.

        @return: a Deferred firing with the number of callbacks deleted.
        """
        if self._closed:
            return fail(StoreUnavailable(f"store {self.url} is closed"))
        before = self._reactor.seconds() - olderThanDays * _DAY

        def purge(connection: Connection) -> int:
            connection.begin()
            try:
                count = connection.purge(before)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            return count

        return self._writer.run(purge).addErrback(self._readFailed)

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
        return self._reader.read(function, *args).addErrback(self._readFailed)

    def _readFailed(self, failure: Failure) -> Failure:
        if isinstance(failure.value, StoreError):
            return failure
        message = redact(" ".join(str(failure.value).split()))
        error = StoreUnavailable if transient(failure.value) else StoreError
        return Failure(error(f"store {self.url}: {message}"))

    # The queue and the group commit.

    def _now(self, at: float | None) -> float:
        return self._reactor.seconds() if at is None else at

    def _enqueue(self, write: _Write) -> Deferred:
        d: Deferred = Deferred()
        if self._closed:
            return fail(StoreUnavailable(f"store {self.url} is closed"))
        queued = self._keyed.get(write.key) if write.key is not None else None
        if queued is not None:
            queued.apply = write.apply
            queued.waiters.append(d)
            return d
        if len(self._pending) >= self._maxQueue:
            self._setHealthy(False, "write queue full")
            return fail(StoreUnavailable(f"store {self.url}: write queue full"))
        write.waiters.append(d)
        self._pending.append(write)
        if write.key is not None:
            self._keyed[write.key] = write
        self._schedule()
        return d

    def _schedule(self) -> None:
        if (
            self._flushing
            or self._flushCall is not None
            or self._retryCall is not None
            or not self._pending
        ):
            return
        self._flushCall = self._reactor.callLater(self._groupDelay, self._flush)

    def _flush(self) -> Deferred:
        self._flushCall = None
        self._retryCall = None
        batch = self._pending[: self._maxBatch]
        del self._pending[: len(batch)]
        for write in batch:
            if write.key is not None and self._keyed.get(write.key) is write:
                del self._keyed[write.key]
        self._flushing = True
        d = self._writer.run(_applyBatch, batch)
        d.addCallbacks(
            self._flushed,
            self._flushFailed,
            callbackArgs=(batch,),
            errbackArgs=(batch,),
        )
        return d

    def _flushed(self, results: list[Any], batch: list[_Write]) -> None:
        self._flushing = False
        self.transactions += 1
        self._retryDelay = self._retryDelays[0]
        self._setHealthy(True)
        for write, result in zip(batch, results, strict=True):
            for waiter in write.waiters:
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(result)
        self._afterFlush()

    def _flushFailed(self, failure: Failure, batch: list[_Write]) -> None:
        self._flushing = False
        if not transient(failure.value):
            # The transaction itself broke (not one write): nothing to retry.
            for write in batch:
                for waiter in write.waiters:
                    waiter.errback(failure)
            self._afterFlush()
            return
        self._setHealthy(False, redact(" ".join(str(failure.value).split())))
        unavailable = StoreUnavailable(f"store {self.url} is unavailable")
        kept = []
        for write in batch:
            if write.retry and not self._closed:
                kept.append(write)
                if write.key is not None:
                    self._keyed.setdefault(write.key, write)
            else:
                for waiter in write.waiters:
                    waiter.errback(Failure(unavailable))
        self._pending[:0] = kept
        if not self._closed:
            self._retryCall = self._reactor.callLater(self._retryDelay, self._flush)
            self._retryDelay = min(self._retryDelay * 2, self._retryDelays[1])
        self._afterFlush()

    def _afterFlush(self) -> None:
        waiters, self._idleWaiters = self._idleWaiters, []
        for waiter in waiters:
            waiter.callback(None)
        if not self._closed:
            self._schedule()

    def _setHealthy(self, healthy: bool, reason: str = "") -> None:
        now = self._reactor.seconds()
        if healthy:
            if not self.healthy:
                self.healthy = True
                self._lastLog = None
                self._log.info(
                    "store {url} available again; {queued} queued writes follow",
                    url=self.url,
                    queued=len(self._pending),
                )
            return
        first = self.healthy
        self.healthy = False
        if first or self._lastLog is None or now - self._lastLog >= self._logInterval:
            self._lastLog = now
            self._log.error(
                "store {url} unavailable ({reason}); new callbacks refused,"
                " {queued} writes kept for retry",
                url=self.url,
                reason=reason,
                queued=len(self._pending),
            )

    # Shutdown.

    def close(self) -> Deferred:
        """
        Commit what is queued (one try), then close the connections and end
        the threads.  Writes that could not be committed fail with
        L{StoreUnavailable}, and their number is logged.
        """
        if self._closed:
            return succeed(None)
        self._closed = True
        cancelDelayed(self._flushCall)
        cancelDelayed(self._retryCall)
        self._flushCall = self._retryCall = None
        d = self._idle()
        d.addCallback(lambda _: self._flush() if self._pending else None)
        d.addCallback(lambda _: self._idle())
        d.addCallback(self._closeThreads)
        return d

    def _idle(self) -> Deferred:
        if not self._flushing:
            return succeed(None)
        d: Deferred = Deferred()
        self._idleWaiters.append(d)
        return d

    def _closeThreads(self, ignored: Any) -> Deferred:
        lost, self._pending = self._pending, []
        self._keyed.clear()
        if lost:
            self._log.error(
                "store {url} closed with {count} writes not committed",
                url=self.url,
                count=len(lost),
            )
        for write in lost:
            for waiter in write.waiters:
                waiter.errback(StoreUnavailable(f"store {self.url} is closed"))
        d = self._writer.stop()
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
        store.healthy = False
        d = store.close()
        d.addBoth(lambda _: Failure(error))
        return d

    d = store._writer.run(migrate, parsed.dialect, store.url)
    d.addCallbacks(lambda _: store, failed)
    return d
