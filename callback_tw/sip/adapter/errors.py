# -*- test-case-name: tests.test_sip_adapter -*-
"""
sippy's error printer and its C{print}s, routed to C{twisted.logger}.

sippy catches exceptions in its callbacks and hands them to
C{sippy.Core.Exceptions.dump_exception}, which prints to stdout and carries
on: operators would not see them in the log, and trial would not fail a test
that raised one. sippy also C{print}s a few remarks, some with text a remote
party sent; under twistd stdout becomes the log, one event per line, so such
text could forge log lines. Each C{print} becomes one escaped, short,
rate-limited warning instead. Checked against sippy 2.5.0.
"""

from __future__ import annotations

import sys
from time import monotonic
from typing import Any

from sippy.Core import Exceptions as _sippyExceptions
from twisted.logger import Logger
from twisted.python.failure import Failure

from callback_tw.ratelimit import LogLimiter
from callback_tw.sip.adapter.dispatcher import ED2
from callback_tw.sip.guard import printable

__all__ = ["dumpException", "routeSippyErrors", "sippyPrint"]

_log = Logger(namespace="callback_tw.sip")


class _DispatcherClock:
    """The time of the reactor sippy runs on (tests swap it for a Clock)."""

    def seconds(self) -> float:
        reactor = ED2.reactor
        return monotonic() if reactor is None else reactor.seconds()


#: sippy's prints are one stream: a few lines per interval at most.
_printLimiter = LogLimiter(_DispatcherClock(), interval=10.0, burst=5)


def sippyPrint(*args: Any, **kwargs: Any) -> None:
    """
    Stand-in for C{print} in sippy's modules: one warning, escaped and cut
    short, at most one per interval (the number dropped is told).
    """
    dropped = _printLimiter.allow("print")
    if dropped is None:
        return
    text = " ".join(str(a) for a in args)
    _log.warn(
        "sippy: {text}{dropped}",
        text=printable(text, 160),
        dropped=f" (+{dropped} not logged)" if dropped else "",
    )


_originalDumpException = _sippyExceptions.dump_exception


def dumpException(msg: str, f: Any = None, extra: Any = None) -> None:
    """
    Stand-in for sippy's C{dump_exception}: log the current exception where
    trial and operators see it.
    """
    _log.failure(
        "sippy: {msg}{extra}",
        Failure(),
        msg=msg,
        extra="" if extra is None else f"\n{extra}",
    )


def routeSippyErrors() -> None:
    """
    Replace C{dump_exception} and C{print} in every loaded sippy module.

    sippy modules bind C{dump_exception} with C{from ... import
    dump_exception}, so each module's global has to be replaced; a module
    global named C{print} comes before the builtin. The stack calls this
    after it has imported the modules it uses (calling it again is
    harmless).
    """
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "sippy" or name.startswith("sippy.")):
            continue
        if getattr(module, "dump_exception", None) is _originalDumpException:
            module.dump_exception = dumpException  # type: ignore[attr-defined]
        module.print = sippyPrint  # type: ignore[attr-defined]
