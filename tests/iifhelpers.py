"""
Test doubles for the IIF side: a fake callback manager whose calls the test finishes by
hand, and a factory for an L{IIFProtocol} on an in-memory transport and a L{Clock}.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport

from callback_tw.iif.message import Request
from callback_tw.iif.protocol import IIFProtocol
from tests.storehelpers import MemoryStore

PEER = ("127.0.0.1", 6000)
"""The peer server the default protocol accepts commands from."""


@dataclass
class CallResult:
    """
    What a call's C{finished} Deferred fires with.
    """

    realDuration: int
    cause: str = "normal"


@dataclass
class FakeCall:
    """
    A started callback as the IIF side sees it: its request, and a Deferred the test
    fires.
    """

    request: Request
    finished: Deferred = field(default_factory=Deferred)

    def finish(self, realDuration: int, cause: str = "normal") -> None:
        self.finished.callback(CallResult(realDuration, cause))


class FakeManager:
    """
    A callback manager that records what it is asked.

    @ivar requests: every request passed to L{startCallback}, refused or not, in order.
    @ivar calls: every call started, in order.
    @ivar cancelled: every id passed to L{cancelCallback}, in order.
    @ivar refuseWith: if set, the next L{startCallback} raises it (once).
    @ivar cancelResult: what L{cancelCallback} returns, or an exception it raises.
    @ivar finishOnCancel: if set, L{cancelCallback} first finishes the matching running
        call synchronously with this real duration.
    """

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.calls: list[FakeCall] = []
        self.cancelled: list[str] = []
        self.refuseWith: Exception | None = None
        self.cancelResult: Any = True
        self.finishOnCancel: int | None = None

    def admit(self, request: Request) -> None:
        """Admission is decided in L{startCallback} here (C{refuseWith})."""

    def withdraw(self, callbackId: str) -> None:
        """Nothing is held between L{admit} and L{startCallback} here."""

    def startCallback(self, request: Request) -> FakeCall:
        self.requests.append(request)
        if self.refuseWith is not None:
            error, self.refuseWith = self.refuseWith, None
            raise error
        call = FakeCall(request)
        self.calls.append(call)
        return call

    def runningCallback(self, callbackId: str) -> FakeCall | None:
        for call in self.calls:
            if call.request.callbackId == callbackId and not call.finished.called:
                return call
        return None

    def cancelCallback(self, callbackId: str) -> bool:
        self.cancelled.append(callbackId)
        if isinstance(self.cancelResult, Exception):
            raise self.cancelResult
        if self.finishOnCancel is not None:
            for call in self.calls:
                if call.request.callbackId == callbackId and not call.finished.called:
                    call.finish(self.finishOnCancel, "cancelled")
        return self.cancelResult


def makeProtocol(
    peers: Any = (PEER,),
    maxDuration: int = 86400,
    requestMemory: float = 3600.0,
    maxRemembered: int = 100_000,
    signatureWindow: float = 30.0,
    now: float = 0.0,
    manager: Any = None,
    store: Any = None,
    clock: Clock | None = None,
) -> tuple[IIFProtocol, FakeDatagramTransport, Any, Clock]:
    """
    An L{IIFProtocol} started on a L{FakeDatagramTransport}, with a L{FakeManager}
    (or C{manager}), a L{MemoryStore} (or C{store}, as C{protocol.store}) and a
    L{Clock} as its reactor.

    @param peers: L{callback_tw.iif.peers.Peer}s or C{(host, port)} pairs.
    @param now: the clock's time at the start (Unix seconds, for signatures).
    """
    if clock is None:
        clock = Clock()
        clock.advance(now)
    if manager is None:
        manager = FakeManager()
    if store is None:
        store = MemoryStore(clock=clock)
    protocol = IIFProtocol(
        manager,
        peers,
        maxDuration,
        reactor=clock,
        requestMemory=requestMemory,
        maxRemembered=maxRemembered,
        signatureWindow=signatureWindow,
        store=store,
    )
    transport = FakeDatagramTransport()
    protocol.makeConnection(transport)
    return protocol, transport, manager, clock


__all__ = [
    "PEER",
    "CallResult",
    "FakeCall",
    "FakeManager",
    "makeProtocol",
]
