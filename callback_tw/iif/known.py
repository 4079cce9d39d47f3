# -*- test-case-name: tests.test_iif_durable -*-
"""
What the IIF knows of a REQUEST id it has seen: the small values
L{callback_tw.iif.protocol.IIFProtocol} keeps while a callback's row is
being committed or its end is, and the words its log lines use for a
repeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from callback_tw.iif.message import Request
from callback_tw.iif.peers import Peer

__all__ = ["Ending", "Known", "Pending"]

_Address = tuple[Any, ...]


class Known(StrEnum):
    """What a repeated REQUEST id is known as (a refused REQUEST is not known)."""

    RUNNING = "running"  # ACK ok sent; the manager runs its callback
    FINISHED = "finished"  # ended; the store remembers it for requestMemory seconds
    ELSEWHERE = "another server's"  # accepted by another server on the same store


class Pending:
    """
    A REQUEST whose row is being committed: its repeats wait for the same answer.

    @ivar waiters: C{(addr, peer)} of the repeats received meanwhile.
    @ivar receivedAt: when the REQUEST came (reactor seconds), for the ACK's
        latency.
    """

    def __init__(self, request: Request, peer: Peer, receivedAt: float = 0.0) -> None:
        self.request = request
        self.peer = peer
        self.receivedAt = receivedAt
        self.waiters: list[tuple[_Address, Peer]] = []


@dataclass(frozen=True)
class Ending:
    """A callback that ended here and whose end is being committed."""

    request: Request
