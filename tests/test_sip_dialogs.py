"""
Tests for L{callback_tw.sip.dialogs}: the L{DialogState} a leg pushes at
each step of its life, and L{releaseDialog} ending such a dialog from a new
stack that never knew it (what recovery does after a crash).
"""

from __future__ import annotations

from dataclasses import replace

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from callback_tw.sip.dialogs import DialogState, releaseDialog
from callback_tw.sip.routing import Route
from callback_tw.sip.sdp import SdpSession
from tests.siphelpers import (
    FAR_ROUTE,
    FarEnd,
    RecordingListener,
    farSdp,
    headerOf,
    runUntil,
    startStack,
)

#: two proxies on the path of the 2xx, nearest to us last (as received).
RECORD_ROUTE = "Record-Route: <sip:127.0.0.1:5097;lr>, <sip:127.0.0.1:5098;lr>"


def withHeader(message: str, line: str) -> str:
    """C{message} with one more header line after its first line."""
    first, rest = message.split("\r\n", 1)
    return f"{first}\r\n{line}\r\n{rest}"


def headersOf(message: str, name: str) -> list[str]:
    """Every value of header C{name}, one per line or comma-separated."""
    head = message.split("\r\n\r\n", 1)[0]
    values = []
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name:
            values += [v.strip() for v in value.split(",")]
    return values


def cseqOf(message: str) -> int:
    return int(headerOf(message, "cseq").split()[0])


def branchOf(message: str) -> str:
    via = headerOf(message, "via")
    return via.split("branch=")[1].split(";")[0]


def tagOf(value: str) -> str | None:
    return value.split(";tag=")[1].split(";")[0] if ";tag=" in value else None


class OrderListener(RecordingListener):
    """Records dialog states among the other events, to check their order."""

    def legDialogChanged(self, leg, state) -> None:
        super().legDialogChanged(leg, state)
        self.events.append(("dialog", str(state.state)))


