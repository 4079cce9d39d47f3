# -*- test-case-name: tests.test_sip_leg -*-
"""
What a call leg tells its owner, in this project's vocabulary: the leg's
states (L{LegState}), how it ended (L{LegEnd}), the owner's interface
(L{ILegListener}) and the failure of a re-INVITE (L{ReInviteFailed}).
L{callback_tw.sip.leg} turns sippy's events into these.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from sippy.SipReason import SipReason
from twisted.internet.defer import Deferred

if TYPE_CHECKING:
    from callback_tw.sip.dialogs import DialogState
    from callback_tw.sip.leg import Leg

__all__ = [
    "ILegListener",
    "LegEnd",
    "LegState",
    "NO_LISTENER",
    "ReInviteFailed",
    "sipReason",
]


class LegState(enum.StrEnum):
    """Where a leg is in its life; each value compares equal to its name."""

    NEW = "new"
    CALLING = "calling"
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"


@dataclass(frozen=True)
class LegEnd:
    """
    How a leg ended.

    @ivar code: the SIP status that describes the end: the failure response
        (486, 603, 404, 408...) for a leg that was never answered, 408 for
        no answer within the timeout, 487 for a leg we cancelled, 200 for a
        hang-up after the answer.
    @ivar reason: the reason phrase or a short description.
    @ivar byRemote: True when the far end (or the network) ended it, False
        when this server hung up.
    @ivar answered: whether the leg had been answered.
    """

    code: int
    reason: str
    byRemote: bool
    answered: bool


class _NoListener:
    """Where a detached leg's events go: nowhere."""

    def legRinging(self, leg: Any) -> None:
        pass

    def legAnswered(self, leg: Any, sdp: str) -> None:
        pass

    def legEnded(self, leg: Any, end: Any) -> None:
        pass

    def legReInvited(self, leg: Any, sdp: str) -> Deferred:
        d: Deferred = Deferred()
        d.errback(ReInviteFailed(481, "Call/Transaction Does Not Exist"))
        return d

    def legDialogChanged(self, leg: Any, state: Any) -> None:
        pass


#: where a detached leg's events go.
NO_LISTENER = _NoListener()


class ReInviteFailed(Exception):
    """A re-INVITE of ours was answered with a failure."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code = code
        self.reason = reason


class ILegListener(Protocol):
    """What a leg's owner (a callback) is told."""

    def legRinging(self, leg: Leg) -> None: ...

    def legAnswered(self, leg: Leg, sdp: str) -> None: ...

    def legEnded(self, leg: Leg, end: LegEnd) -> None: ...

    def legReInvited(self, leg: Leg, sdp: str) -> Deferred:
        """The far end sent a re-INVITE offer; fire with the answer SDP."""
        ...

    def legDialogChanged(self, leg: Leg, state: DialogState) -> None:
        """
        What a BYE or CANCEL of the leg would need has changed (INVITE
        sent, first tagged 1xx, answer, our CSeq or the remote target
        moved, end): C{state} is the new value, to keep for recovery after
        a crash. The "ended" state comes before C{legEnded}.
        """
        ...


def sipReason(code: int, text: str) -> SipReason:
    """An RFC 3326 Reason header body."""
    return SipReason(protocol="SIP", cause=code, reason=text)
