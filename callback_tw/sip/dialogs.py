# -*- test-case-name: tests.test_sip_dialogs -*-
"""
A leg's dialog as a plain value (L{DialogState}), and how to end such a
dialog after a restart, from that value alone (L{releaseDialog}).

A crash leaves the far ends of our calls connected or ringing. The leg
pushes its L{DialogState} to its owner whenever it changes
(C{ILegListener.legDialogChanged}); the owner stores it; at the next start
L{releaseDialog} sends, on a stack that never knew the dialog, the BYE or
CANCEL the dead process owed.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from callback_tw.sip.adapter import release
from callback_tw.sip.guard import printable
from callback_tw.timers import cancelDelayed

__all__ = ["DialogStage", "DialogState", "releaseDialog"]

#: the User-Agent of every request we send.
USER_AGENT = "callback_tw"

#: the status L{releaseDialog} fires with when the far end never answered.
TIMED_OUT = 408


class DialogStage(enum.StrEnum):
    """How far a leg's dialog got; each value compares equal to its name."""

    TRYING = "trying"
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"


@dataclass(frozen=True)
class DialogState:
    """
    What a BYE or a CANCEL of one leg needs, as the store keeps it (the
    fields of C{callback_tw.store.records.LegDialog} but its callback id
    and leg number).

    @ivar callId: the dialog's Call-ID.
    @ivar localTag: our From tag.
    @ivar remoteTag: the far end's To tag, L{None} before a tagged response.
    @ivar localURI: our From URI; C{remoteURI} the To URI.
    @ivar remoteTarget: the Request-URI of our next request: the INVITE's
        until the answer (a CANCEL repeats it), then the far end's Contact
        (a BYE's).
    @ivar routeSet: the dialog's route set (Route header values), in the
        order to use; empty before the answer.
    @ivar nextCSeq: the CSeq number of our next in-dialog request.
    @ivar inviteBranch: the Via branch of our INVITE (a CANCEL repeats it).
    @ivar inviteCSeq: the INVITE's CSeq number (a CANCEL repeats it).
    @ivar destination: C{"host:port"} our requests are sent to: the
        outbound proxy, the first route or the target.
    @ivar viaProvider: True when the leg goes through the external line's
        provider (its outbound proxy).
    @ivar state: a L{DialogStage} (or its plain string, as stored).
    """

    callId: str
    localTag: str
    remoteTag: str | None
    localURI: str
    remoteURI: str
    remoteTarget: str | None
    routeSet: tuple[str, ...]
    nextCSeq: int
    inviteBranch: str
    inviteCSeq: int
    destination: str
    viaProvider: bool
    state: str


def releaseDialog(
    stack: Any,
    state: DialogState,
    reason: tuple[int, str] = (500, "server restarted"),
    timeout: float = 8.0,
) -> Deferred:
    """
    End, from C{stack} (a running L{callback_tw.sip.stack.SipStack} that
    never knew it), the dialog C{state} describes: an answered one with a
    BYE, a trying or ringing one with a CANCEL (its INVITE's 487 is ACKed;
    a 2xx that raced the CANCEL is ACKed and gets a BYE). Requests carry
    C{Reason: SIP;cause=<code>;text="<text>"} and are retransmitted as usual.

    @param reason: the (cause, text) of the Reason header.
    @param timeout: seconds after which the far end counts as gone.
    @return: a Deferred that never fails, firing with the final status
        that ended it (200 for a BYE, 487 for a cancelled INVITE; 481 or
        L{TIMED_OUT} when the far end no longer knows the dialog or never
        answers; 0 when there was nothing to end): any result means done.
    """
    return _Release(stack, state, reason, timeout).start()


