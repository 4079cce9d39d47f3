# -*- test-case-name: tests.test_callback_call -*-
"""
One callback: call user1, then user2, join them, enforce the duration,
report the real duration. The whole life of a callback is here; SIP details
are in L{callback_tw.sip}, audio in L{callback_tw.media}.

States::

    calling1 --user1 answers--> calling2 --user2 answers--> joining --> joined
       |                           |                          |           |
       +------------ any end, timer, cancel ------------------+-----------+--> ended

The duration timer counts from user1's answer (the spec: "when the user
answers the call, MSS will start a timer"). user2 is dialled at user1's
answer too, but the join waits until both parties have heard their
announcements in full (user1's, then user2's ann_id2 and ann_digit2): an
operator's announcement may be a legal notice. State C{joining} covers that
wait and the re-INVITEs.

C{real_duration} is talk time: from the join's completion (both re-INVITEs
answered 2xx) to the release, rounded to the nearest second (halves up); 0
when the parties were never connected. Announcement time is not talk time.

Each join re-INVITE must get its final answer within C{join_timeout}: a
person waiting in silence for the RFC's 32 s is worse than a failed call, so
a timeout or a failure answer (a 491 is retried by the leg, within the same
limit) releases both legs with a Reason, cause "join failed".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from callback_tw.callback.errors import CallbackRefused
from callback_tw.callback.join import Joining
from callback_tw.callback.states import CallState
from callback_tw.sip.leg import LegEnd, LegState, ReInviteFailed
from callback_tw.sip.sdp import SdpError, SdpSession, parseAudio, sharedVoiceCodecs
from callback_tw.store.records import LegDialog
from callback_tw.timers import cancelDelayed

#: Why a leg cannot be placed when the RTP port range is used up: an expected
#: condition under load (or with far ends that never hang up), reported as a
#: refusal or one warning, never as a traceback.
NO_RTP_PORT = "no free RTP port ([media] rtp_ports exhausted)"


@dataclass(frozen=True)
class CallResult:
    """
    What a finished callback reports.

    @ivar realDuration: whole seconds of conversation (see module doc).
    @ivar cause: why it ended, for logs and the call record ("user1 busy
        (486 Busy Here)", "duration limit", "user2 hung up"...).
    @ivar values: the legs' final SIP statuses and reasons, as the store's
        record names them (C{leg1Status}, C{leg1Reason}...).
    @ivar times: the moments of the callback (POSIX seconds, reactor time)
        under the store's names: C{answered1At}, C{answered2At}, C{joinedAt}
        (absent when they did not happen) and C{endedAt}.
    """

    realDuration: int
    cause: str
    values: dict[str, Any] = field(default_factory=dict, compare=False)
    times: dict[str, float] = field(default_factory=dict, compare=False)


class IDialer(Protocol):
    """Places legs; knows routing and caller ID (L{callback_tw.sip.stack})."""

    sdpHost: str

    def dial(
        self,
        user: str,
        offer: str,
        listener: Any,
        name: str = "",
        caller: str | None = None,
    ) -> Any:
        """Call C{user}; C{caller} is the number the leg may show."""


class IMediaPorts(Protocol):
    """Opens one RTP port per leg (L{callback_tw.media.rtp.RTPPortAllocator})."""

    def openPort(self) -> Any: ...


_FAILURES = {
    486: "busy",
    600: "busy",
    603: "declined",
    404: "not found",
    604: "not found",
    408: "no answer",
    480: "unavailable",
    487: "cancelled",
}


def describeEnd(end: LegEnd) -> str:
    """A leg's end in words an operator reads in a log."""
    word = _FAILURES.get(end.code, "failed")
    return f"{word} ({end.code} {end.reason})"


def roundSeconds(seconds: float) -> int:
    """Round to the nearest whole second, halves up (2.5 s -> 3)."""
    return max(0, int(math.floor(seconds + 0.5)))


_LEG_NUMBERS = {"leg1": 1, "leg2": 2}

#: The default of C{[callback] join_timeout}, seconds.
JOIN_TIMEOUT = 8.0


class CallbackCall(Joining):
    """
    The state machine of one callback.

    @ivar callbackId: the IIF id.
    @ivar state: a L{CallState}.
    @ivar accepted: fires (None) once leg 1 is being set up; errbacks if it
        could not even be started. Decided within L{start}; the manager turns
        a failure into a refusal (the ACK code=fail).
    @ivar finished: fires once with a L{CallResult}. Drives the RESPONSE.
    """

    _log = Logger()

    def __init__(
        self,
        request: Any,
        dialer: IDialer,
        media: IMediaPorts,
        duration: float,
        reactor: Any,
        announcer: Any = None,
        store: Any = None,
        joinTimeout: float = JOIN_TIMEOUT,
    ) -> None:
        """
        @param store: the L{callback_tw.store.Store} this call writes its
            progress (state, times) and its legs' dialogs to, so that a
            restart can finish it; L{None} to keep nothing.
        @param joinTimeout: seconds each join re-INVITE may wait for its
            final answer before the callback ends ("join failed").
        """
        self.callbackId: str = request.callbackId
        self.request = request
        self.state = CallState.NEW
        self.accepted: Deferred = Deferred()
        self.finished: Deferred = Deferred()
        self._dialer = dialer
        self._media = media
        self._duration = duration
        self._reactor = reactor
        self._announcer = announcer
        self._legs: dict[str, Any] = {}
        self._rtp: dict[str, Any] = {}
        self._sessions: dict[str, SdpSession] = {}
        self._durationCall = None
        self._answered1At: float | None = None
        self._answered2At: float | None = None
        self._joinedAt: float | None = None
        self._joinTimeout = joinTimeout
        self._joinCall: Any = None
        # Fires when user1's announcement has been played (or stopped).
        self._user1Heard: Deferred = succeed(None)
        self._playing: list[Any] = []
        self._store = store
        # The final (status, reason) of each leg, as the record keeps it.
        self._legStatus: dict[str, tuple[int, str]] = {}
        self.onEnd: list[Callable[[CallbackCall], None]] = []

    # -- life cycle --------------------------------------------------------

    def start(self) -> None:
        """
        Call user1. Fires C{accepted} at once; an error placing the leg
        (no RTP port, SIP stack down) fails it instead and ends the call.
        """
        try:
            self._dial("leg1", self.request.user1)
        except CannotListenError:
            # Every REQUEST fails alike while the range is used up: the IIF
            # reports the refusal, rate-limited; no line per REQUEST here.
            self._notStarted(NO_RTP_PORT)
            return
        except Exception as e:
            self._log.failure("callback {id}: cannot call user1", id=self.callbackId)
            self._notStarted(f"cannot call user1: {e}")
            return
        self._log.debug(
            "callback {id} accepted: user1={user1} user2={user2} duration={duration}",
            id=self.callbackId,
            user1=self.request.user1,
            user2=self.request.user2,
            duration=self._duration,
        )
        self.state = CallState.CALLING1
        self._record(state=str(self.state))
        self.accepted.callback(None)

    def _notStarted(self, reason: str) -> None:
        """
        User1 could not even be called: fail C{accepted} (the AS gets
        C{code=fail}) and end with C{real_duration=0}.
        """
        self.state = CallState.ENDED
        self._closeMedia()
        self.accepted.errback(CallbackRefused(reason))
        self._finish(CallResult(0, reason))

    def cancel(self, cause: str) -> bool:
        """Release the callback from outside (AS CANCEL, shutdown)."""
        if self.state in (CallState.ENDED, CallState.NEW):
            return False
        self._release(cause)
        return True

    @property
    def legs(self) -> dict[str, Any]:
        """The legs placed so far, "leg1" and "leg2"."""
        return dict(self._legs)

    # -- legs --------------------------------------------------------------

    def _dial(self, name: str, user: str, caller: str | None = None) -> None:
        rtp = self._media.openPort()
        self._rtp[name] = rtp
        session = SdpSession(self._dialer.sdpHost)
        self._sessions[name] = session
        offer = session.offer(rtp.host, rtp.port)
        self._legs[name] = self._dialer.dial(
            user, offer, self, f"{self.callbackId}/{name}", caller=caller
        )

    def _nameOf(self, leg: Any) -> str | None:
        for name, known in self._legs.items():
            if known is leg:
                return name
        return None

    def legRinging(self, leg: Any) -> None:
        self._log.debug(
            "callback {id} {leg} ringing", id=self.callbackId, leg=self._nameOf(leg)
        )

    def legAnswered(self, leg: Any, sdp: str) -> None:
        name = self._nameOf(leg)
        if self.state == CallState.ENDED:
            return
        if name == "leg1" and self.state == CallState.CALLING1:
            self._user1Answered(sdp)
        elif name == "leg2" and self.state == CallState.CALLING2:
            self._user2Answered(sdp)

    def _user1Answered(self, sdp: str) -> None:
        now = self._reactor.seconds()
        self._answered1At = now
        self._durationCall = self._reactor.callLater(
            self._duration, self._durationExpired
        )
        self._log.debug(
            "callback {id} user1 answered; duration timer {duration} s started,"
            " calling user2",
            id=self.callbackId,
            duration=self._duration,
        )
        self.state = CallState.CALLING2
        self._record(state=str(self.state), answered1At=now, called2At=now)
        if self._announcer is not None:
            playback = self._announcer.announceUser1(
                self, self._legs["leg1"], self._rtp["leg1"], sdp
            )
            self._playing.append(playback)
            self._user1Heard = playback.done
        try:
            self._dial("leg2", self.request.user2, caller=self.request.user1)
        except CannotListenError:
            self._log.warn(
                "callback {id}: cannot call user2: {reason}",
                id=self.callbackId,
                reason=NO_RTP_PORT,
            )
            self._release(
                f"cannot call user2: {NO_RTP_PORT}",
                reason=(503, "Service Unavailable"),
            )
        except Exception as e:
            self._log.failure("callback {id}: cannot call user2", id=self.callbackId)
            self._release(
                f"cannot call user2: {e}", reason=(500, "Server Internal Error")
            )

    def _user2Answered(self, sdp: str) -> None:
        self._answered2At = self._reactor.seconds()
        self._record(state=str(CallState.JOINING), answered2At=self._answered2At)
        self._log.debug("callback {id} user2 answered", id=self.callbackId)
        leg1 = self._legs["leg1"]
        try:
            shared = sharedVoiceCodecs(
                parseAudio(leg1.remoteSdp or ""), parseAudio(sdp)
            )
        except SdpError as e:
            self._release(
                f"unusable SDP: {e}", reason=(488, "Not Acceptable Here"), both=True
            )
            return
        if not shared:
            self._release(
                "user1 and user2 share no codec: join not attempted",
                reason=(488, "Not Acceptable Here"),
                both=True,
            )
            return
        self.state = CallState.JOINING
        heard = [self._user1Heard]
        if self._announcer is not None:
            playback = self._announcer.announceUser2(
                self, self._legs["leg2"], self._rtp["leg2"], sdp
            )
            self._playing.append(playback)
            heard.append(playback.done)
        # The join waits for the later of the two announcements; user1 hears
        # ringback and user2 silence meanwhile (the announcer's doc).
        ready = gatherResults(heard, consumeErrors=True)
        ready.addCallback(lambda _: self._join())
        ready.addErrback(self._joinFailed)

    def legReInvited(self, leg: Any, sdp: str) -> Deferred:
        """
        A party re-INVITEs (hold, codec change, session refresh). Once
        joined, the offer goes to the other party and its answer comes back
        (a B2BUA passes it through); before, we are the media end and answer
        with our own SDP.
        """
        name = self._nameOf(leg)
        if self.state == CallState.JOINED:
            other = "leg2" if name == "leg1" else "leg1"
            d = self._legs[other].reInvite(self._sessions[other].relay(sdp))
            return d.addCallback(lambda answer: self._sessions[name].relay(answer))
        rtp = self._rtp.get(name)
        if rtp is None or self.state == CallState.JOINING:
            return _refused(491, "Request Pending")
        session = self._sessions[name]
        return succeed(session.offer(rtp.host, rtp.port))

    def legDialogChanged(self, leg: Any, state: Any) -> None:
        """
        A leg's dialog changed (a L{callback_tw.sip.dialogs.DialogState}):
        store what a BYE or CANCEL of it needs after a restart.
        """
        name = self._nameOf(leg)
        # Once the callback has ended its end is being committed: recovery
        # will not look at its legs, so their last changes need no write.
        if self._store is None or name is None or self.state == CallState.ENDED:
            return
        values = {f.name: getattr(state, f.name) for f in fields(state)}
        values["state"] = str(values["state"])
        values["routeSet"] = tuple(values["routeSet"])
        dialog = LegDialog(callbackId=self.callbackId, leg=_LEG_NUMBERS[name], **values)
        self._store.upsertLeg(dialog).addErrback(self._notStored, "leg dialog")

    def _record(self, **values: Any) -> None:
        """Write this callback's progress to the store (in order, not waited for)."""
        if self._store is not None:
            self._store.update(self.callbackId, **values).addErrback(
                self._notStored, values.get("state", "progress")
            )

    def _notStored(self, failure: Any, what: str) -> None:
        self._log.warn(
            "callback {id}: {what} not stored ({error})",
            id=self.callbackId,
            what=what,
            error=failure.getErrorMessage(),
        )

    def legEnded(self, leg: Any, end: LegEnd) -> None:
        name = self._nameOf(leg)
        if name is not None and name not in self._legStatus:
            self._legStatus[name] = (end.code, end.reason)
        if self.state == CallState.ENDED or not end.byRemote:
            return
        if name == "leg1" and not end.answered:
            self._release(f"user1 {describeEnd(end)}")
        elif name == "leg2" and not end.answered:
            self._release(f"user2 {describeEnd(end)}", reason=(end.code, end.reason))
        else:
            self._release(f"{'user1' if name == 'leg1' else 'user2'} hung up")

    # -- the end -----------------------------------------------------------

    def _durationExpired(self) -> None:
        self._durationCall = None
        self._log.debug(
            "callback {id} duration of {d} s reached",
            id=self.callbackId,
            d=self._duration,
        )
        self._release("duration limit")

    def _release(
        self, cause: str, reason: tuple[int, str] | None = None, both: bool = False
    ) -> None:
        """
        End the callback: hang up every leg still up (BYE or CANCEL), stop
        the timer, free the media, report once.

        @param reason: an RFC 3326 Reason for the BYE to user1 (leg 2's
            failure), or for both legs when C{both}.
        """
        if self.state == CallState.ENDED:
            return
        now = self._reactor.seconds()
        self.state = CallState.ENDED
        cancelDelayed(self._durationCall)
        cancelDelayed(self._joinCall)
        self._durationCall = self._joinCall = None
        for name, leg in self._legs.items():
            if leg.state == LegState.ENDED:
                continue
            answered = leg.state == LegState.ANSWERED
            if reason is not None and (both or name == "leg1"):
                leg.hangUp(*reason)
            else:
                leg.hangUp()
            # What the record says of a leg we ended: the INVITE's final
            # status (200 answered, else 487 after our CANCEL) and why.
            self._legStatus.setdefault(name, (200 if answered else 487, cause))
        self._stopMedia()
        self._closeMedia()
        real = 0 if self._joinedAt is None else roundSeconds(now - self._joinedAt)
        times = {
            name: at
            for name, at in (
                ("answered1At", self._answered1At),
                ("answered2At", self._answered2At),
                ("joinedAt", self._joinedAt),
                ("endedAt", now),
            )
            if at is not None
        }
        self._log.debug(
            "callback {id} ended: {cause}; real_duration={real}"
            " answer1={answered1At} answer2={answered2At} joined={joinedAt}"
            " ended={endedAt}",
            id=self.callbackId,
            cause=cause,
            real=real,
            answered1At=self._answered1At,
            answered2At=self._answered2At,
            joinedAt=self._joinedAt,
            endedAt=now,
        )
        self._finish(CallResult(real, cause, self._legValues(), times))

    def _legValues(self) -> dict[str, Any]:
        """The legs' statuses and reasons, as the store's record names them."""
        values: dict[str, Any] = {}
        for name, (code, reason) in self._legStatus.items():
            values[f"{name}Status"] = code
            values[f"{name}Reason"] = reason[:200]
        return values

    def _finish(self, result: CallResult) -> None:
        for leg in self._legs.values():
            leg.detach()
        for observer in self.onEnd:
            observer(self)
        self.onEnd = []
        self.finished.callback(result)

    def _stopMedia(self) -> None:
        playing, self._playing = self._playing, []
        for playback in playing:
            playback.stop()

    def _closeMedia(self) -> None:
        rtp, self._rtp = self._rtp, {}
        for port in rtp.values():
            port.close()


def _refused(code: int, reason: str) -> Deferred:
    d: Deferred = Deferred()
    d.errback(ReInviteFailed(code, reason))
    return d
