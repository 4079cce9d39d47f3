# -*- test-case-name: tests.test_sip_stack -*-
"""
sippy's SIP message trace (its C{global_config['_sip_logger']}), on
C{twisted.logger}. Checked against sippy 2.5.0: the transaction manager calls
C{write(*parts, **kwargs)} for every message received and sent.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

__all__ = ["SipTraceLogger"]


class SipTraceLogger:
    """
    Every SIP message to the log when C{enabled}; nothing otherwise.

    @ivar enabled: whether messages are logged.
    """

    _log = Logger(namespace="callback_tw.sip.trace")

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def write(self, *args: Any, **kwargs: Any) -> None:
        if self.enabled:
            # Not "message": Twisted's legacy log bridge owns that key and
            # the line would read "()".
            self._log.info("{sipMessage}", sipMessage="".join(str(a) for a in args))
