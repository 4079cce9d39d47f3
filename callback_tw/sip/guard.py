# -*- test-case-name: tests.test_sip_security -*-
"""
Limits that keep the SIP side from being turned against others or against
itself: per-source request limits (in the manner of Kamailio's C{pike}),
per-key failure lock-outs (the registrar's digest attempts) and the
escaping of remote text before it reaches a log line. Log lines about remote
parties are rate-limited by L{callback_tw.ratelimit.LogLimiter}.

Everything here is plain Python on an injected clock (C{IReactorTime}); no
sippy, no sockets. Memory is bounded everywhere: each table keeps at most a
fixed number of keys and forgets the least recently seen first.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.logger import Logger

from callback_tw.ratelimit import LogLimiter

__all__ = [
    "FailureLimiter",
    "SCANNER_AGENTS",
    "SourceLimiter",
    "isScanner",
    "printable",
]

#: User-Agent fragments (lower case) of SIP scanners. A request carrying one
#: gets no answer at all: an answer only confirms that a SIP server is here.
SCANNER_AGENTS = (
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "sip-scan",
    "vaxsipuseragent",
    "sundayddr",
    "iwar",
    "sivus",
    "pplsip",
)

#: Sources (or users) remembered at once by each table.
MAX_KEYS = 10000


def isScanner(userAgent: str | None) -> bool:
    """Whether C{userAgent} names a known SIP scanner (L{SCANNER_AGENTS})."""
    if not userAgent:
        return False
    agent = userAgent.lower()
    return any(fragment in agent for fragment in SCANNER_AGENTS)


def printable(text: Any, limit: int = 120) -> str:
    """
    C{text} made safe for one log line: control characters, backslashes and
    anything outside printable ASCII escaped (so a remote party cannot
    start a line of its own or hide one), cut to C{limit} characters.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "backslashreplace")
    else:
        text = str(text)
    head = text[: limit * 4]
    out = []
    for char in head:
        code = ord(char)
        if char == "\\":
            out.append("\\\\")
        elif 32 <= code < 127:
            out.append(char)
        elif char == "\r":
            out.append("\\r")
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif code < 256:
            out.append(f"\\x{code:02x}")
        else:
            out.append(f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    escaped = "".join(out)
    if len(escaped) > limit or len(text) > len(head):
        return escaped[: limit - 3] + "..."
    return escaped


class _Bounded(OrderedDict):
    """A dict that forgets its least recently used key beyond C{maxKeys}."""

    def __init__(self, maxKeys: int) -> None:
        super().__init__()
        self.maxKeys = maxKeys

    def touch(self, key: Any, default: Any) -> Any:
        """The value of C{key} (C{default()} when new), now the most recent."""
        value = self.get(key)
        if value is None:
            value = default()
            self[key] = value
            while len(self) > self.maxKeys:
                self.popitem(last=False)
        else:
            self.move_to_end(key)
        return value


class SourceLimiter:
    """
    At most C{rate} out-of-dialog requests per second from one source
    address; a source that sends more is ignored for C{blockTime} seconds.

    Requests within our own dialogs never come here: a provider that floods
    us with garbage keeps its calls. Blocks are logged at most once per
    L{LogLimiter.interval} over all sources (one key), the line counting the
    blocks not logged since the previous one.

    @ivar rate: requests per second allowed from one source; 0: no limit.
    @ivar blockTime: seconds a source is ignored once over the limit.
    """

    def __init__(
        self, rate: int, blockTime: float, clock: Any, maxSources: int = MAX_KEYS
    ) -> None:
        self.rate = rate
        self.blockTime = blockTime
        self._clock = clock
        #: host -> [window start, requests in the window, blocked until]
        self._sources = _Bounded(maxSources)
        self._blockLines = LogLimiter(clock)

    _log = Logger()

    def __len__(self) -> int:
        return len(self._sources)

    def admit(self, host: str) -> bool:
        """
        Count one request from C{host}; whether to handle it. The request
        that goes over the limit is the first one refused, and starts the
        block.
        """
        if not self.rate:
            return True
        now = self._clock.seconds()
        state = self._sources.touch(host, lambda: [now, 0, 0.0])
        if now < state[2]:
            return False
        if now - state[0] >= 1.0:
            state[0], state[1] = now, 0
        state[1] += 1
        if state[1] > self.rate:
            state[2] = now + self.blockTime
            dropped = self._blockLines.allow(None)
            if dropped is not None:
                self._log.warn(
                    "SIP from {host} ignored for {seconds:g} s: more than"
                    " {rate} requests outside our calls in a second{dropped}",
                    host=host,
                    seconds=self.blockTime,
                    rate=self.rate,
                    dropped=f" (+{dropped} more blocks not logged)" if dropped else "",
                )
            return False
        return True

    def blocked(self, host: str) -> bool:
        """Whether C{host} is being ignored now (counts nothing)."""
        state = self._sources.get(host)
        return state is not None and self._clock.seconds() < state[2]


class FailureLimiter:
    """
    Locks a key (a user, a source address) out for C{lockTime} seconds after
    C{maxFailures} failures within C{window} seconds.
    """

    def __init__(
        self,
        clock: Any,
        maxFailures: int = 5,
        window: float = 60.0,
        lockTime: float = 300.0,
        maxKeys: int = MAX_KEYS,
    ) -> None:
        self.maxFailures = maxFailures
        self.window = window
        self.lockTime = lockTime
        self._clock = clock
        #: key -> {"times": recent failures, "until": end of the lock-out}
        self._keys = _Bounded(maxKeys)

    def failed(self, key: str) -> bool:
        """Count one failure of C{key}; whether this one locked it."""
        now = self._clock.seconds()
        state = self._keys.touch(key, lambda: {"times": [], "until": 0.0})
        state["times"] = [t for t in state["times"] if now - t < self.window]
        state["times"].append(now)
        if len(state["times"]) >= self.maxFailures and now >= state["until"]:
            state["until"] = now + self.lockTime
            state["times"] = []
            return True
        return False

    def locked(self, key: str) -> bool:
        """Whether C{key} is locked out now."""
        state = self._keys.get(key)
        return state is not None and self._clock.seconds() < state["until"]
