# -*- test-case-name: tests.test_ratelimit -*-
"""
Rate limits for log lines about remote parties.

Whoever can send us datagrams can make us log: a flood of bad SIP messages, of
datagrams from strangers or of refused commands must cost a few lines per interval,
not one line per event, or the disk (and the operator reading it) is the victim.
L{LogLimiter} is the one limiter for every such line (SIP and IIF alike); each line
it lets through tells how many events it stands for.

A leaf module: plain Python on an injected clock (C{IReactorTime}), nothing of ours
imported, so every rule here is tested with L{twisted.internet.task.Clock}.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel

__all__ = ["LogLimiter", "LogTicket", "MAX_KEYS"]

#: Keys tracked individually at once by default.
MAX_KEYS = 10000


@dataclass(frozen=True)
class LogTicket:
    """
    Permission to write one log line.

    @ivar shared: the key is not tracked individually (every tracked key had a line
        within the interval), and this line stands for all such keys.
    @ivar suppressed: events not logged since the previous line of the same key (or
        of the shared line), plus those held back by the cap on lines over all keys,
        to be reported in this one.
    """

    shared: bool
    suppressed: int


class LogLimiter:
    """
    At most one log line per key (a source, a peer and kind of refusal) per
    C{interval} seconds, at most C{burst} lines per interval over all keys, memory
    bounded by C{maxKeys}; every line counts the events it stands for.

    Keys are tracked individually up to C{maxKeys} at a time, ordered by their last
    line; the key with the oldest line is forgotten to make room once its interval is
    over (a key kept longer keeps its suppressed count for its next line). While every
    tracked key is within its interval, all other keys share one line per interval, so
    a flood from many (maybe spoofed) sources gives at most C{maxKeys + 1} lines per
    interval even without C{burst}. C{burst} caps the lines of one interval (a window
    opened by the first line after the previous one closed) over all keys, shared line
    included; the events it holds back are told in the next line written, whichever
    key it is about.

    @ivar interval: seconds between two lines of one key.
    @ivar burst: lines per interval over all keys; L{None}: only the C{maxKeys + 1}
        bound.
    @ivar maxKeys: keys tracked individually at once.
    @ivar suppressedTotal: events not logged since this object was made (for metrics).
    """

    def __init__(
        self,
        reactor: IReactorTime,
        *,
        interval: float = 10.0,
        maxKeys: int = MAX_KEYS,
        burst: int | None = 20,
    ) -> None:
        """
        @param reactor: the clock.
        @param interval: see L{interval}.
        @param maxKeys: see L{maxKeys} (>= 0; 0: every key shares one line).
        @param burst: see L{burst} (>= 1, or L{None}).
        @raise ValueError: if C{maxKeys} or C{burst} is out of range.
        """
        if maxKeys < 0:
            raise ValueError(f"maxKeys must be >= 0, not {maxKeys}")
        if burst is not None and burst < 1:
            raise ValueError(f"burst must be >= 1 or None, not {burst}")
        self.interval = interval
        self.maxKeys = maxKeys
        self.burst = burst
        self._reactor = reactor
        # key -> [time of its last line, events suppressed since]; oldest line first.
        self._keys: OrderedDict[Hashable, list[float]] = OrderedDict()
        self._sharedLastLine: float | None = None
        self._sharedSuppressed = 0
        self._windowStart = float("-inf")
        self._windowLines = 0
        # Events held back by the burst cap, told with the next line of any key.
        self._cappedSuppressed = 0
        self.suppressedTotal = 0

    def ticket(self, key: Hashable) -> LogTicket | None:
        """
        Count one event of C{key}.

        @return: a L{LogTicket} if a line should be written now, else L{None} (the
            event is counted for a later line).
        """
        now = self._reactor.seconds()
        state = self._keys.get(key)
        if state is not None and now - state[0] < self.interval:
            state[1] += 1
            self.suppressedTotal += 1
            return None
        shared = False
        if state is None:
            self._makeRoom(now)
            shared = len(self._keys) >= self.maxKeys
            if shared and not self._sharedDue(now):
                self._sharedSuppressed += 1
                self.suppressedTotal += 1
                return None
        if not self._windowAllows(now):
            self._cappedSuppressed += 1
            self.suppressedTotal += 1
            return None
        capped, self._cappedSuppressed = self._cappedSuppressed, 0
        if shared:
            suppressed, self._sharedSuppressed = self._sharedSuppressed, 0
            self._sharedLastLine = now
        elif state is None:
            suppressed = 0
            self._keys[key] = [now, 0]
        else:
            suppressed = int(state[1])
            state[:] = [now, 0]
            self._keys.move_to_end(key)
        return LogTicket(shared, suppressed + capped)

    def allow(self, key: Hashable) -> int | None:
        """
        Count one event of C{key}, for a caller that words its own note of the
        events not logged.

        @return: L{None} when no line may be written now, else the number of events
            the line must say were not logged (see L{LogTicket.suppressed}).
        """
        ticket = self.ticket(key)
        return None if ticket is None else ticket.suppressed

    def emit(
        self,
        log: Logger,
        key: Hashable,
        format: str,
        level: LogLevel = LogLevel.warn,
        **fields: Any,
    ) -> bool:
        """
        Count one event of C{key} and log C{format} if its ticket allows.

        The event carries the fields C{suppressed} and C{shared} (see L{LogTicket});
        the text gets a note of the suppressed count when there is one, and a note
        that it stands for many keys when it does.

        @return: whether a line was written.
        """
        ticket = self.ticket(key)
        if ticket is None:
            return False
        if ticket.shared:
            format += " (one line for every key beyond {maxKeys} tracked ones)"
        if ticket.suppressed:
            format += " ({suppressed} similar events not logged)"
        log.emit(
            level,
            format,
            suppressed=ticket.suppressed,
            shared=ticket.shared,
            maxKeys=self.maxKeys,
            **fields,
        )
        return True

    def _makeRoom(self, now: float) -> None:
        """
        Forget the key with the oldest line if the table is full and its interval
        is over. Only when needed: a key kept longer keeps its suppressed count.
        """
        if self._keys and len(self._keys) >= self.maxKeys:
            oldest = next(iter(self._keys.values()))
            if now - oldest[0] >= self.interval:
                self._keys.popitem(last=False)

    def _sharedDue(self, now: float) -> bool:
        """Whether the shared line's interval is over (or it never had a line)."""
        last = self._sharedLastLine
        return last is None or now - last >= self.interval

    def _windowAllows(self, now: float) -> bool:
        """Take one line of the current burst window if there is one left."""
        if self.burst is None:
            return True
        if now - self._windowStart >= self.interval:
            self._windowStart, self._windowLines = now, 0
        if self._windowLines >= self.burst:
            return False
        self._windowLines += 1
        return True