class _Release:
    """One L{releaseDialog}: the requests, the time limit, one log line."""

    _log = Logger()

    def __init__(
        self,
        stack: Any,
        state: DialogState,
        reason: tuple[int, str],
        timeout: float,
    ) -> None:
        self._stack = stack
        self._reactor = stack.reactor
        self._state = state
        self._reason = reason
        self._timeout = timeout
        self._deferred: Deferred = Deferred()
        self._transactions: list[Any] = []
        self._laterCalls: list[Any] = []
        self._timeoutCall: Any = None
        self._how = "BYE" if state.state == DialogStage.ANSWERED else "CANCEL"
        self._done = False

    def start(self) -> Deferred:
        state = self._state
        if state.state == DialogStage.ENDED:
            self._how = "nothing"
            self._finish(0, "already ended")
            return self._deferred
        tm = self._stack.transactionManager
        if tm is None:
            self._finish(503, "SIP stack not running")
            return self._deferred
        self._timeoutCall = self._reactor.callLater(self._timeout, self._timedOut)
        try:
            if self._how == "BYE":
                self._transactions += release.sendBye(
                    tm, state, self._reason, USER_AGENT, self._later(self._byeFinal)
                )
            else:
                self._transactions += release.sendCancel(
                    tm,
                    state,
                    self._reason,
                    USER_AGENT,
                    self._later(self._inviteFinal),
                    self._later(self._cancelFinal),
                )
        except Exception as e:
            self._notSent(e)
        return self._deferred

    def _later(self, handler: Any) -> Any:
        """
        sippy calls back from inside its message handling, before it sends
        the ACK of an INVITE's final response: act on a later turn.
        """

        def onResponse(code: int, reason: str, resp: Any) -> None:
            if not self._done:
                self._laterCalls.append(
                    self._reactor.callLater(0, handler, code, reason, resp)
                )

        return onResponse

    def _byeFinal(self, code: int, reason: str, resp: Any) -> None:
        self._finish(code, reason)

    def _cancelFinal(self, code: int, reason: str, resp: Any) -> None:
        # 2xx: the far end is ending the INVITE; wait for its final response.
        if code >= 300:
            self._finish(code, f"{reason} to the CANCEL")

    def _inviteFinal(self, code: int, reason: str, resp: Any) -> None:
        if code >= 300:
            self._finish(code, reason)
            return
        # A 2xx raced the CANCEL: sippy ACKed it; now the dialog needs a BYE.
        self._how = "CANCEL, then BYE (answered meanwhile)"
        self._state = replace(
            self._state,
            state=DialogStage.ANSWERED,
            **release.answeredFields(resp, self._state),
        )
        tm = self._stack.transactionManager
        if tm is None:
            self._finish(503, "SIP stack not running")
            return
        try:
            self._transactions += release.sendBye(
                tm, self._state, self._reason, USER_AGENT, self._later(self._byeFinal)
            )
        except Exception as e:
            self._notSent(e)

    def _notSent(self, error: Exception) -> None:
        """
        What the stored state or the stack refused (a dialog already being
        released, a value that does not parse): done, with the reason in
        the one log line; the caller is never failed.
        """
        self._finish(500, f"not sent ({type(error).__name__}: {error})")

    def _timedOut(self) -> None:
        self._timeoutCall = None
        self._finish(TIMED_OUT, f"no answer within {self._timeout:g} s")

    def _finish(self, code: int, reason: str) -> None:
        if self._done:
            return
        self._done = True
        cancelDelayed(self._timeoutCall)
        for call in self._laterCalls:
            cancelDelayed(call)
        self._timeoutCall = None
        self._laterCalls = []
        tm = self._stack.transactionManager
        if tm is not None:
            release.abandon(tm, self._transactions)
        self._transactions = []
        log = self._log.warn if code in (500, 503) else self._log.info
        log(
            "{callId} ({state}) released by {how}: {code} {reason}",
            callId=self._state.callId,
            state=str(self._state.state),
            how=self._how,
            code=code,
            reason=printable(reason, 60),
        )
        self._deferred.callback(code)