class DialogStateTests(SynchronousTestCase):
    """The L{DialogState} a leg pushes to its owner."""

    def setUp(self) -> None:
        self.clock, self.stack = startStack(self)
        self.listener = OrderListener()
        self.far = FarEnd()
        self.offer = SdpSession("127.0.0.1").offer("127.0.0.1", 40000)

    def dial(self, route: Route = FAR_ROUTE) -> str:
        self.leg = self.stack.dial("100", route, self.offer, self.listener, 60, "t")
        invite = self.sent("INVITE")[0].data
        self.clock.settle()
        return invite

    def sent(self, method: str):
        return [s for s in self.clock.sent if s.method == method]

    def test_trying(self) -> None:
        """
        Once the INVITE is sent the owner has what a CANCEL needs: the
        INVITE's Call-ID, From tag, branch, CSeq, Request-URI and where it
        went.
        """
        invite = self.dial()
        (state,) = self.listener.dialogs
        self.assertEqual(state.state, "trying")
        self.assertEqual(state.callId, headerOf(invite, "call-id"))
        self.assertEqual(state.localTag, tagOf(headerOf(invite, "from")))
        self.assertEqual(state.inviteBranch, branchOf(invite))
        self.assertEqual(state.inviteCSeq, cseqOf(invite))
        self.assertEqual(state.nextCSeq, cseqOf(invite) + 1)
        self.assertEqual(state.remoteTarget, "sip:100@127.0.0.1:5099")
        self.assertEqual(state.localURI, "sip:1000@127.0.0.1")
        self.assertEqual(state.remoteURI, "sip:100@127.0.0.1")
        self.assertEqual(
            (state.remoteTag, state.routeSet, state.destination, state.viaProvider),
            (None, (), "127.0.0.1:5099", False),
        )
        self.assertEqual(self.leg.dialogState(), state)

    def test_ringing(self) -> None:
        """
        An untagged 100 changes nothing; the first tagged 180 brings the
        remote tag and the ringing state.
        """
        invite = self.dial()
        self.clock.deliver(
            self.far.response(invite, 100, "Trying").replace(";tag=far1", "")
        )
        self.clock.settle()
        self.assertEqual(len(self.listener.dialogs), 1)
        self.clock.deliver(self.far.response(invite, 180, "Ringing"))
        self.clock.settle()
        trying, ringing = self.listener.dialogs
        self.assertEqual((ringing.state, ringing.remoteTag), ("ringing", "far1"))
        self.assertEqual(replace(ringing, state="trying", remoteTag=None), trying)

    def test_answered(self) -> None:
        """
        The 2xx brings the remote target (its Contact) and the route set
        (its Record-Route, reversed); requests then go to the first route.
        """
        invite = self.dial()
        ok = self.far.response(invite, 200, "OK", farSdp())
        self.clock.deliver(withHeader(ok, RECORD_ROUTE))
        self.clock.settle()
        state = self.listener.dialogs[-1]
        self.assertEqual(state.state, "answered")
        self.assertEqual(state.remoteTarget, "sip:127.0.0.1:5099;transport=UDP")
        self.assertEqual(
            state.routeSet,
            ("<sip:127.0.0.1:5098;lr>", "<sip:127.0.0.1:5097;lr>"),
        )
        self.assertEqual(state.destination, "127.0.0.1:5098")
        self.assertEqual(state.nextCSeq, cseqOf(invite) + 1)
        self.assertEqual(
            self.listener.events,
            [("dialog", "trying"), ("answered", farSdp()), ("dialog", "answered")],
        )

    def test_reInviteMovesCSeq(self) -> None:
        """A re-INVITE of ours takes a CSeq: the owner hears the next one."""
        invite = self.dial()
        self.clock.deliver(self.far.response(invite, 200, "OK", farSdp()))
        self.clock.settle()
        before = self.listener.dialogs[-1]
        self.leg.reInvite(SdpSession("127.0.0.1").offer("127.0.0.1", 41000))
        self.clock.settle()
        after = self.listener.dialogs[-1]
        self.assertEqual(after, replace(before, nextCSeq=before.nextCSeq + 1))
        self.assertEqual(cseqOf(self.sent("INVITE")[-1].data), before.nextCSeq)

    def test_endedBeforeLegEnded(self) -> None:
        """
        Hanging up pushes the ended state (with the BYE's CSeq taken) before
        C{legEnded}, so an owner that detaches on the end still gets it.
        """
        invite = self.dial()
        self.clock.deliver(self.far.response(invite, 200, "OK", farSdp()))
        self.clock.settle()
        self.leg.hangUp()
        self.clock.settle()
        kinds = [event[:1] for event in self.listener.events[-2:]]
        self.assertEqual(kinds, [("dialog",), ("ended",)])
        self.assertEqual(self.listener.events[-2], ("dialog", "ended"))
        ended = self.listener.dialogs[-1]
        self.assertEqual(ended.nextCSeq, cseqOf(self.sent("BYE")[0].data) + 1)

    def test_abandon(self) -> None:
        """
        An abandoned leg (a crash, as far as the far end can tell) sends
        nothing, tells its owner nothing more, and leaves no timer of its
        own; its last dialog state is still readable.
        """
        invite = self.dial()
        self.clock.deliver(self.far.response(invite, 180, "Ringing"))
        self.leg.abandon()
        sent = len(self.clock.sent)
        events = list(self.listener.events)
        self.clock.settle()
        self.assertEqual((len(self.clock.sent), self.listener.events), (sent, events))
        self.assertEqual(self.leg.dialogState().callId, headerOf(invite, "call-id"))
        self.assertNotIn(
            self.leg,
            [getattr(c.func, "__self__", None) for c in self.clock.getDelayedCalls()],
        )

    def test_viaProvider(self) -> None:
        """A leg through an outbound proxy says so, and goes there."""
        route = Route(
            ("sip.example.net", 5060), "1000", "line", None, ("127.0.0.1", 5096)
        )
        self.dial(route)
        (state,) = self.listener.dialogs
        self.assertEqual(
            (state.viaProvider, state.destination), (True, "127.0.0.1:5096")
        )
        self.assertEqual(state.remoteTarget, "sip:100@sip.example.net:5060")


