# -*- test-case-name: tests.test_callback_call -*-
"""
The join of one callback (RFC 3725, offers in re-INVITEs): user1 is offered
user2's media, user2 then user1's answer, and user1 once more if user2's
answer moved its media; each re-INVITE bounded by C{join_timeout}.

L{Joining} is a mixin of L{callback_tw.callback.call.CallbackCall}, kept in
its own module so that each stays readable: it uses the call's C{state},
C{_legs}, C{_sessions}, C{_reactor}, C{_joinTimeout}, C{_joinCall},
C{_joinedAt}, C{_log}, C{_stopMedia}, C{_closeMedia}, C{_release},
C{_record} and C{callbackId}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, FirstError

from callback_tw.callback.states import CallState
from callback_tw.sip.leg import ReInviteFailed
from callback_tw.sip.sdp import SdpError, parseAudio
from callback_tw.timers import cancelDelayed

__all__ = ["Joining"]


class Joining:
    """Connects the two parties once both have heard their announcements."""

    def _join(self) -> Deferred | None:
        """
        Connect the media of the two parties.

        Both legs are established with our SDP. user1 gets a re-INVITE
        offering user2's media (user2's answer, under leg 1's origin); user1's
        answer is then offered to user2 the same way. Every re-INVITE carries
        an offer, which plain UAs (SIPp, softphones) handle; an offerless
        re-INVITE (RFC 3725 flow I) needs the answer in the ACK, which many
        do not support. If user2's answer moves its media, user1 is updated
        once more.
        """
        if self.state != CallState.JOINING:
            return None
        self._stopMedia()
        leg2 = self._legs["leg2"]
        offer2 = leg2.remoteSdp or ""
        self._log.debug(
            "callback {id} joining: re-INVITE user1 with user2's media",
            id=self.callbackId,
        )
        d = self._joinReInvite("leg1", offer2)

        def user1Answered(answer1: str) -> Deferred | None:
            if self.state != CallState.JOINING:
                return None
            self._log.debug(
                "callback {id} joining: re-INVITE user2 with user1's media",
                id=self.callbackId,
            )
            return self._joinReInvite("leg2", answer1)

        def user2Answered(answer2: str | None) -> Deferred | None:
            if self.state != CallState.JOINING or answer2 is None:
                return None
            if _mediaMoved(offer2, answer2):
                self._log.debug(
                    "callback {id} user2 moved its media: updating user1",
                    id=self.callbackId,
                )
                return self._joinReInvite("leg1", answer2).addCallback(
                    lambda _: answer2
                )
            return answer2

        def joined(result: Any) -> None:
            if self.state != CallState.JOINING or result is None:
                return
            self.state = CallState.JOINED
            now = self._reactor.seconds()
            self._joinedAt = now
            self._record(state=str(self.state), joinedAt=now, checkpointAt=now)
            self._closeMedia()
            self._log.debug("callback {id} joined: user1 <-> user2", id=self.callbackId)

        d.addCallback(user1Answered)
        d.addCallback(user2Answered)
        d.addCallback(joined)
        d.addErrback(self._joinFailed)
        return d

    def _joinReInvite(self, name: str, offer: str) -> Deferred:
        """
        Re-INVITE one leg with the other party's media, under C{join_timeout}.
        """
        cancelDelayed(self._joinCall)
        self._joinCall = self._reactor.callLater(
            self._joinTimeout, self._joinTimedOut, name
        )

        def answered(result: Any) -> Any:
            cancelDelayed(self._joinCall)
            self._joinCall = None
            return result

        d = self._legs[name].reInvite(self._sessions[name].relay(offer))
        return d.addBoth(answered)

    def _joinTimedOut(self, name: str) -> None:
        self._joinCall = None
        user = "user1" if name == "leg1" else "user2"
        self._release(
            f"join failed: {user} did not answer the re-INVITE within"
            f" {self._joinTimeout:g} s",
            reason=(408, "Request Timeout"),
            both=True,
        )

    def _joinFailed(self, failure: Any) -> None:
        if self.state == CallState.ENDED:
            return
        if failure.check(FirstError):
            failure = failure.value.subFailure
        if failure.check(ReInviteFailed):
            code, text = failure.value.code, failure.value.reason
            self._release(f"join failed: {code} {text}", reason=(code, text), both=True)
        else:
            self._log.failure("callback {id}: join failed", failure, id=self.callbackId)
            self._release(
                "join failed: internal error",
                reason=(500, "Server Internal Error"),
                both=True,
            )


def _mediaMoved(before: str, after: str) -> bool:
    """Whether an answer names another address or port than the offer did."""
    try:
        a, b = parseAudio(before), parseAudio(after)
    except SdpError:
        return False
    return (a.address, a.port) != (b.address, b.port)
