# -*- test-case-name: tests.test_iif_peers -*-
"""
The IIF's peer servers: who sent a datagram, whether it is signed as it must be,
whether the peer may do what it asks, and what we send back to it.

The protocol (L{callback_tw.iif.protocol}) handles the wire and the callbacks; every
per-peer decision is made here, through a small interface: L{PeerTable.identify} a
source, L{PeerTable.open} a keyed peer's datagram (signature and time window),
L{PeerTable.admit} a new REQUEST (L{callback_tw.policy}), L{PeerTable.check} that an
id is the peer's own, L{PeerTable.ended} / L{PeerTable.refused} when a callback ends
or never started, and L{PeerTable.seal} what we send.

A callback belongs to the peer that created it for as long as the protocol remembers
its id (the same C{requestMemory} and C{maxRemembered}), so another peer can neither
CANCEL it nor get its ACK and RESPONSE by repeating its REQUEST.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.interfaces import IReactorTime

from callback_tw.iif.message import Request
from callback_tw.iif.signing import SignatureError, sign, verify
from callback_tw.policy import Admission, PeerRules, Policy, Refusal

__all__ = ["Peer", "PeerTable", "normaliseHost", "peersFromConfig"]


def normaliseHost(host: str) -> str:
    """
    Canonical text of an IP literal, so C{"::ffff:127.0.0.1"}, C{"0:0::1"} and
    C{"::1"} compare as the addresses they are.

    @raise ValueError: if C{host} is not an IP literal.
    """
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


@dataclass(frozen=True)
class Peer:
    """
    One peer server as the IIF sees it.

    @ivar name: its name in C{[peer_servers]}; the key of its rules, limits,
        callbacks and log lines.
    @ivar host: an IP literal.
    @ivar port: the only source port accepted, or L{None} for any.
    @ivar commands: whether it may send commands at all; a peer that may not is
        treated like a stranger.
    @ivar key: the HMAC key it signs with, or L{None} (unsigned); never in a repr.
    @ivar rules: its number patterns and limits.
    @ivar responseDetails: its RESPONSEs carry the callback's details after
        C{real_duration} (C{[peer NAME] response_details}).
    """

    name: str
    host: str
    port: int | None = None
    commands: bool = True
    key: bytes | None = field(default=None, repr=False)
    rules: PeerRules = field(default_factory=PeerRules)
    responseDetails: bool = False

    @property
    def signed(self) -> bool:
        """
        Whether its commands must be signed, and our answers to it are.
        """
        return self.key is not None


def peersFromConfig(config: Any) -> list[Peer]:
    """
    The peers of a L{callback_tw.config.Config}: C{[peer_servers]} with the
    C{[peer NAME]} settings (0 meaning "no limit of its own").
    """
    peers = []
    for name, server in config.peerServers.items():
        settings = config.peers.get(name)
        if settings is None:
            peers.append(Peer(name, server.host, server.port))
            continue
        rules = PeerRules(
            allow=settings.allow,
            deny=settings.deny,
            maxCalls=settings.maxCalls or None,
            rate=settings.rate or None,
            maxDuration=settings.maxDuration or None,
        )
        peers.append(
            Peer(
                name,
                server.host,
                server.port,
                commands=bool(settings.commands),
                key=settings.key,
                rules=rules,
                responseDetails=settings.responseDetails,
            )
        )
    return peers


class PeerTable:
    """
    The peers by address, their policy, and who owns which callback id.

    @ivar rejected: datagrams refused before parsing, by C{(peer name, kind)}:
        the L{callback_tw.iif.signing.SignatureError} kinds, and C{"commands"}
        for a peer that may not send commands (for metrics and tests).
    """

    def __init__(
        self,
        peers: Iterable[Peer | tuple[str, int | None]],
        reactor: IReactorTime,
        signatureWindow: float = 30.0,
        ownerMemory: float = 3600.0,
        maxOwners: int = 100_000,
    ) -> None:
        """
        @param peers: L{Peer}s, or C{(ip literal, port or None)} for a peer with
            no rules and no key, named by its address (the several ports of one
            host are then one peer).
        @param reactor: the clock: token buckets, signature timestamps (its
            C{seconds()} is Unix time on a real reactor) and ownership expiry.
        @param signatureWindow: the largest C{|now - ts|} of a signed command.
        @param ownerMemory: seconds the owner of an ended callback is kept (the
            protocol's C{requestMemory}).
        @param maxOwners: the most ended callbacks whose owner is kept (the
            protocol's C{maxRemembered}).
        @raise ValueError: if a peer host is not an IP literal.
        """
        self._reactor = reactor
        self._window = signatureWindow
        self._ownerMemory = ownerMemory
        self._maxOwners = maxOwners
        # (host, port) -> peer, and host -> peer for peers without a port.
        self._byAddress: dict[tuple[str, int], Peer] = {}
        self._byHost: dict[str, Peer] = {}
        rules: dict[str, PeerRules] = {}
        for entry in peers:
            peer = self._peer(entry)
            rules.setdefault(peer.name, peer.rules)
            if peer.port is None:
                self._add(self._byHost, peer.host, peer)
            else:
                self._add(self._byAddress, (peer.host, peer.port), peer)
        self._policy = Policy(rules, reactor)
        # Ended callbacks whose owner is still kept: id -> end time, oldest first.
        self._ended: OrderedDict[str, float] = OrderedDict()
        self.rejected: Counter[tuple[str, str]] = Counter()

    @staticmethod
    def _peer(entry: Peer | tuple[str, int | None]) -> Peer:
        if isinstance(entry, Peer):
            host, peer = entry.host, entry
        else:
            host, port = entry
            peer = None
        try:
            host = normaliseHost(host)
        except ValueError:
            raise ValueError(f"peer host {host!r} is not an IP address") from None
        if peer is None:
            return Peer(host, host, port)
        return dataclasses.replace(peer, host=host)

    @staticmethod
    def _add(table: dict[Any, Peer], address: Any, peer: Peer) -> None:
        # Two names for one address: the one that may send commands wins (the
        # outbound SIP peer and an AS may share an address), else the first.
        known = table.get(address)
        if known is None or (peer.commands and not known.commands):
            table[address] = peer

    # -- who is it

    def identify(self, addr: tuple[Any, ...]) -> Peer | None:
        """
        The peer a datagram from C{addr} comes from (a peer configured with that
        port first, then one configured without a port), or L{None}.
        """
        try:
            host = normaliseHost(addr[0])
        except ValueError:
            return None
        peer = self._byAddress.get((host, addr[1]))
        return peer if peer is not None else self._byHost.get(host)

    # -- signatures

    def open(self, peer: Peer, datagram: bytes) -> bytes:
        """
        The command in a datagram from C{peer}: as it is for an unkeyed peer; for a
        keyed one, verified and without its C{ts} and C{sig}.

        @raise callback_tw.iif.signing.SignatureError: the datagram must not be
            acted upon (nor answered); it is counted in L{rejected}.
        """
        if peer.key is None:
            return datagram
        try:
            return verify(datagram, peer.key, self._reactor.seconds(), self._window)
        except SignatureError as e:
            self.rejected[(peer.name, e.kind)] += 1
            raise

    def seal(self, peer: Peer, data: bytes) -> bytes:
        """
        What to send to C{peer}: C{data}, signed when the peer has a key.
        """
        if peer.key is None:
            return data
        return sign(data, peer.key, self._reactor.seconds())

    def dropped(self, peer: Peer) -> None:
        """
        Count a datagram of a peer that may not send commands.
        """
        self.rejected[(peer.name, "commands")] += 1

    # -- policy and ownership

    def admit(self, peer: Peer, request: Request) -> Admission | Refusal:
        """
        Decide on a new REQUEST of C{peer} (ownership, numbers, duration,
        C{max_calls}, C{rate}); an admitted one holds a slot of the peer and
        belongs to it until it is forgotten.
        """
        self._expire()
        verdict = self._policy.admit(peer.name, request)
        if isinstance(verdict, Admission):
            self._ended.pop(request.callbackId, None)
        return verdict

    def effective(self, peer: Peer, request: Request) -> Request:
        """
        C{request} as it is run for C{peer}: C{duration=0} becomes the peer's
        C{max_duration} when it has one. Comparing effective requests makes a
        repeated REQUEST recognisable whether the original is kept as sent or
        as run.
        """
        cap = peer.rules.maxDuration
        if request.duration or cap is None:
            return request
        return dataclasses.replace(request, duration=cap)

    def check(self, peer: Peer, callbackId: str) -> Refusal | None:
        """
        L{None} if C{peer} may act on C{callbackId} (its own, or nobody's), else
        the refusal.
        """
        self._expire()
        return self._policy.check(peer.name, callbackId)

    def ended(self, callbackId: str) -> None:
        """
        The callback ended: free its C{max_calls} slot; its owner is kept as long
        as the protocol remembers the id.
        """
        self._policy.release(callbackId)
        if self._policy.owner(callbackId) is None:
            return
        self._ended.pop(callbackId, None)
        self._ended[callbackId] = self._reactor.seconds()
        self._expire()

    def refused(self, callbackId: str) -> None:
        """
        An admitted REQUEST was not started after all (the manager refused it):
        give back its slot and forget its owner, as the id is not known.
        """
        self._policy.forget(callbackId)

    def running(self, peer: Peer) -> int:
        """
        How many of C{peer}'s callbacks hold a C{max_calls} slot.
        """
        return self._policy.running(peer.name)

    def _expire(self) -> None:
        deadline = self._reactor.seconds() - self._ownerMemory
        while self._ended:
            callbackId, endedAt = next(iter(self._ended.items()))
            if endedAt > deadline and len(self._ended) <= self._maxOwners:
                break
            del self._ended[callbackId]
            self._policy.forget(callbackId)
