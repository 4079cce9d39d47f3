# -*- test-case-name: tests.test_store -*-
"""
The store's write path: a queue of writes committed in groups by one writer
thread, kept and retried while the database is down.

An accept (the write an ACK waits for) goes at the next reactor turn, or as
soon as the transaction in flight is committed, and takes everything queued
along; other writes wait up to C{groupDelay} for company, so that a busy
server makes a few large transactions rather than one per write (each costs
a thread hand-off and a COMMIT).  Each group is one transaction, sent as one
pipeline on PostgreSQL (one round trip), and a write's Deferred fires only
after the COMMIT.  A write that fails for its own reason fails alone: the
group is then run again with one savepoint per write.

The queue keeps each callback's writes in the order they were made (recovery
reads them so) and shortens it where the order allows: an accept goes ahead
of the queued writes of other callbacks, so a new callback's ACK never waits
behind a backlog of updates; an update queued right behind another of the
same callback (no other write of it between) is folded into it, as is a
leg's dialog into the same leg's queued one, so one statement writes the
row both would have.

When the database cannot be reached, L{GroupCommit.healthy} turns false and
the writes stay queued (bounded) in their order, retried with a growing
delay; writes that must not wait (accepts) fail at once instead.  Every
write the store makes is idempotent, so retrying a transaction whose COMMIT
may or may not have happened is safe.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from callback_tw.store.errors import StoreUnavailable
from callback_tw.store.sql import Connection, Later
from callback_tw.store.url import redact
from callback_tw.store.worker import DatabaseThread, transient
from callback_tw.timers import cancelDelayed

__all__ = ["GroupCommit"]


@dataclass
class _Write:
    """
    One queued write.

    @ivar apply: C{apply(connection)} performs it (inside a transaction) and
        returns its result as a L{callback_tw.store.sql.Later}.
    @ivar waiters: fired with its result after the COMMIT.
    @ivar retry: kept and retried while the database is down; False for
        accepts, which must fail at once so that the REQUEST is refused.
    @ivar key: writes with the same key replace each other while queued
        (heartbeats: only the newest one matters).
    @ivar callbackId: the callback it writes, if any (see L{GroupCommit}).
    @ivar merge: C{(kind, values)} for a write that a later one of the same
        kind can be folded into (see L{GroupCommit.enqueue}).
    @ivar folded: how many later writes were folded into it.
    @ivar first: an accept (see L{GroupCommit.enqueue}).
    """

    apply: Callable[[Connection], Later[Any]]
    waiters: list[Deferred] = field(default_factory=list)
    retry: bool = True
    key: Any = None
    callbackId: str | None = None
    merge: tuple[Hashable, dict[str, Any]] | None = None
    folded: int = 0
    first: bool = False


def _applyBatch(connection: Connection, batch: list[_Write]) -> list[Any]:
    """
    On the writer thread: apply C{batch} in one transaction.  A write that
    fails for its own reason fails alone and the others are committed; an
    unreachable database fails the whole batch.  An empty batch is an empty
    transaction: the probe.

    Writes that fail for their own reason are bugs, so rare: the batch runs
    first as one pipeline without savepoints (each costs two round trips on
    PostgreSQL), and only if one write fails is it run again, statement by
    statement, with one savepoint per write.
    """
    try:
        return _transaction(connection, batch, isolate=False)
    except Exception as e:
        if transient(e) or len(batch) < 2:
            raise
    return _transaction(connection, batch, isolate=True)


def _transaction(
    connection: Connection, batch: list[_Write], isolate: bool
) -> list[Any]:
    outcomes: list[Any] = []
    try:
        with nullcontext() if isolate else connection.pipeline():
            connection.begin()
            if isolate:
                outcomes = [_isolated(connection, write) for write in batch]
            else:
                outcomes = [write.apply(connection) for write in batch]
            connection.execute("COMMIT")
    except BaseException:
        try:
            connection.execute("ROLLBACK")
        except Exception:
            pass
        raise
    return [_result(outcome) for outcome in outcomes]


def _isolated(connection: Connection, write: _Write) -> Any:
    """C{write} in its own savepoint: if it fails, it fails alone."""
    connection.execute("SAVEPOINT one_write")
    try:
        outcome = write.apply(connection)
    except Exception as e:
        if transient(e):
            raise
        connection.execute("ROLLBACK TO SAVEPOINT one_write")
        outcome = Failure(e)
    connection.execute("RELEASE SAVEPOINT one_write")
    return outcome


def _result(outcome: Any) -> Any:
    """A committed write's result, or its L{Failure}: it fails alone."""
    if isinstance(outcome, Failure):
        return outcome
    try:
        return outcome()
    except Exception:
        return Failure()


