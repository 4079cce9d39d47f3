# -*- test-case-name: tests.test_callback_recovery -*-
"""
Recovery at start-up: finish what a crash left unfinished.

A server killed mid-call (kill -9, power loss, OOM) leaves phones connected
or ringing, callbacks whose AS never got a RESPONSE, and RESPONSEs never
sent.  Before the IIF port opens (and once SIP is up), L{Recovery.run}
reads from the store every callback of this server that has not ended and:

  - releases each of its legs from the stored dialog: a BYE for an answered
    leg, a CANCEL for a ringing one (L{callback_tw.sip.dialogs.releaseDialog}
    decides), with C{Reason: SIP;cause=500;text="server restarted"}; a far
    end that answers 481 or nothing within the time limit counts as gone;
  - records its end (cause "recovered", real_duration as if it ended at the
    server's last heartbeat before the crash, see L{Recovery.run});
  - sends its RESPONSE to the address that asked, and records that.

Callbacks that ended but whose RESPONSE is not recorded as sent get it
again.  Recovery is idempotent: a callback stays unfinished until its end is
committed, so a crash during recovery is recovered at the next start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, succeed
from twisted.logger import Logger

from callback_tw.sip.dialogs import DialogState, releaseDialog

__all__ = ["RECOVERED", "Recovery"]

#: The end cause of a callback finished by recovery.
RECOVERED = "recovered"

#: The Reason of the BYEs and CANCELs recovery sends.
RESTART_REASON = (500, "server restarted")


def _dialogState(leg: Any) -> DialogState:
    """The SIP side's L{DialogState} of a stored L{LegDialog}."""
    return DialogState(**{f.name: getattr(leg, f.name) for f in fields(DialogState)})


class Recovery:
    """
    One recovery run over the store of this server.

    @param store: the open L{callback_tw.store.Store}.
    @param stack: the running L{callback_tw.sip.stack.SipStack}, which sends
        the BYEs and CANCELs.
    @param respond: C{respond(record)} sends the RESPONSE of an ended
        L{CallbackRecord} to its peer address and records it
        (L{callback_tw.iif.protocol.IIFProtocol.resendResponse}).
    @param reactor: an L{IReactorTime}: the duration of the run.
    @param timeout: seconds a far end has to answer a BYE or CANCEL.
    @param release: C{release(stack, dialogState, reason, timeout) ->
        Deferred[int]}; L{callback_tw.sip.dialogs.releaseDialog} by default.
    @param dialogState: builds the C{dialogState} from a stored leg.
    """

    _log = Logger()

    def __init__(
        self,
        store: Any,
        stack: Any,
        respond: Callable[[Any], None],
        reactor: Any,
        timeout: float = 8.0,
        release: Callable[..., Deferred] | None = None,
        dialogState: Callable[[Any], Any] = _dialogState,
    ) -> None:
        self._store = store
        self._stack = stack
        self._respond = respond
        self._reactor = reactor
        self._timeout = timeout
        self._release = release if release is not None else releaseDialog
        self._dialogState = dialogState

    @inlineCallbacks
    def run(self) -> Any:
        """
        Finish every unfinished callback of this server, then send the
        RESPONSEs never sent.  Never fails: a callback that cannot be
        finished now is logged and left for the next start.

        @return: a Deferred firing with C{(finished, resent)} counts.
        """
        started = self._reactor.seconds()
        # First, before this run's heartbeat starts (the service starts it
        # after recovery): each joined callback the last run's heartbeat
        # speaks for gets checkpoint_at = that heartbeat, committed.  The
        # real_duration below counts to it, a crash from here on settles the
        # same values again, and what the CDR shows is the time used.
        # Then both reads before anything else is written: the callbacks
        # finished below must not show up as ended and unanswered too.
        try:
            settled = yield self._store.settleCheckpoints()
            if settled:
                self._log.info(
                    "recovery: {n} joined callbacks count up to the last"
                    " heartbeat before the restart",
                    n=settled,
                )
            unfinished = yield self._store.unfinishedWithLegs()
            unanswered = yield self._store.unanswered()
        except Exception as e:
            self._log.error("recovery: cannot use the store: {error}", error=str(e))
            return (0, 0)
        for record in unanswered:
            self._log.info(
                "recovery: callback {id} ended ({cause}) but its RESPONSE was not"
                " recorded as sent: RESPONSE real_duration={real} to {address}",
                id=record.id,
                cause=record.endCause,
                real=record.realDuration or 0,
                address=record.peerAddress,
            )
            self._respond(record)
        results = yield DeferredList(
            [self._finish(record, legs) for record, legs in unfinished],
            consumeErrors=True,
        )
        finished = sum(1 for ok, value in results if ok and value)
        if unfinished or unanswered:
            self._log.info(
                "recovery: {finished} of {n} unfinished callbacks finished,"
                " {resent} RESPONSEs sent again, in {t:.1f} s",
                finished=finished,
                n=len(unfinished),
                resent=len(unanswered),
                t=self._reactor.seconds() - started,
            )
        return (finished, len(unanswered))

    @inlineCallbacks
    def _finish(self, record: Any, legs: list[Any]) -> Any:
        """
        Release the legs of one callback, record its end, send its RESPONSE.

        @return: True once its end is committed.
        """
        pending = [leg for leg in legs if str(leg.state) != "ended"]
        releases = []
        for leg in pending:
            try:
                state = self._dialogState(leg)
                releases.append(
                    self._release(self._stack, state, RESTART_REASON, self._timeout)
                )
            except Exception:
                self._log.failure(
                    "recovery: callback {id} leg {leg}: cannot release",
                    id=record.id,
                    leg=leg.leg,
                )
                releases.append(succeed(None))
        codes = yield DeferredList(releases, consumeErrors=True)
        values: dict[str, Any] = {}
        words = []
        for leg, (ok, code) in zip(pending, codes, strict=True):
            how = "BYE" if str(leg.state) == "answered" else "CANCEL"
            code = code if ok and code is not None else 0
            words.append(f"leg{leg.leg} {leg.state}: {how} -> {code}")
            values[f"leg{leg.leg}Reason"] = f"{RECOVERED}: {how} after a restart"
            values[f"leg{leg.leg}Status"] = 200 if str(leg.state) == "answered" else 487
        real = record.recoveredDuration()
        try:
            yield self._store.markEnded(record.id, RECOVERED, real, **values)
        except Exception as e:
            self._log.error(
                "recovery: callback {id}: end not stored ({error}); it is"
                " recovered again at the next start",
                id=record.id,
                error=str(e),
            )
            return False
        self._log.info(
            "recovery: callback {id} ({state}) finished: {legs};"
            " real_duration={real}; RESPONSE to {address}",
            id=record.id,
            state=record.state,
            legs="; ".join(words) or "no leg placed",
            real=real,
            address=record.peerAddress,
        )
        self._respond(_ended(record, real))
        return True


def _ended(record: Any, real: int) -> Any:
    return replace(record, realDuration=real, endCause=RECOVERED)
