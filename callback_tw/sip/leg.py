# -*- test-case-name: tests.test_sip_leg -*-
"""
One outgoing call leg over a sippy UA, as events a callback can follow.

sippy reports a UA's life through C{CCEvent*} objects handed to an
C{event_cb}, from deep inside its message handling. This module is the one
place that turns them into this project's vocabulary: L{ILegListener}'s
C{legRinging}, C{legAnswered}, C{legEnded}, C{legReInvited},
C{legDialogChanged}, and the Deferred of L{Leg.reInvite}. Events are
delivered on a later reactor turn, in order: re-entering sippy from inside
its own callback (to hang up the other leg, say) is a known crash.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sippy.CCEvents import (
    CCEventConnect,
    CCEventDisconnect,
    CCEventFail,
    CCEventPreConnect,
    CCEventRedirect,
    CCEventRing,
    CCEventUpdate,
)
from sippy.MsgBody import MsgBody
from sippy.SipCallId import SipCallId
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from callback_tw.sip.adapter import DialogUA, Invite, ParkedDialog, ourContact, park
from callback_tw.sip.dialogs import USER_AGENT, DialogStage, DialogState
from callback_tw.sip.legevents import (
    NO_LISTENER,
    ILegListener,
    LegEnd,
    LegState,
    ReInviteFailed,
    sipReason,
)
from callback_tw.timers import cancelDelayed

if TYPE_CHECKING:
    from callback_tw.sip.routing import Route

__all__ = [
    "GLARE_BACKOFF",
    "GLARE_RETRIES",
    "ILegListener",
    "Leg",
    "LegEnd",
    "LegState",
    "PARK_AFTER",
    "ReInviteFailed",
    "USER_AGENT",
    "UnreachableLeg",
    "sipReason",
]

#: RFC 3261 14.1: after a 491 the owner of the Call-ID waits 2.1 to 4 s.
GLARE_BACKOFF = (2.1, 4.0)
GLARE_RETRIES = 3

#: seconds without any request or response in an answered leg's dialog
#: before its sippy UA is let go (L{callback_tw.sip.adapter.park}).  Once
#: every transaction of the dialog has its final answer (and an INVITE of
#: the far end its ACK) nothing of sippy's refers to the UA but its
#: registration, which parking replaces, so the UA can go at once; a
#: second keeps the steps of a join that follow each other closely from
#: parking and waking the dialog in turn (a wake costs a few objects).
#: Parking early matters: the memory of a UA let go is reused by the
#: next calls' set-up instead of adding to the process's peak.
PARK_AFTER = 1.0


#: the stage of a leg's dialog in each state of the leg.
_DIALOG_STAGES = {
    LegState.CALLING: DialogStage.TRYING,
    LegState.RINGING: DialogStage.RINGING,
    LegState.ANSWERED: DialogStage.ANSWERED,
    LegState.ENDED: DialogStage.ENDED,
}


class _DialogCheck:
    """Queued when sippy may have changed the dialog: compare on a later turn."""


_DIALOG_CHECK = _DialogCheck()


@dataclass
class _Ended:
    """Queued with the other events so the owner hears of the end in order."""

    end: LegEnd
    reInvite: Deferred | None


class Leg:
    """
    One outgoing call leg: an INVITE to C{user} by its L{Route}, then the
    dialog until one side ends it.

    @ivar name: a label for logs ("1234/leg1").
    @ivar user: the called user (R-URI user part).
    @ivar route: where the INVITE went, and From whom.
    @ivar state: a L{LegState}.
    @ivar remoteSdp: the far end's current SDP (text), once answered.
    """

    _log = Logger()

    def __init__(
        self,
        globalConfig: dict[str, Any],
        user: str,
        route: Route,
        offer: str,
        listener: ILegListener,
        reactor: Any,
        noAnswerTimeout: float,
        name: str = "",
    ) -> None:
        """
        @param globalConfig: sippy's configuration of the stack the leg
            belongs to (its transaction manager's C{global_config}).
        @param route: where the INVITE goes, From whom, and how (a
            provider's proxy, domain and credentials).
        @param noAnswerTimeout: seconds before an unanswered leg is
            cancelled (it ends with 408).
        """
        self.name = name or user
        self.user = user
        self.route = route
        self.state = LegState.NEW
        self.remoteSdp: str | None = None
        self.callId: str | None = None
        self._globalConfig = globalConfig
        self._offer = offer
        #: the SDP the far end last agreed to from us (see
        #: L{DialogUA.restoreLocalSdp}).
        self._localSdp = offer
        self._listener = listener
        self._reactor = reactor
        self._noAnswerTimeout = noAnswerTimeout
        self._noAnswerCall = None
        self._ua: DialogUA | None = None
        #: the dialog while its UA is let go (see L{PARK_AFTER}); then
        #: C{_ua} is None.
        self._parked: ParkedDialog | None = None
        self._parkCall = None
        self._queue: list[Any] = []
        self._drainCall = None
        self._reInvite: Deferred | None = None
        self._reInviteSdp: str | None = None
        self._reInviteTries = 0
        self._retryCall = None
        #: the hash of the last L{DialogState} told to the owner, and
        #: whether it was the end: a leg may be held for hours, and a
        #: fingerprint is all a change check needs (two consecutive states
        #: of one dialog would need a 64-bit hash collision to look equal).
        self._lastDialogHash: int | None = None
        self._dialogEnded = False

    def dialogState(self) -> DialogState | None:
        """
        The leg's dialog as a value (see L{ILegListener.legDialogChanged});
        None before the INVITE is sent.
        """
        if self._parked is not None:
            fields = self._parked.dialogFields()
        elif self._ua is None:
            return None
        else:
            fields = self._ua.dialogFields()
        if fields is None:
            return None
        return DialogState(
            viaProvider=self.route.outboundProxy is not None,
            state=_DIALOG_STAGES[self.state],
            **fields,
        )

    def _newUA(self) -> DialogUA:
        """A sippy UA for this leg's dialog, as the INVITE and a wake need it."""
        route = self.route
        username, password = route.credentials or (None, None)
        ua = DialogUA(
            self._globalConfig,
            event_cb=self._uaEvent,
            nh_address=tuple(route.target),
            username=username,
            password=password,
        )
        if route.outboundProxy is not None:
            ua.outbound_proxy = tuple(route.outboundProxy)
        ua.local_ua = USER_AGENT
        ua.lContact = ourContact(route.callerId)
        ua.dialogChanged = self._dialogMayHaveChanged
        return ua

    # -- requests from the owner -------------------------------------------

    def dial(self) -> None:
        """Send the INVITE."""
        assert self.state == LegState.NEW, self.state
        route = self.route
        ua = self._newUA()
        self._ua = ua
        callId = SipCallId()
        self.callId = str(callId)
        self.state = LegState.CALLING
        self._noAnswerCall = self._reactor.callLater(
            self._noAnswerTimeout, self._noAnswer
        )
        self._log.debug(
            "{leg} INVITE sip:{user}@{host}:{port} from {caller} (Call-ID {callId})",
            leg=self.name,
            user=self.user,
            host=route.target[0],
            port=route.target[1],
            caller=route.callerId,
            callId=self.callId,
        )
        event = Invite(
            (callId, route.callerId, self.user, MsgBody(self._offer), None, None)
        )
        event.fromDomain = route.fromDomain
        event.assertedIdentity = route.assertedIdentity
        self._offer = None
        ua.recvEvent(event)

    def hangUp(self, code: int | None = None, text: str | None = None) -> None:
        """
        End the leg from our side: CANCEL while it rings, BYE once answered.
        With C{code}, the request carries C{Reason: SIP;cause=code;text=...}.
        The listener hears C{legEnded} (byRemote False) on a later turn.
        """
        if self.state in (LegState.NEW, LegState.ENDED):
            return
        answered = self.state == LegState.ANSWERED
        event = CCEventDisconnect(origin="callback_tw")
        if code is not None:
            event.reason_rfc3326 = sipReason(code, text or "")
        self._stopTimers()
        self._log.debug(
            "{leg} {what}{why}",
            leg=self.name,
            what="BYE" if answered else "CANCEL",
            why="" if code is None else f" (Reason: SIP;cause={code})",
        )
        ua = self._awake()
        self._finish(
            LegEnd(200, "hung up", False, True)
            if answered
            else LegEnd(487, "cancelled", False, False)
        )
        ua.recvEvent(event)

    def detach(self) -> None:
        """
        Stop telling the owner anything: a finished callback detaches its
        legs, so that the leg (kept by sippy until its dialog is dead) does
        not keep the callback alive, and no reference cycle is left for the
        garbage collector.
        """
        self._listener = NO_LISTENER

    def abandon(self) -> None:
        """
        Forget the leg without a word to the far end, as a crash does: its
        timers stop, its owner hears nothing more, sippy is not touched
        (the stack is being stopped under it). What is left on the far
        end's side is for L{callback_tw.sip.dialogs.releaseDialog}.
        """
        self._stopTimers()
        cancelDelayed(self._drainCall)
        self._drainCall = None
        self._queue = []
        self._listener = NO_LISTENER
        self.state = LegState.ENDED
        if self._ua is not None:
            self._ua.dialogChanged = None
        if self._parked is not None:
            self._parked.owner = None

    def reInvite(self, sdp: str) -> Deferred:
        """
        Send a re-INVITE offering C{sdp}; fire with the answer SDP.

        A 491 (glare) is retried after the RFC 3261 back-off, a few times.
        Fails with L{ReInviteFailed}, or with the leg's end if it ends first.
        """
        if self.state != LegState.ANSWERED or self._reInvite is not None:
            raise RuntimeError(f"{self.name}: cannot re-INVITE in state {self.state}")
        self._reInvite = Deferred()
        self._reInviteSdp = sdp
        self._reInviteTries = 0
        self._sendReInvite()
        return self._reInvite

    def _sendReInvite(self) -> None:
        self._retryCall = None
        if self.state != LegState.ANSWERED or self._awake() is None:
            return
        self._reInviteTries += 1
        self._log.debug(
            "{leg} re-INVITE (try {n})", leg=self.name, n=self._reInviteTries
        )
        self._ua.restoreLocalSdp(self._localSdp)
        try:
            self._ua.recvEvent(CCEventUpdate(MsgBody(self._reInviteSdp)))
        except Exception as e:
            d, self._reInvite = self._reInvite, None
            if d is not None:
                d.errback(e)

    # -- sippy events ------------------------------------------------------

    def _uaEvent(self, event: Any, ua: DialogUA) -> None:
        # Called from inside sippy: queue, handle on a later reactor turn.
        self._queue.append(event)
        if self._drainCall is None:
            self._drainCall = self._reactor.callLater(0, self._drain)

    def _dialogMayHaveChanged(self) -> None:
        # Called from inside sippy: compare on a later turn, in order.
        if self._queue and self._queue[-1] is _DIALOG_CHECK:
            return
        self._uaEvent(_DIALOG_CHECK, self._ua)

    def _drain(self) -> None:
        self._drainCall = None
        while self._queue:
            event = self._queue.pop(0)
            try:
                self._handle(event)
                self._pushDialog()
            except Exception:
                self._log.failure(
                    "{leg} failed to handle {event}", leg=self.name, event=event
                )
        if self.state == LegState.ANSWERED and self._ua is not None:
            if self._parkCall is None:
                self._parkCall = self._reactor.callLater(PARK_AFTER, self._park)
            else:
                self._parkCall.reset(PARK_AFTER)

    def _park(self) -> None:
        """
        Nothing has happened in the dialog for L{PARK_AFTER} seconds: let
        its sippy UA go, keep the dialog compactly until it is needed.
        """
        self._parkCall = None
        ua = self._ua
        if (
            self.state != LegState.ANSWERED
            or ua is None
            or self._reInvite is not None
            or self._queue
        ):
            return
        parked = park(ua, self._localSdp, self.remoteSdp)
        if parked is None:
            return
        parked.owner = self._awake
        self._parked, self._ua = parked, None
        self._log.debug("{leg} dialog parked", leg=self.name)

    def _awake(self) -> DialogUA | None:
        """The leg's sippy UA, rebuilt first if the dialog is parked."""
        parked = self._parked
        if parked is not None:
            self._parked = None
            self._ua = parked.restore(self._newUA())
            self._log.debug("{leg} dialog woken", leg=self.name)
        return self._ua

    def _pushDialog(self) -> None:
        """Tell the owner the dialog's state if it changed, up to its end."""
        if self._dialogEnded:
            return
        state = self.dialogState()
        if state is None or hash(state) == self._lastDialogHash:
            return
        self._lastDialogHash = hash(state)
        self._dialogEnded = state.state == DialogStage.ENDED
        self._listener.legDialogChanged(self, state)

    def _handle(self, event: Any) -> None:
        if event is _DIALOG_CHECK:
            return
        if isinstance(event, _Ended):
            self._handleEnded(event)
        elif isinstance(event, CCEventRing):
            if self.state == LegState.CALLING:
                code = event.getData()[0]
                if code != 100:
                    self.state = LegState.RINGING
                    self._log.debug("{leg} ringing ({code})", leg=self.name, code=code)
                    self._listener.legRinging(self)
        elif isinstance(event, CCEventConnect):
            self._connected(event)
        elif isinstance(event, (CCEventFail, CCEventRedirect)):
            self._refused(event)
        elif isinstance(event, CCEventDisconnect):
            if self.state != LegState.ENDED:
                self._log.debug("{leg} hung up by the far end", leg=self.name)
                self._finish(
                    LegEnd(200, "remote hang-up", True, self.state == LegState.ANSWERED)
                )
        elif isinstance(event, CCEventUpdate):
            self._remoteReInvite(event)
        elif isinstance(event, CCEventPreConnect):
            pass  # we always offer in the INVITE: no late media

    def _connected(self, event: Any) -> None:
        """A 2xx: to our INVITE (answered), or to our re-INVITE."""
        code, reason, body = event.getData()[:3]
        sdp = None if body is None else str(body)
        if self.state in (LegState.CALLING, LegState.RINGING):
            self._stopTimers()
            self.state = LegState.ANSWERED
            self.remoteSdp = sdp
            self._log.debug("{leg} answered", leg=self.name)
            self._listener.legAnswered(self, sdp or "")
        elif self.state == LegState.ANSWERED and self._reInvite is not None:
            d, self._reInvite = self._reInvite, None
            self._localSdp = self._reInviteSdp or self._localSdp
            self._reInviteSdp = None
            if sdp is not None:
                self.remoteSdp = sdp
            self._log.debug("{leg} re-INVITE answered {code}", leg=self.name, code=code)
            d.callback(sdp or "")

    def _refused(self, event: Any) -> None:
        """
        A failure or redirect: to our INVITE (the leg ends), or to our
        re-INVITE (retried after glare, else it fails).
        """
        code, reason = event.getData()[:2]
        if self.state in (LegState.CALLING, LegState.RINGING):
            self._log.debug(
                "{leg} failed: {code} {reason}", leg=self.name, code=code, reason=reason
            )
            self._finish(LegEnd(int(code), str(reason), True, False))
        elif self.state == LegState.ANSWERED and self._reInvite is not None:
            if self._ua is not None:
                self._ua.restoreLocalSdp(self._localSdp)
            if code == 491 and self._reInviteTries <= GLARE_RETRIES:
                delay = random.uniform(*GLARE_BACKOFF)
                self._log.debug(
                    "{leg} re-INVITE glare (491), retrying in {delay:.2f} s",
                    leg=self.name,
                    delay=delay,
                )
                self._retryCall = self._reactor.callLater(delay, self._sendReInvite)
                return
            d, self._reInvite = self._reInvite, None
            self._reInviteSdp = None
            self._log.debug(
                "{leg} re-INVITE failed: {code} {reason}",
                leg=self.name,
                code=code,
                reason=reason,
            )
            d.errback(ReInviteFailed(int(code), str(reason)))

    def _remoteReInvite(self, event: Any) -> None:
        """A re-INVITE from the far end: the owner supplies the answer."""
        body = event.getData()
        ua = self._ua
        if self.state != LegState.ANSWERED or ua is None:
            return
        offer = "" if body is None else str(body)
        self.remoteSdp = offer or self.remoteSdp
        d = self._listener.legReInvited(self, offer)

        def answer(sdp: str) -> None:
            if self.state == LegState.ANSWERED and not ua.isDead():
                self._localSdp = sdp
                ua.recvEvent(CCEventConnect((200, "OK", MsgBody(sdp))))

        def refuse(failure: Any) -> None:
            code = getattr(failure.value, "code", 488)
            reason = getattr(failure.value, "reason", "Not Acceptable Here")
            if self.state == LegState.ANSWERED and not ua.isDead():
                ua.recvEvent(CCEventFail((code, reason)))

        d.addCallbacks(answer, refuse)
        d.addErrback(
            lambda f: self._log.failure("{leg} answering a re-INVITE", f, leg=self.name)
        )

    def _noAnswer(self) -> None:
        self._noAnswerCall = None
        if self.state not in (LegState.CALLING, LegState.RINGING):
            return
        self._log.debug(
            "{leg} no answer within {t} s: CANCEL",
            leg=self.name,
            t=self._noAnswerTimeout,
        )
        ua = self._ua
        self._finish(LegEnd(408, "no answer", True, False))
        ua.recvEvent(CCEventDisconnect(origin="callback_tw"))

    # -- the end -----------------------------------------------------------

    def _stopTimers(self) -> None:
        cancelDelayed(self._noAnswerCall)
        cancelDelayed(self._retryCall)
        cancelDelayed(self._parkCall)
        self._noAnswerCall = self._retryCall = self._parkCall = None

    def _finish(self, end: LegEnd) -> None:
        """Enter the ended state once and tell the owner on a later turn."""
        if self.state == LegState.ENDED:
            return
        self._stopTimers()
        self.state = LegState.ENDED
        reInvite, self._reInvite = self._reInvite, None
        self._queue.append(_Ended(end, reInvite))
        if self._drainCall is None:
            self._drainCall = self._reactor.callLater(0, self._drain)

    def _handleEnded(self, ended: _Ended) -> None:
        self._pushDialog()
        if ended.reInvite is not None:
            ended.reInvite.errback(ReInviteFailed(ended.end.code, ended.end.reason))
        self._listener.legEnded(self, ended.end)


class UnreachableLeg:
    """
    A leg that cannot be placed (a local user who is not registered): it
    ends at once, on a later turn, with the given status, and never sends
    anything.
    """

    def __init__(
        self,
        listener: ILegListener,
        reactor: Any,
        code: int,
        reason: str,
        name: str = "",
    ) -> None:
        self.name = name
        self.state = LegState.CALLING
        self.remoteSdp: str | None = None
        self.callId: str | None = None
        self._listener = listener
        self._end = LegEnd(code, reason, True, False)
        self._failCall = reactor.callLater(0, self._fail)

    def _fail(self) -> None:
        self._failCall = None
        if self.state == LegState.ENDED:
            return
        self.state = LegState.ENDED
        Leg._log.debug(
            "{leg} failed at once: {code} {reason}",
            leg=self.name,
            code=self._end.code,
            reason=self._end.reason,
        )
        self._listener.legEnded(self, self._end)

    def hangUp(self, code: int | None = None, text: str | None = None) -> None:
        """Nothing was sent, so nothing to end; the owner hears nothing more."""
        cancelDelayed(self._failCall)
        self._failCall = None
        self.state = LegState.ENDED

    def detach(self) -> None:
        self._listener = NO_LISTENER

    def abandon(self) -> None:
        """Nothing was sent: the same as L{hangUp}."""
        self.hangUp()

    def dialogState(self) -> DialogState | None:
        """Never a dialog: nothing was sent."""
        return None

    def reInvite(self, sdp: str) -> Deferred:
        raise RuntimeError(f"{self.name}: not answered")
