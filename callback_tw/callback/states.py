"""
The states of one callback (L{callback_tw.callback.call} draws the
transitions), in a module of their own so that the call and its join can
both name them.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["CallState"]


class CallState(StrEnum):
    """Where a callback is; the module doc draws the transitions."""

    NEW = "new"
    CALLING1 = "calling1"
    CALLING2 = "calling2"
    JOINING = "joining"
    JOINED = "joined"
    ENDED = "ended"