class ReleaseTests(SynchronousTestCase):
    """
    L{releaseDialog} on a new stack, with the dialog state a leg pushed on
    the stack before it (stopped without a word to the far end).
    """

    def setUp(self) -> None:
        self.clock, self.stack = startStack(self)
        self.far = FarEnd()
        self.listener = RecordingListener()
        offer = SdpSession("127.0.0.1").offer("127.0.0.1", 40000)
        self.leg = self.stack.dial("100", FAR_ROUTE, offer, self.listener, 60, "t")
        self.invite = self.clock.sent[0].data

    def crash(self) -> DialogState:
        """The old stack dies; a new one starts. Return the last state pushed."""
        self.clock.settle()
        state = self.listener.dialogs[-1]
        self.leg.abandon()
        self.stack.stopService()
        self.clock, self.stack = startStack(self)
        return state

    def sent(self, method: str):
        return [s for s in self.clock.sent if s.method == method]

    def answeredState(self) -> DialogState:
        ok = self.far.response(self.invite, 200, "OK", farSdp())
        self.clock.deliver(withHeader(ok, RECORD_ROUTE))
        return self.crash()

    def test_bye(self) -> None:
        """
        An answered dialog gets a BYE in that dialog: R-URI the remote
        target, Route the route set, the stored tags and next CSeq, a
        Reason, sent to the first route; its 200 fires the Deferred.
        """
        state = self.answeredState()
        d = releaseDialog(self.stack, state, (500, "server restarted"))
        (bye,) = self.sent("BYE")
        self.assertEqual(bye.firstLine, "BYE sip:127.0.0.1:5099;transport=UDP SIP/2.0")
        self.assertEqual(bye.addr, ("127.0.0.1", 5098))
        self.assertEqual(
            headersOf(bye.data, "route"),
            ["<sip:127.0.0.1:5098;lr>", "<sip:127.0.0.1:5097;lr>"],
        )
        self.assertEqual(bye.header("call-id"), headerOf(self.invite, "call-id"))
        self.assertEqual(tagOf(bye.header("from")), state.localTag)
        self.assertEqual(tagOf(bye.header("to")), "far1")
        self.assertEqual(bye.header("cseq"), f"{cseqOf(self.invite) + 1} BYE")
        reason = ";".join(p.strip() for p in bye.header("reason").split(";"))
        self.assertEqual(reason, 'SIP;cause=500;text="server restarted"')
        self.assertNoResult(d)
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.clock.deliver(self.far.response(bye.data, 200, "OK"))
        self.clock.settle()
        self.assertEqual(self.successResultOf(d), 200)
        self.assertEqual(self.stack.pendingTransactions, 0)
        lines = [
            formatEvent(e)
            for e in observer
            if e.get("log_namespace") == "callback_tw.sip.dialogs._Release"
        ]
        self.assertEqual(lines, [f"{state.callId} (answered) released by BYE: 200 OK"])

    def test_byeRetransmittedThenTimeout(self) -> None:
        """
        A BYE nobody answers is retransmitted as usual (0.5 s doubling, at
        most 4 s apart) until the time limit; then the Deferred fires 408
        and nothing more is sent.
        """
        state = self.answeredState()
        d = releaseDialog(self.stack, state, (500, "server restarted"), timeout=8.0)
        start = self.clock.seconds()
        runUntil(self.clock, start + 8.0)
        times = [round(s.time - start, 1) for s in self.sent("BYE")]
        self.assertEqual(times, [0.0, 0.5, 1.5, 3.5, 7.5])
        self.assertEqual(self.successResultOf(d), 408)
        self.assertEqual(self.stack.pendingTransactions, 0)
        self.clock.advance(30)
        self.assertEqual(len(self.sent("BYE")), 5)

    def test_bye481(self) -> None:
        """A far end that no longer knows the dialog answers 481: done."""
        state = self.answeredState()
        d = releaseDialog(self.stack, state, (500, "server restarted"))
        bye = self.sent("BYE")[0]
        self.clock.deliver(
            self.far.response(bye.data, 481, "Call/Transaction Does Not Exist")
        )
        self.clock.settle()
        self.assertEqual(self.successResultOf(d), 481)

    def ringingState(self) -> DialogState:
        self.clock.deliver(self.far.response(self.invite, 180, "Ringing"))
        return self.crash()

    def test_cancel(self) -> None:
        """
        A ringing dialog gets a CANCEL with the INVITE's Request-URI,
        Call-ID, From, To, CSeq number and Via branch; the 487 to the old
        INVITE is ACKed with the same branch, and fires the Deferred.
        """
        state = self.ringingState()
        d = releaseDialog(self.stack, state, (500, "server restarted"))
        (cancel,) = self.sent("CANCEL")
        self.assertEqual(cancel.firstLine, "CANCEL sip:100@127.0.0.1:5099 SIP/2.0")
        self.assertEqual(cancel.addr, ("127.0.0.1", 5099))
        self.assertEqual(branchOf(cancel.data), branchOf(self.invite))
        self.assertEqual(cancel.header("cseq"), f"{cseqOf(self.invite)} CANCEL")
        for name in ("call-id", "from", "to"):
            self.assertEqual(cancel.header(name), headerOf(self.invite, name))
        self.assertIn("cause=500", cancel.header("reason"))
        self.clock.deliver(self.far.response(cancel.data, 200, "OK"))
        self.clock.settle()
        self.assertNoResult(d)
        self.clock.deliver(self.far.response(self.invite, 487, "Request Terminated"))
        self.clock.settle()
        (ack,) = self.sent("ACK")
        self.assertEqual(ack.firstLine, "ACK sip:100@127.0.0.1:5099 SIP/2.0")
        self.assertEqual(branchOf(ack.data), branchOf(self.invite))
        self.assertEqual(ack.header("cseq"), f"{cseqOf(self.invite)} ACK")
        self.assertEqual(tagOf(ack.header("to")), "far1")
        self.assertEqual(self.successResultOf(d), 487)
        self.assertEqual(self.stack.pendingTransactions, 0)

    def test_cancelRetransmittedThenTimeout(self) -> None:
        """
        A CANCEL nobody answers is retransmitted like any non-INVITE
        request; at the time limit the Deferred fires 408 and the old
        INVITE's transaction is gone too.
        """
        state = self.ringingState()
        d = releaseDialog(self.stack, state, (500, "server restarted"), timeout=8.0)
        start = self.clock.seconds()
        runUntil(self.clock, start + 8.0)
        times = [round(s.time - start, 1) for s in self.sent("CANCEL")]
        self.assertEqual(times, [0.0, 0.5, 1.5, 3.5, 7.5])
        self.assertEqual(self.successResultOf(d), 408)
        self.assertEqual(self.stack.pendingTransactions, 0)

    def test_cancelWhileTrying(self) -> None:
        """A dialog that had no response yet gets a CANCEL all the same."""
        state = self.crash()
        self.assertEqual(state.state, "trying")
        d = releaseDialog(self.stack, state, (500, "server restarted"))
        (cancel,) = self.sent("CANCEL")
        self.assertEqual(branchOf(cancel.data), branchOf(self.invite))
        self.clock.deliver(self.far.response(cancel.data, 200, "OK"))
        self.clock.deliver(self.far.response(self.invite, 487, "Request Terminated"))
        self.clock.settle()
        self.assertEqual(self.successResultOf(d), 487)

    def test_answerRacesCancel(self) -> None:
        """
        A 2xx to the old INVITE that crosses the CANCEL is ACKed (new
        branch, to its Contact) and the dialog it made gets a BYE; the
        BYE's 200 fires the Deferred.
        """
        state = self.ringingState()
        d = releaseDialog(self.stack, state, (500, "server restarted"))
        cancel = self.sent("CANCEL")[0]
        self.clock.deliver(self.far.response(cancel.data, 200, "OK"))
        ok = self.far.response(self.invite, 200, "OK", farSdp())
        self.clock.deliver(ok.replace(":5099;transport=UDP", ":5095"))
        self.clock.settle()
        (ack,) = self.sent("ACK")
        (bye,) = self.sent("BYE")
        self.assertEqual(self.clock.sent.index(ack) + 1, self.clock.sent.index(bye))
        self.assertNotEqual(branchOf(ack.data), branchOf(self.invite))
        self.assertEqual(ack.firstLine, "ACK sip:127.0.0.1:5095 SIP/2.0")
        self.assertEqual(bye.firstLine, "BYE sip:127.0.0.1:5095 SIP/2.0")
        self.assertEqual(bye.addr, ("127.0.0.1", 5095))
        self.assertEqual(tagOf(bye.header("to")), "far1")
        self.assertEqual(bye.header("cseq"), f"{cseqOf(self.invite) + 1} BYE")
        self.assertNoResult(d)
        self.clock.deliver(self.far.response(bye.data, 200, "OK"))
        self.clock.settle()
        self.assertEqual(self.successResultOf(d), 200)

    def test_cancel481(self) -> None:
        """
        A CANCEL answered 481 (the far end has forgotten the INVITE) is
        done; a late response to the old INVITE is then ignored.
        """
        state = self.ringingState()
        d = releaseDialog(self.stack, state, (500, "server restarted"))
        cancel = self.sent("CANCEL")[0]
        self.clock.deliver(
            self.far.response(cancel.data, 481, "Call/Transaction Does Not Exist")
        )
        self.clock.settle()
        self.assertEqual(self.successResultOf(d), 481)
        self.assertEqual(self.stack.pendingTransactions, 0)
        self.clock.deliver(self.far.response(self.invite, 487, "Request Terminated"))
        self.clock.settle()
        self.assertEqual(self.sent("ACK"), [])

    def test_releasedTwiceAtOnce(self) -> None:
        """
        A second release of a dialog whose CANCEL is still running sends
        nothing and fires 500 at once, with one warning; the first goes on.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        state = self.ringingState()
        first = releaseDialog(self.stack, state, (500, "server restarted"))
        second = releaseDialog(self.stack, state, (500, "server restarted"))
        self.assertEqual(self.successResultOf(second), 500)
        self.assertEqual(len(self.sent("CANCEL")), 1)
        (warning,) = [e for e in observer if e["log_level"] == LogLevel.warn]
        self.assertIn("not sent", formatEvent(warning))
        self.assertNoResult(first)
        self.clock.deliver(self.far.response(self.sent("CANCEL")[0].data, 200, "OK"))
        self.clock.deliver(self.far.response(self.invite, 487, "Request Terminated"))
        self.clock.settle()
        self.assertEqual(self.successResultOf(first), 487)

    def test_ended(self) -> None:
        """An ended dialog needs nothing: nothing is sent, the Deferred fires 0."""
        state = replace(self.crash(), state="ended")
        d = releaseDialog(self.stack, state, (500, "server restarted"))
        self.assertEqual(self.successResultOf(d), 0)
        self.assertEqual(self.clock.sent, [])

    def test_storedStrings(self) -> None:
        """A state read back from the store (plain strings) works the same."""
        state = replace(self.answeredState(), state="answered")
        d = releaseDialog(self.stack, state, (503, "shutting down"))
        bye = self.sent("BYE")[0]
        self.assertIn("cause=503", bye.header("reason"))
        self.clock.deliver(self.far.response(bye.data, 200, "OK"))
        self.clock.settle()
        self.assertEqual(self.successResultOf(d), 200)
