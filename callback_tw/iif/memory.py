# -*- test-case-name: tests.test_iif_protocol -*-
"""
The REQUEST ids of finished callbacks, remembered for a while.

An AS that missed our ACK or RESPONSE sends its REQUEST again; while the id
is remembered the repeat is answered from here instead of placing a second
call. The memory is bounded twice: an id is forgotten C{lifetime} seconds
after its callback ended, and beyond C{maxSize} ids the oldest go first.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IDelayedCall

from callback_tw.iif.message import Request
from callback_tw.timers import cancelDelayed

__all__ = ["Finished", "RequestMemory"]


@dataclass(frozen=True)
class Finished:
    """
    A finished callback as its AS saw it.

    @ivar request: the REQUEST that started it; a repeat must equal it.
    @ivar realDuration: the C{real_duration} its RESPONSE reported.
    @ivar finishedAt: when it ended (reactor seconds); the memory counts
        from there.
    """

    request: Request
    realDuration: int
    finishedAt: float


class RequestMemory:
    """
    Finished REQUEST ids by id, oldest end first.

    One timer, due when the oldest id expires, runs between L{start} and
    L{stop}; expiry also happens on every L{recall}, so a stopped memory
    never answers for an id it should have forgotten.
    """

    def __init__(self, reactor: Any, lifetime: float, maxSize: int) -> None:
        """
        @param reactor: an L{IReactorTime}.
        @param lifetime: seconds an id is remembered after its end.
        @param maxSize: the most ids remembered; the oldest go first.
        """
        self._reactor = reactor
        self._lifetime = lifetime
        self._maxSize = maxSize
        self._finished: OrderedDict[str, Finished] = OrderedDict()
        self._expiryCall: IDelayedCall | None = None
        self._running = False

    def start(self) -> None:
        """Expire ids on time from now on."""
        self._running = True
        self._schedule()

    def stop(self) -> None:
        """Leave no timer behind; ids left over expire on L{recall}."""
        self._running = False
        cancelDelayed(self._expiryCall)
        self._expiryCall = None

    def remember(self, request: Request, realDuration: int) -> None:
        """Remember that the callback of C{request} ended now."""
        callbackId = request.callbackId
        self._finished.pop(callbackId, None)
        self._finished[callbackId] = Finished(
            request, realDuration, self._reactor.seconds()
        )
        while len(self._finished) > self._maxSize:
            self._finished.popitem(last=False)
        self._schedule()

    def recall(self, callbackId: str) -> Finished | None:
        """The finished callback with this id, if still remembered."""
        self._expire()
        return self._finished.get(callbackId)

    def _expire(self) -> None:
        deadline = self._reactor.seconds() - self._lifetime
        while self._finished:
            oldest = next(iter(self._finished.values()))
            if oldest.finishedAt > deadline:
                break
            self._finished.popitem(last=False)

    def _schedule(self) -> None:
        if not self._running or not self._finished:
            return
        if self._expiryCall is not None and self._expiryCall.active():
            return
        oldest = next(iter(self._finished.values()))
        delay = max(0.0, oldest.finishedAt + self._lifetime - self._reactor.seconds())
        self._expiryCall = self._reactor.callLater(delay, self._expiryDue)

    def _expiryDue(self) -> None:
        self._expiryCall = None
        self._expire()
        self._schedule()
