# -*- test-case-name: tests.test_policy -*-
"""
Per-peer rules: which numbers a peer may have dialled, how many callbacks it may run at
once and start per second, how long they may last, and which callbacks are its own.

A callback server that anyone can make dial is a toll-fraud machine; these rules bound
what one AS (or whoever manages to speak as it) can cost. Each refusal is an ordinary
value, L{Refusal}, naming the rule, so the IIF protocol answers C{code=fail} and writes
one log line without any exception handling; exceptions are kept for configuration
errors.

Everything here is pure and deterministic: no I/O, and time comes from an injected
L{IReactorTime}, so every rule is tested with L{twisted.internet.task.Clock}.
"""

from __future__ import annotations

import enum
import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.interfaces import IReactorTime

__all__ = [
    "Admission",
    "PeerRules",
    "Policy",
    "Refusal",
    "Rule",
    "TokenBucket",
    "parsePatterns",
]


class Rule(enum.StrEnum):
    """
    The rule behind a refusal; the value is the configuration key's name.
    """

    ALLOW = "allow"
    DENY = "deny"
    MAX_DURATION = "max_duration"
    MAX_CALLS = "max_calls"
    RATE = "rate"
    OWNER = "owner"


@dataclass(frozen=True)
class Refusal:
    """
    Why a peer's command is refused.

    @ivar rule: the rule that refused it.
    @ivar detail: one short sentence for the log; it quotes only values the IIF codec
        has already validated (users, durations, ids), never raw datagram bytes.
    """

    rule: Rule
    detail: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.detail}"


@dataclass(frozen=True)
class Admission:
    """
    A REQUEST accepted by the policy; its slot is held until L{Policy.release}.

    @ivar duration: the duration to enforce, in seconds: the request's, or the peer's
        C{max_duration} when the request asked for 0 (no limit of its own); 0 still
        means "the server's cap" for a peer without C{max_duration}.
    """

    duration: int


class _Command(Protocol):
    """
    What the policy reads of a REQUEST (L{callback_tw.iif.message.Request} fits).
    """

    @property
    def callbackId(self) -> str: ...

    @property
    def user1(self) -> str: ...

    @property
    def user2(self) -> str: ...

    @property
    def duration(self) -> int: ...


def parsePatterns(text: str) -> tuple[str, ...]:
    """
    Split a configuration value like C{"+49*, 0[1-9]*"} into patterns.

    @param text: comma-separated shell-style patterns (C{*}, C{?}, C{[...]}); blanks
        around each pattern are ignored; an empty or blank value means no patterns.
    @raise ValueError: for an empty item (C{"a,,b"} or a trailing comma), which is
        more likely a typo than an intent.
    """
    if not text.strip():
        return ()
    patterns = tuple(p.strip() for p in text.split(","))
    if "" in patterns:
        raise ValueError(f"empty pattern in {text!r}")
    return patterns


def _firstMatch(user: str, patterns: Iterable[str]) -> str | None:
    for pattern in patterns:
        # fnmatchcase: no case folding and no os.path.normcase, so the answer is the
        # same on every platform and "A*" does not match "a1".
        if fnmatch.fnmatchcase(user, pattern):
            return pattern
    return None