class GroupCommit:
    """
    The queue of writes in front of the writer thread.

    @ivar healthy: False while the database cannot be written.
    @ivar transactions: transactions committed so far (for metrics).

    @param url: the store's URL without password, for log lines.
    @param groupDelay: how long a write may wait for others to share its
        transaction, in seconds, unless an accept comes: an accept goes at
        the next reactor turn (as soon as the transaction in flight ends),
        taking along whatever is queued.
    @param maxBatch: the most writes in one transaction.
    @param maxQueue: the most writes kept while the database is down; more
        fail with L{StoreUnavailable}.  A write folded into a queued one
        counts (it holds its caller's Deferred and values); a checkpoint
        that replaces a queued one does not.
    @param retryDelays: the first and the longest delay between two tries
        while the database is down.
    @param logInterval: at most one "still unavailable" line this often.
    @param probeInterval: while no write comes, an empty transaction this
        often checks that the database is still there, so that C{healthy}
        tells the truth on an idle server; 0 for none.
    """

    _log = Logger()

    def __init__(
        self,
        writer: DatabaseThread,
        url: str,
        reactor: Any,
        groupDelay: float = 0.005,
        maxBatch: int = 500,
        maxQueue: int = 10000,
        retryDelays: tuple[float, float] = (0.25, 5.0),
        logInterval: float = 60.0,
        probeInterval: float = 5.0,
    ) -> None:
        self.healthy = True
        self.transactions = 0
        self._writer = writer
        self._url = url
        self._reactor = reactor
        self._groupDelay = groupDelay
        self._maxBatch = maxBatch
        self._maxQueue = maxQueue
        self._retryDelays = retryDelays
        self._retryDelay = retryDelays[0]
        self._logInterval = logInterval
        self._lastLog: float | None = None
        self._probeInterval = probeInterval
        self._pending: list[_Write] = []
        self._keyed: dict[Any, _Write] = {}
        # The last queued write of each callback, and how many accepts lead
        # the queue (where the next accept goes).
        self._last: dict[str, _Write] = {}
        self._leading = 0
        self._waiting = 0
        # Accepts queued, and when the oldest queued write came.
        self._urgent = 0
        self._oldest: float | None = None
        self._flushCall: Any = None
        self._retryCall: Any = None
        self._probeCall: Any = None
        self._flushing = False
        self._idleWaiters: list[Deferred] = []
        self._closed = False

    @property
    def pending(self) -> int:
        """
        Writes queued and not yet committed (excluding those in flight): the
        statements the queue will run, each folded write counted once.
        """
        return len(self._pending)

    def enqueue(
        self,
        apply: Callable[[Connection], Later[Any]],
        retry: bool = True,
        key: Any = None,
        callbackId: str | None = None,
        merge: tuple[Hashable, dict[str, Any]] | None = None,
        first: bool = False,
    ) -> Deferred:
        """
        Queue C{apply(connection)}; the Deferred fires with its result after
        the COMMIT, or fails with its own error or L{StoreUnavailable}.

        @param retry: keep it while the database is down (else fail at once).
        @param key: replace a queued write with the same key.
        @param callbackId: the callback it writes: writes of one callback
            keep their order.
        @param merge: C{(kind, values)}: C{apply} writes C{values}, a dict it
            reads when it runs.  If the last queued write of C{callbackId}
            has the same kind, this one is folded into it: its C{values}
            are updated with these, and both Deferreds fire with its result.
        @param first: go ahead of the queued writes of other callbacks (an
            accept: its callback has no earlier write), behind earlier
            such writes.
        """
        if self._closed:
            return fail(StoreUnavailable(f"store {self._url} is closed"))
        d: Deferred = Deferred()
        queued = self._keyed.get(key) if key is not None else None
        if queued is not None:
            queued.apply = apply
            queued.waiters.append(d)
            return d
        if self._waiting >= self._maxQueue:
            self._setHealthy(False, "write queue full")
            return fail(StoreUnavailable(f"store {self._url}: write queue full"))
        self._waiting += 1
        last = self._last.get(callbackId) if callbackId is not None else None
        if (
            merge is not None
            and last is not None
            and last.merge is not None
            and last.merge[0] == merge[0]
            and last.retry == retry
        ):
            last.merge[1].update(merge[1])
            last.waiters.append(d)
            last.folded += 1
            return d
        write = _Write(apply, [d], retry, key, callbackId, merge, first=first)
        if not self._pending:
            self._oldest = self._reactor.seconds()
        if first:
            self._urgent += 1
        if first and last is None:
            self._pending.insert(self._leading, write)
            self._leading += 1
        else:
            self._pending.append(write)
        if key is not None:
            self._keyed[key] = write
        if callbackId is not None:
            self._last[callbackId] = write
        self._schedule()
        return d

    def startProbing(self) -> None:
        """Start (or restart) the idle probe, see C{probeInterval}."""
        if self._probeInterval > 0 and not self._closed:
            cancelDelayed(self._probeCall)
            self._probeCall = self._reactor.callLater(self._probeInterval, self._probe)

    def _probe(self) -> None:
        self._probeCall = None
        busy = (
            self._flushing
            or self._pending
            or self._flushCall is not None
            or self._retryCall is not None
        )
        if not busy:
            self._flush()
        self.startProbing()

    def _schedule(self) -> None:
        """
        Flush at the next reactor turn if an accept is queued, else when the
        oldest queued write has waited C{groupDelay}; nothing while a
        transaction or a retry is under way (L{_afterFlush} calls again).
        """
        if self._flushing or self._retryCall is not None or not self._pending:
            return
        delay = 0.0
        if not self._urgent and self._oldest is not None:
            waited = self._reactor.seconds() - self._oldest
            delay = max(0.0, self._groupDelay - waited)
        if self._flushCall is not None:
            if delay > 0 or self._flushCall.getTime() <= self._reactor.seconds():
                return
            cancelDelayed(self._flushCall)
        self._flushCall = self._reactor.callLater(delay, self._flush)

    def _flush(self) -> Deferred:
        self._flushCall = None
        self._retryCall = None
        batch = self._pending[: self._maxBatch]
        del self._pending[: len(batch)]
        self._leading = max(0, self._leading - len(batch))
        if not self._pending:
            self._oldest = None
        for write in batch:
            self._waiting -= 1 + write.folded
            self._urgent -= write.first
            if write.key is not None and self._keyed.get(write.key) is write:
                del self._keyed[write.key]
            if write.callbackId is not None:
                if self._last.get(write.callbackId) is write:
                    del self._last[write.callbackId]
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
        reason = redact(" ".join(str(failure.value).split()))[:200]
        if self._closed:
            self._requeue(batch)
            self._setHealthy(False, reason)
            self._afterFlush()
            return
        self._requeue([write for write in batch if write.retry])
        self._setHealthy(False, reason)
        unavailable = StoreUnavailable(f"store {self._url} is unavailable")
        for write in batch:
            if not write.retry:
                for waiter in write.waiters:
                    waiter.errback(Failure(unavailable))
        self._retryCall = self._reactor.callLater(self._retryDelay, self._flush)
        self._retryDelay = min(self._retryDelay * 2, self._retryDelays[1])
        self._afterFlush()

    def _requeue(self, kept: list[_Write]) -> None:
        """
        Put C{kept}, a batch that was not committed, back at the head of
        the queue, ahead of what came since: each callback's writes stay
        in order.
        """
        self._pending[:0] = kept
        self._leading = 0
        if kept and self._oldest is None:
            self._oldest = self._reactor.seconds()
        for write in reversed(kept):
            self._waiting += 1 + write.folded
            self._urgent += write.first
            if write.key is not None:
                self._keyed.setdefault(write.key, write)
            if write.callbackId is not None:
                self._last.setdefault(write.callbackId, write)

    def _afterFlush(self) -> None:
        waiters, self._idleWaiters = self._idleWaiters, []
        for waiter in waiters:
            waiter.callback(None)
        if not self._closed:
            self._schedule()

    def _setHealthy(self, healthy: bool, reason: str = "") -> None:
        if healthy:
            if not self.healthy:
                self.healthy = True
                self._lastLog = None
                self._log.info(
                    "store {url} available again; {queued} queued writes follow",
                    url=self._url,
                    queued=len(self._pending),
                )
            return
        now = self._reactor.seconds()
        first = self.healthy
        self.healthy = False
        if first or self._lastLog is None or now - self._lastLog >= self._logInterval:
            self._lastLog = now
            self._log.error(
                "store {url} unavailable ({reason}); new callbacks refused,"
                " {queued} writes kept for retry",
                url=self._url,
                reason=reason,
                queued=len(self._pending),
            )

    def close(self) -> Deferred:
        """
        Stop taking writes, commit what is queued (one try, no retry), and
        fail what could not be committed with L{StoreUnavailable}, logging
        how many.  The writer thread is left to the caller.
        """
        if self._closed:
            return succeed(None)
        self._closed = True
        for call in (self._flushCall, self._retryCall, self._probeCall):
            cancelDelayed(call)
        self._flushCall = self._retryCall = self._probeCall = None
        d = self._idle()
        d.addCallback(self._drain)
        d.addCallback(lambda _: self._dropPending())
        return d

    def _drain(self, ignored: Any = None) -> Deferred | None:
        """Flush until the queue is empty or a flush fails."""
        if not self._pending:
            return None
        d = self._flush()
        d.addCallback(lambda _: self._drain() if self.healthy else None)
        return d

    def _idle(self) -> Deferred:
        if not self._flushing:
            return succeed(None)
        d: Deferred = Deferred()
        self._idleWaiters.append(d)
        return d

    def _dropPending(self) -> None:
        lost, self._pending = self._pending, []
        self._keyed.clear()
        self._last.clear()
        self._leading = self._waiting = self._urgent = 0
        self._oldest = None
        if lost:
            self._log.error(
                "store {url} closed with {count} writes not committed",
                url=self._url,
                count=len(lost),
            )
        for write in lost:
            for waiter in write.waiters:
                waiter.errback(StoreUnavailable(f"store {self._url} is closed"))
