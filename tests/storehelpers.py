"""
A synchronous stand-in for L{callback_tw.store.Store}, for unit tests that
run on a L{Clock} (the real store needs a running reactor and threads).

It keeps the same records (L{CallbackRecord}, L{LegDialog}) with the same
rules as the SQL: an id is accepted once, across "servers" sharing one
L{MemoryStore.rows} dict; an ended row that ended before C{forgetBefore} is
replaced.  Every method returns an already-fired Deferred, unless the test
holds writes (L{MemoryStore.hold}) to see what happens before a commit.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed

from callback_tw.store import (
    Accepted,
    CallbackRecord,
    LegDialog,
    NewCallback,
    StoreUnavailable,
)

__all__ = ["MemoryStore"]


class MemoryStore:
    """
    The store's API on dicts.

    @ivar rows: callback id -> L{CallbackRecord}; pass the same dict to two
        stores to play two servers on one database.
    @ivar legRows: C{(callback id, leg)} -> L{LegDialog}.
    @ivar servers: server id -> C{(alive_at, started_at)}, its heartbeat.
    @ivar writes: every write, in order, as C{(method, callback id, values)}.
    @ivar healthy: what L{Store.healthy} says; while false L{accept} fails.
    @ivar held: writes whose Deferred has not fired (see L{hold}).
    """

    url = "memory:"

    def __init__(
        self,
        serverId: str = "srv1",
        clock: Any = None,
        rows: dict[str, CallbackRecord] | None = None,
        legRows: dict[tuple[str, int], LegDialog] | None = None,
        servers: dict[str, tuple[float, float]] | None = None,
    ) -> None:
        self.serverId = serverId
        self._clock = clock
        self.rows = {} if rows is None else rows
        self.legRows = {} if legRows is None else legRows
        self.servers = {} if servers is None else servers
        self._runStartedAt: float | None = None
        self.writes: list[tuple[str, str, dict[str, Any]]] = []
        self.healthy = True
        self.closed = False
        self._holding = False
        self.held: list[Deferred] = []
        self.transactions = 0
        self.pendingWrites = 0

    def hold(self) -> None:
        """From now on, writes wait for L{release} before they fire."""
        self._holding = True

    def release(self) -> None:
        """Fire the held writes, in order, and stop holding."""
        self._holding = False
        held, self.held = self.held, []
        for d in held:
            d.callback(d.result_)  # type: ignore[attr-defined]

    def _now(self, at: float | None) -> float:
        if at is not None:
            return at
        return 0.0 if self._clock is None else self._clock.seconds()

    def _write(self, result: Any) -> Deferred:
        if not self._holding:
            return succeed(result)
        d: Deferred = Deferred()
        d.result_ = result  # type: ignore[attr-defined]
        self.held.append(d)
        return d

    # Writes.

    def accept(
        self,
        new: NewCallback,
        at: float | None = None,
        forgetBefore: float | None = None,
    ) -> Deferred:
        if not self.healthy:
            return fail(StoreUnavailable("store memory: is unavailable"))
        self.writes.append(("accept", new.id, {}))
        old = self.rows.get(new.id)
        if (
            old is not None
            and forgetBefore is not None
            and old.endedAt is not None
            and old.endedAt <= forgetBefore
        ):
            self._forget(new.id)
            old = None
        if old is not None:
            return self._write(Accepted(old, False))
        record = CallbackRecord(
            new.id,
            self.serverId,
            new.peer,
            new.peerAddress,
            new.user1,
            new.user2,
            new.duration,
            new.annId1,
            new.annId2,
            new.annDigit2,
            "accepted",
            self._now(at),
        )
        self.rows[new.id] = record
        return self._write(Accepted(record, True))

    def _forget(self, callbackId: str) -> None:
        self.rows.pop(callbackId, None)
        for key in [k for k in self.legRows if k[0] == callbackId]:
            del self.legRows[key]

    def forget(self, callbackId: str) -> Deferred:
        self.writes.append(("forget", callbackId, {}))
        self._forget(callbackId)
        return self._write(None)

    def update(self, callbackId: str, **values: Any) -> Deferred:
        self.writes.append(("update", callbackId, values))
        record = self.rows.get(callbackId)
        if record is None:
            return self._write(False)
        self.rows[callbackId] = dataclasses.replace(record, **values)
        return self._write(True)

    def upsertLeg(self, dialog: LegDialog) -> Deferred:
        self.writes.append(("upsertLeg", dialog.callbackId, {"leg": dialog.leg}))
        self.legRows[(dialog.callbackId, dialog.leg)] = dialog
        return self._write(None)

    def heartbeat(self, at: float | None = None) -> Deferred:
        when = self._now(at)
        if self._runStartedAt is None:
            self._runStartedAt = when
        self.writes.append(("heartbeat", self.serverId, {"aliveAt": when}))
        self.servers[self.serverId] = (when, self._runStartedAt)
        return self._write(None)

    def settleCheckpoints(self) -> Deferred:
        self.writes.append(("settleCheckpoints", self.serverId, {}))
        if self.serverId not in self.servers:
            return self._write(0)
        aliveAt, startedAt = self.servers[self.serverId]
        settled = 0
        for record in self._mine(None):
            if (
                record.endedAt is None
                and record.joinedAt is not None
                and record.acceptedAt >= startedAt
                and (record.checkpointAt is None or record.checkpointAt < aliveAt)
            ):
                self.rows[record.id] = dataclasses.replace(record, checkpointAt=aliveAt)
                settled += 1
        return self._write(settled)

    def markEnded(
        self,
        callbackId: str,
        cause: str,
        realDuration: int,
        at: float | None = None,
        **values: Any,
    ) -> Deferred:
        return self.update(
            callbackId,
            state="ended",
            endedAt=self._now(at),
            endCause=cause,
            realDuration=realDuration,
            **values,
        )

    def markResponseSent(self, callbackId: str, at: float | None = None) -> Deferred:
        return self.update(callbackId, responseSentAt=self._now(at))

    def purge(self, olderThanDays: float, chunk: int = 1000) -> Deferred:
        before = self._now(None) - olderThanDays * 86400
        old = [
            r.id
            for r in self.rows.values()
            if r.endedAt is not None and r.endedAt < before
        ]
        for callbackId in old:
            self._forget(callbackId)
        return succeed(len(old))

    # Reads.

    def lookup(self, callbackId: str) -> Deferred:
        return succeed(self.rows.get(callbackId))

    def aliveAt(self, serverId: str | None = None) -> Deferred:
        beat = self.servers.get(serverId or self.serverId)
        return succeed(None if beat is None else beat[0])

    def legs(self, callbackId: str) -> Deferred:
        return succeed(self._legs(callbackId))

    def _legs(self, callbackId: str) -> list[LegDialog]:
        return [self.legRows[k] for k in sorted(self.legRows) if k[0] == callbackId]

    def _mine(self, serverId: str | None) -> list[CallbackRecord]:
        owner = serverId or self.serverId
        return sorted(
            (r for r in self.rows.values() if r.serverId == owner),
            key=lambda r: (r.acceptedAt, r.id),
        )

    def unfinished(self, serverId: str | None = None) -> Deferred:
        return succeed([r for r in self._mine(serverId) if r.endedAt is None])

    def unfinishedWithLegs(self, serverId: str | None = None) -> Deferred:
        return succeed(
            [(r, self._legs(r.id)) for r in self._mine(serverId) if r.endedAt is None]
        )

    def unanswered(self, serverId: str | None = None) -> Deferred:
        return succeed(
            [
                r
                for r in self._mine(serverId)
                if r.endedAt is not None and r.responseSentAt is None
            ]
        )

    def close(self) -> Deferred:
        self.closed = True
        return succeed(None)