@dataclass(frozen=True)
class PeerRules:
    """
    The static rules of one peer (its C{[peer NAME]} section).

    @ivar allow: patterns every user1 and user2 must match; empty means any number.
    @ivar deny: patterns no user1 or user2 may match; deny wins over allow.
    @ivar maxCalls: callbacks of this peer running at once, or L{None} for no limit.
    @ivar rate: new REQUESTs per second (token bucket with a burst of C{rate}, at
        least 1), or L{None} for no limit.
    @ivar maxDuration: the longest duration this peer may ask for, or L{None} for the
        server's cap only.
    """

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    maxCalls: int | None = None
    rate: float | None = None
    maxDuration: int | None = None

    def __post_init__(self) -> None:
        if self.maxCalls is not None and self.maxCalls < 0:
            raise ValueError(f"max_calls must be >= 0, not {self.maxCalls}")
        if self.rate is not None and not self.rate > 0:
            raise ValueError(f"rate must be > 0, not {self.rate}")
        if self.maxDuration is not None and self.maxDuration < 1:
            raise ValueError(f"max_duration must be >= 1, not {self.maxDuration}")

    def checkNumbers(self, user1: str, user2: str) -> Refusal | None:
        """
        Check both called parties against C{deny}, then against C{allow}.

        @return: L{None} if both may be dialled, else the first refusal (a deny match
            is reported before a missing allow match).
        """
        for name, user in (("user1", user1), ("user2", user2)):
            pattern = _firstMatch(user, self.deny)
            if pattern is not None:
                return Refusal(
                    Rule.DENY, f"{name} {user!r} matches deny pattern {pattern!r}"
                )
        if self.allow:
            for name, user in (("user1", user1), ("user2", user2)):
                if _firstMatch(user, self.allow) is None:
                    return Refusal(
                        Rule.ALLOW, f"{name} {user!r} matches no allow pattern"
                    )
        return None

    def checkDuration(self, duration: int) -> int | Refusal:
        """
        Apply C{max_duration}.

        A duration above the cap is refused rather than shortened, as the codec does
        for the server's cap: an AS must not get a shorter call than it asked for
        without being told.

        @return: the duration to enforce (C{0} becomes the cap) or a refusal.
        """
        if self.maxDuration is None:
            return duration
        if duration > self.maxDuration:
            return Refusal(
                Rule.MAX_DURATION,
                f"duration {duration} exceeds max_duration {self.maxDuration}",
            )
        return duration or self.maxDuration


class TokenBucket:
    """
    A token bucket: C{rate} tokens per second, holding at most C{burst}.

    It starts full, so a peer that was quiet may send C{burst} commands at once, and
    then one every C{1 / rate} seconds.
    """

    # Refills are computed in floating point (0.3 s * 10/s is 3.0000000000000004 but
    # 0.7 s * 10/s is 6.999999999999999); this tolerance keeps a token that is due
    # from being refused by rounding.
    _EPSILON = 1e-9

    def __init__(self, rate: float, burst: float, reactor: IReactorTime) -> None:
        """
        @param rate: tokens added per second (> 0).
        @param burst: capacity (>= 1, or no command could ever pass).
        @param reactor: the clock.
        """
        if not rate > 0:
            raise ValueError(f"rate must be > 0, not {rate}")
        if not burst >= 1:
            raise ValueError(f"burst must be >= 1, not {burst}")
        self._rate = rate
        self._burst = float(burst)
        self._reactor = reactor
        self._tokens = float(burst)
        self._last = reactor.seconds()

    @property
    def tokens(self) -> float:
        """
        The tokens available now.
        """
        self._refill()
        return self._tokens

    def take(self) -> bool:
        """
        Take one token if there is one.

        @return: whether a token was taken (the command may proceed).
        """
        self._refill()
        if self._tokens + self._EPSILON < 1:
            return False
        self._tokens = max(self._tokens - 1, 0.0)
        return True

    def _refill(self) -> None:
        now = self._reactor.seconds()
        # A clock that steps back adds nothing and does not block future refills.
        elapsed = max(now - self._last, 0.0)
        self._last = now
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)


class _Peer:
    """
    One peer's rules and the state they need.

    @ivar active: ids of this peer's callbacks that hold a C{max_calls} slot.
    """

    __slots__ = ("rules", "bucket", "active")

    def __init__(self, rules: PeerRules, reactor: IReactorTime) -> None:
        self.rules = rules
        self.bucket = (
            None
            if rules.rate is None
            else TokenBucket(rules.rate, max(rules.rate, 1.0), reactor)
        )
        self.active: set[str] = set()


