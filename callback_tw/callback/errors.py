"""
Errors the callback layer reports to the IIF side.

They live in their own module so that L{callback_tw.iif.protocol} can recognise a
refusal without importing the call machinery.
"""

from __future__ import annotations

__all__ = ["CallbackRefused"]


class CallbackRefused(Exception):
    """
    A callback was not started (too many calls, shutting down, no route, ...).

    The AS gets C{ACK: id=...;code=fail;}; the reason is only for the log.

    @ivar reason: a short human-readable reason.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
