# -*- test-case-name: tests.test_media_rtp -*-
"""
One RTP port per leg, bound on the reactor.

Each leg's SDP offer names a real address and port, so a phone that starts
sending media at once (early media, or right after the answer) does not hit a
closed port and get ICMP errors back. What arrives is read and discarded:
until the join the server only plays announcements; after the join media
flows between the parties and the port is closed.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger


class RTPPort(DatagramProtocol):
    """
    A UDP port that receives (and drops) RTP for one leg, and through which
    announcements are sent.

    @ivar host: the address the port is bound to (and advertised in SDP).
    @ivar port: the bound port number.
    @ivar received: count of datagrams read and discarded.
    """

    noisy = False

    def __init__(self, host: str, allocator: RTPPortAllocator | None = None) -> None:
        self.host = host
        self.port = 0
        self.received = 0
        self._listening = None
        self._allocator = allocator

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        self.received += 1

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        """
        Send one RTP packet. A send error (EAGAIN...) is raised to the
        player, which counts the packet as dropped and goes on.
        """
        if self.transport is not None:
            self.transport.write(data, addr)

    def close(self) -> None:
        """Release the port (idempotent)."""
        listening, self._listening = self._listening, None
        if listening is not None:
            listening.stopListening()
        if self._allocator is not None:
            self._allocator.open.discard(self)


class RTPPortAllocator:
    """
    Binds L{RTPPort}s: any free port, or within a configured range (what a
    firewall in front of the server allows). RTP ports are even by
    convention (RFC 3550 11), so a range is searched on even numbers.
    """

    _log = Logger()

    def __init__(
        self,
        host: str,
        portRange: tuple[int, int] | None = None,
        reactor: Any = None,
        bindHost: str | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        self._reactor = reactor
        self.host = host
        self._bindHost = bindHost or host
        self._range = portRange
        self.open: set[RTPPort] = set()

    def probe(self) -> None:
        """
        With a configured range, bind one port of it and release it, at
        start-up: a range with no free port stops start-up instead of failing
        every call later.  Without a range there is nothing to check: any
        free port is taken, on the address SIP has already bound.

        @raise CannotListenError: as L{openPort}.
        """
        if self._range is not None:
            self.openPort().close()

    def openPort(self) -> RTPPort:
        """Bind a new port; raise L{CannotListenError} when none is free."""
        rtp = RTPPort(self.host, self)
        if self._range is None:
            candidates: list[int] = [0]
        else:
            low, high = self._range
            low += low % 2
            evens = list(range(low, high + 1, 2))
            start = random.randrange(len(evens)) if evens else 0
            candidates = evens[start:] + evens[:start]
        for port in candidates:
            try:
                listening = self._reactor.listenUDP(port, rtp, interface=self._bindHost)
            except CannotListenError:
                continue
            rtp._listening = listening
            rtp.port = listening.getHost().port
            self.open.add(rtp)
            return rtp
        raise CannotListenError(
            self._bindHost, self._range, "no free RTP port in range"
        )