class Policy:
    """
    The rules of every peer, with their state: running callbacks, token buckets and
    the owner of each callback id.

    The IIF protocol calls L{admit} for each new REQUEST, L{release} when a callback
    ends, L{check} before it cancels an id or answers a repeated REQUEST from memory,
    and L{forget} when it forgets an id; ownership therefore lives exactly as long as
    the protocol's own memory of the id, which bounds it.
    """

    def __init__(
        self,
        rules: Mapping[str, PeerRules],
        reactor: IReactorTime,
        default: PeerRules | None = None,
    ) -> None:
        """
        @param rules: peer name -> its rules.
        @param reactor: the clock of the token buckets.
        @param default: the rules of a peer without its own entry (default: any
            number, no limits).
        """
        self._reactor = reactor
        self._default = default if default is not None else PeerRules()
        self._peers = {name: _Peer(r, reactor) for name, r in rules.items()}
        # callback id -> name of the peer that created it.
        self._owners: dict[str, str] = {}
        # callback id -> the peer whose slot it holds.
        self._slots: dict[str, _Peer] = {}

    def rulesFor(self, peer: str) -> PeerRules:
        """
        The rules that apply to C{peer}.
        """
        state = self._peers.get(peer)
        return self._default if state is None else state.rules

    def _peer(self, peer: str) -> _Peer:
        # A peer without rules of its own gets state on first use; peers are the
        # configured ones (the protocol drops everyone else), so this stays bounded.
        state = self._peers.get(peer)
        if state is None:
            state = self._peers[peer] = _Peer(self._default, self._reactor)
        return state

    def admit(self, peer: str, request: _Command) -> Admission | Refusal:
        """
        Decide on a new REQUEST from C{peer}; on admission hold one of the peer's
        C{max_calls} slots for it and record C{peer} as the owner of its id.

        The checks run from the cheapest and most definite to the ones that consume
        something: ownership, numbers, duration, C{max_calls}, then C{rate}, so a
        refused REQUEST never costs a token or a slot and the AS learns the real
        reason (a denied number stays "deny" under load).
        """
        refusal = self.check(peer, request.callbackId)
        if refusal is not None:
            return refusal
        state = self._peer(peer)
        rules = state.rules
        refusal = rules.checkNumbers(request.user1, request.user2)
        if refusal is not None:
            return refusal
        duration = rules.checkDuration(request.duration)
        if isinstance(duration, Refusal):
            return duration
        if (
            rules.maxCalls is not None
            and request.callbackId not in state.active
            and len(state.active) >= rules.maxCalls
        ):
            return Refusal(
                Rule.MAX_CALLS,
                f"{len(state.active)} callbacks running, max_calls"
                f" {rules.maxCalls}",
            )
        if state.bucket is not None and not state.bucket.take():
            return Refusal(Rule.RATE, f"more than {rules.rate:g} REQUESTs per second")
        state.active.add(request.callbackId)
        self._slots[request.callbackId] = state
        self._owners[request.callbackId] = peer
        return Admission(duration)

    def release(self, callbackId: str) -> None:
        """
        The callback C{callbackId} ended: free its C{max_calls} slot.

        Releasing an id twice, or one that holds no slot, does nothing, so the
        protocol may release on every path that ends a callback. The owner stays
        recorded until L{forget}.
        """
        state = self._slots.pop(callbackId, None)
        if state is not None:
            state.active.discard(callbackId)

    def running(self, peer: str) -> int:
        """
        How many of C{peer}'s callbacks hold a slot now.
        """
        state = self._peers.get(peer)
        return 0 if state is None else len(state.active)

    def owner(self, callbackId: str) -> str | None:
        """
        The peer that created C{callbackId}, or L{None} if no peer holds it.
        """
        return self._owners.get(callbackId)

    def check(self, peer: str, callbackId: str) -> Refusal | None:
        """
        May C{peer} act on C{callbackId} (CANCEL it, get its ACK or RESPONSE again)?

        @return: L{None} if the id is C{peer}'s own or belongs to nobody (the protocol
            then answers as for any unknown id), else a refusal: another peer asking
            about that id gets C{code=fail} and learns nothing about it.
        """
        owner = self._owners.get(callbackId)
        if owner is None or owner == peer:
            return None
        return Refusal(Rule.OWNER, f"callback {callbackId!r} belongs to another peer")

    def forget(self, callbackId: str) -> None:
        """
        Forget the owner of C{callbackId} (the protocol forgot the id), releasing its
        slot too if it still holds one.
        """
        self.release(callbackId)
        self._owners.pop(callbackId, None)
