# -*- test-case-name: tests.test_sip_adapter -*-
"""
sippy's error printer, routed to C{twisted.logger}.

sippy catches exceptions in its callbacks and hands them to
C{sippy.Core.Exceptions.dump_exception}, which prints to stdout and carries
on: operators would not see them in the log, and trial would not fail a test
that raised one. Checked against sippy 2.5.0.
"""

from __future__ import annotations

import sys
from typing import Any

from sippy.Core import Exceptions as _sippyExceptions
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["dumpException", "routeSippyErrors"]

_log = Logger(namespace="callback_tw.sip")

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
    Replace C{dump_exception} in every loaded sippy module.

    sippy modules bind it with C{from ... import dump_exception}, so each
    module's global has to be replaced; the stack calls this after it has
    imported the modules it uses (calling it again is harmless).
    """
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "sippy" or name.startswith("sippy.")):
            continue
        if getattr(module, "dump_exception", None) is _originalDumpException:
            module.dump_exception = dumpException  # type: ignore[attr-defined]
