"""
Log observers for twistd's C{--logger}, so that a benchmark can measure what
the server's logging costs without changing the server: C{bench_callbacks.py
--log-level info} runs C{twistd --logger=bench.benchlog.info ...}.

Each writes what twistd's C{-l -} writes (the same text format, to stdout,
where the benchmark waits for C{callback_tw ready}), but only events at the
level named and above; the ready line is always let through.  Events below
the level are still built by the logger and published: what is saved is the
formatting and the write.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    textFileLogObserver,
)


def _ready(event: dict[str, Any]) -> PredicateResult:
    text = event.get("log_format") or ""
    return PredicateResult.yes if "callback_tw ready" in text else PredicateResult.maybe


def _observer(level: LogLevel) -> Any:
    return FilteringLogObserver(
        textFileLogObserver(sys.stdout),
        [_ready, LogLevelFilterPredicate(defaultLogLevel=level)],
    )


def debug() -> Any:
    return _observer(LogLevel.debug)


def info() -> Any:
    return _observer(LogLevel.info)


def warn() -> Any:
    return _observer(LogLevel.warn)
