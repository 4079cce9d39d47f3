"""
Tests for L{callback_tw.sip.leg}: one outgoing leg, over sippy, with the
far end played by the test through a fake UDP port and a Clock.
"""

from __future__ import annotations

import gc
import weakref

from sippy.UA import UA
from twisted.trial.unittest import SynchronousTestCase

from callback_tw.sip.leg import GLARE_BACKOFF, PARK_AFTER, ReInviteFailed
from callback_tw.sip.sdp import SdpSession
from tests.siphelpers import (
    FAR_ROUTE,
    FarEnd,
    RecordingListener,
    bodyOf,
    farSdp,
    headerOf,
    runUntil,
    startStack,
)


def reasonOf(sent) -> str:
    """The Reason header with the optional white space around ';' removed."""
    return ";".join(part.strip() for part in sent.header("reason").split(";"))


class LegTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock, self.stack = startStack(self)
        self.listener = RecordingListener()
        self.far = FarEnd()
        self.offer = SdpSession("127.0.0.1").offer("127.0.0.1", 40000)
        self.leg = self.stack.dial(
            "100", FAR_ROUTE, self.offer, self.listener, 60, "t/leg1"
        )
        self.invite = self.sent("INVITE")[0].data
        #: where the far end sends in-dialog requests: our Contact
        self.target = f"sip:1000@127.0.0.1:{self.stack.port}"

    def sent(self, method: str):
        return [s for s in self.clock.sent if s.method == method]

    def answer(self) -> None:
        self.clock.deliver(self.far.response(self.invite, 180, "Ringing"))
        self.clock.deliver(self.far.response(self.invite, 200, "OK", farSdp()))
        self.clock.settle()

    def test_invite(self) -> None:
        """
        The INVITE goes to the target with the user in the R-URI, the
        caller in From, a Contact without a display name, and our offer.
        """
        first = self.invite.split("\r\n", 1)[0]
        self.assertEqual(first, "INVITE sip:100@127.0.0.1:5099 SIP/2.0")
        self.assertIn("<sip:1000@127.0.0.1>", headerOf(self.invite, "from"))
        self.assertEqual(
            headerOf(self.invite, "contact"), f"<sip:1000@127.0.0.1:{self.stack.port}>"
        )
        self.assertEqual(bodyOf(self.invite), self.offer)
        self.assertEqual(self.sent("INVITE")[0].addr, ("127.0.0.1", 5099))

    def test_answered(self) -> None:
        """
        180 then 200: the owner hears ringing, then the answer with its SDP;
        ACK sent.
        """
        self.answer()
        self.assertEqual(self.listener.events, [("ringing",), ("answered", farSdp())])
        self.assertEqual(len(self.sent("ACK")), 1)
        self.assertEqual(self.leg.state, "answered")

    def test_busy(self) -> None:
        """A 486 ends the leg: code 486, by the far end, not answered."""
        self.clock.deliver(self.far.response(self.invite, 486, "Busy Here"))
        self.clock.settle()
        ((kind, end),) = self.listener.events
        self.assertEqual(
            (kind, end.code, end.byRemote, end.answered), ("ended", 486, True, False)
        )

    def test_cancelWithReason(self) -> None:
        """Hanging up a ringing leg sends CANCEL, carrying the Reason given."""
        self.clock.deliver(self.far.response(self.invite, 180, "Ringing"))
        self.clock.settle()
        self.leg.hangUp(486, "Busy Here")
        cancel = self.sent("CANCEL")[0]
        self.assertEqual(reasonOf(cancel), 'SIP;cause=486;text="Busy Here"')
        self.clock.settle()
        self.assertEqual(self.listener.events[-1][1].code, 487)

    def test_byeWithReason(self) -> None:
        """Hanging up an answered leg sends BYE with the Reason header (RFC 3326)."""
        self.answer()
        self.leg.hangUp(486, "Busy Here")
        bye = self.sent("BYE")[0]
        self.assertEqual(reasonOf(bye), 'SIP;cause=486;text="Busy Here"')
        # The Contact said transport=UDP (upper case): sippy would raise here.
        self.assertEqual(bye.addr, ("127.0.0.1", 5099))
        self.clock.settle()
        end = self.listener.events[-1][1]
        self.assertEqual((end.byRemote, end.answered), (False, True))

    def test_remoteBye(self) -> None:
        """A BYE from the far end is answered 200 and ends the leg as remote."""
        self.answer()
        bye = self.far.inDialog("BYE", self.invite, 1, self.target)
        self.clock.deliver(bye)
        self.clock.settle()
        self.assertTrue(self.clock.sent[-1].data.startswith("SIP/2.0 200 OK"))
        end = self.listener.events[-1][1]
        self.assertEqual((end.byRemote, end.answered), (True, True))

    def test_reinviteAnswered(self) -> None:
        """update() sends a re-INVITE with the new offer and fires with the answer."""
        self.answer()
        newOffer = SdpSession("127.0.0.1").offer("127.0.0.1", 41000)
        d = self.leg.reInvite(newOffer)
        reinvite = self.sent("INVITE")[-1].data
        self.assertEqual(bodyOf(reinvite), newOffer)
        self.clock.deliver(self.far.response(reinvite, 200, "OK", farSdp(version=2)))
        self.clock.settle()
        self.assertEqual(self.successResultOf(d), farSdp(version=2))

    def test_glareRetried(self) -> None:
        """
        A re-INVITE answered 491 is sent again after the RFC 3261 back-off
        (2.1 to 4 s for the Call-ID owner), and the retry's answer fires.
        """
        self.answer()
        d = self.leg.reInvite(SdpSession("127.0.0.1").offer("127.0.0.1", 41000))
        first = self.sent("INVITE")[-1]
        self.clock.deliver(self.far.response(first.data, 491, "Request Pending"))
        self.clock.settle()
        self.assertNoResult(d)
        self.clock.advance(GLARE_BACKOFF[0] - 0.01)
        self.assertEqual(len(self.sent("INVITE")), 2)
        self.clock.advance(GLARE_BACKOFF[1] - GLARE_BACKOFF[0] + 0.02)
        retry = self.sent("INVITE")[-1]
        self.assertEqual(len(self.sent("INVITE")), 3)
        self.assertNotEqual(retry.header("cseq"), first.header("cseq"))
        self.clock.deliver(self.far.response(retry.data, 200, "OK", farSdp(version=2)))
        self.clock.settle()
        self.assertEqual(self.successResultOf(d), farSdp(version=2))

    def test_reinviteRefused(self) -> None:
        """A re-INVITE answered 488 fails the update with that status."""
        self.answer()
        d = self.leg.reInvite(SdpSession("127.0.0.1").offer("127.0.0.1", 41000))
        self.clock.deliver(
            self.far.response(self.sent("INVITE")[-1].data, 488, "Not Acceptable Here")
        )
        self.clock.settle()
        self.assertEqual(self.failureResultOf(d, ReInviteFailed).value.code, 488)
        self.assertEqual(self.leg.state, "answered")

    def test_remoteReinvite(self) -> None:
        """
        A re-INVITE from the far end is put to the owner, and its answer is
        sent in the 200.
        """
        self.answer()
        self.listener.answerWith = (
            "v=0\r\no=x 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
            "t=0 0\r\nm=audio 7000 RTP/AVP 0\r\n"
        )
        reinvite = self.far.inDialog(
            "INVITE", self.invite, 2, self.target, sdp=farSdp(port=6100, version=3)
        )
        self.clock.deliver(reinvite)
        self.clock.settle()
        self.assertEqual(
            self.listener.events[-1], ("update", farSdp(port=6100, version=3))
        )
        ok = [s for s in self.clock.sent if s.firstLine == "SIP/2.0 200 OK"][-1]
        self.assertEqual(bodyOf(ok.data), self.listener.answerWith)

    def test_updateGets501(self) -> None:
        """
        An in-dialog method the UA has no handler for (UPDATE) is answered
        501 Not Implemented, not left unanswered; the call goes on.
        """
        self.answer()
        update = self.far.inDialog("UPDATE", self.invite, 2, self.target)
        self.clock.deliver(update)
        self.clock.settle()
        answer = self.clock.sent[-1]
        self.assertEqual(answer.firstLine, "SIP/2.0 501 Not Implemented")
        self.assertEqual(answer.header("cseq"), "2 UPDATE")
        self.assertEqual(self.leg.state, "answered")
        # Still answered: a BYE from the far end ends it normally.
        self.clock.deliver(
            update.replace("UPDATE", "BYE").replace("CSeq: 2", "CSeq: 3")
        )
        self.clock.settle()
        self.assertTrue(self.clock.sent[-1].firstLine.startswith("SIP/2.0 200 OK"))
        self.assertEqual(self.listener.events[-1][0], "ended")


class PendingReInviteTests(SynchronousTestCase):
    """
    A re-INVITE of ours still unanswered when the leg is hung up: after the
    BYE nothing more of that re-INVITE goes on the wire.
    """

    def setUp(self) -> None:
        self.clock, self.stack = startStack(self)
        self.listener = RecordingListener()
        self.far = FarEnd()
        offer = SdpSession("127.0.0.1").offer("127.0.0.1", 40000)
        self.leg = self.stack.dial("100", FAR_ROUTE, offer, self.listener, 60, "t/l")
        invite = self.sent("INVITE")[0].data
        self.clock.deliver(self.far.response(invite, 200, "OK", farSdp()))
        self.clock.settle()
        self.reInvite = self.leg.reInvite(
            SdpSession("127.0.0.1").offer("127.0.0.1", 41000)
        )
        self.assertEqual(len(self.sent("INVITE")), 2)
        self.addCleanup(self.failureResultOf, self.reInvite, ReInviteFailed)

    def sent(self, method: str):
        return [s for s in self.clock.sent if s.method == method]

    def test_noRetransmissionAfterBye(self) -> None:
        """
        The re-INVITE is retransmitted while the far end is silent (0.5 s,
        then 1 s later); once the leg sends its BYE, the re-INVITE is never
        sent again, while the BYE itself is still retransmitted until
        answered; the re-INVITE's Deferred fails (checked at cleanup).
        """
        self.clock.advance(0.5)
        self.assertEqual(len(self.sent("INVITE")), 3)
        self.leg.hangUp(408, "Request Timeout")
        (bye,) = self.sent("BYE")
        self.clock.settle()
        self.assertEqual(self.leg.state, "ended")
        self.assertEqual(len(self.listener.ends), 1)
        for _ in range(64):
            self.clock.advance(0.5)
        invites = self.sent("INVITE")
        self.assertEqual(len(invites), 3, [s.time for s in invites])
        self.assertGreater(len(self.sent("BYE")), 1)
        self.assertEqual(self.sent("CANCEL"), [])

    def test_ringingReInviteCancelled(self) -> None:
        """
        A re-INVITE that had a provisional answer is CANCELled with the
        BYE (sippy's own behaviour, kept), and not retransmitted either.
        """
        reinvite = self.sent("INVITE")[-1].data
        self.clock.deliver(self.far.response(reinvite, 100, "Trying"))
        self.clock.settle()
        self.leg.hangUp()
        self.assertEqual(len(self.sent("BYE")), 1)
        self.assertEqual(len(self.sent("CANCEL")), 1)
        for _ in range(64):
            self.clock.advance(0.5)
        self.assertEqual(len(self.sent("INVITE")), 2)

    def test_lateAnswerToAbandonedReInvite(self) -> None:
        """
        The far end answers the abandoned re-INVITE after our BYE: nothing
        breaks, the leg stays ended and no re-INVITE is sent again.
        """
        reinvite = self.sent("INVITE")[-1].data
        self.leg.hangUp()
        self.clock.settle()
        self.clock.deliver(self.far.response(reinvite, 200, "OK", farSdp(version=2)))
        self.clock.settle()
        for _ in range(64):
            self.clock.advance(0.5)
        self.assertEqual(len(self.sent("INVITE")), 2)
        self.assertEqual(self.leg.state, "ended")
        self.assertEqual(len(self.listener.ends), 1)


class HeldLegTests(SynchronousTestCase):
    """
    What an answered leg keeps while it is held (for hours, by thousands):
    no copy of a SIP message, and it still works afterwards.
    """

    def setUp(self) -> None:
        self.clock, self.stack = startStack(self)
        self.listener = RecordingListener()
        self.far = FarEnd()
        offer = SdpSession("127.0.0.1").offer("127.0.0.1", 40000)
        self.leg = self.stack.dial("100", FAR_ROUTE, offer, self.listener, 60, "t/l")
        self.invite = [s for s in self.clock.sent if s.method == "INVITE"][0].data
        self.clock.deliver(self.far.response(self.invite, 200, "OK", farSdp()))
        self.clock.settle()
        d = self.leg.reInvite(SdpSession("127.0.0.1").offer("127.0.0.1", 41000))
        reinvite = [s for s in self.clock.sent if s.method == "INVITE"][-1].data
        self.clock.deliver(self.far.response(reinvite, 200, "OK", farSdp(version=2)))
        self.clock.settle()
        self.successResultOf(d)

    def reachable(self, root) -> list:
        """Every object reachable from C{root}, not entering modules or classes."""
        import gc
        import types

        seen, todo, found = set(), [root], []
        shared = (self.stack, self.clock, self.stack._tm, self.leg._globalConfig)
        seen.update(id(o) for o in shared)
        while todo:
            o = todo.pop()
            if id(o) in seen:
                continue
            if isinstance(o, (type, types.ModuleType, types.FunctionType)):
                continue
            seen.add(id(o))
            found.append(o)
            todo.extend(gc.get_referents(o))
        return found

    def test_noMessageKept(self) -> None:
        """
        After its INVITE and a re-INVITE were answered, the leg (its sippy
        UA included) holds no SIP request or response and no transaction.
        """
        from sippy.SipMsg import SipMsg
        from sippy.SipTransactionManager import SipTransaction

        kept = [
            type(o).__name__
            for o in self.reachable(self.leg)
            if isinstance(o, (SipMsg, SipTransaction))
        ]
        self.assertEqual(kept, [])

    def test_stillWorks(self) -> None:
        """
        The held leg still answers a re-INVITE from the far end, sends one
        of its own and hangs up with a BYE.
        """
        self.listener.answerWith = SdpSession("127.0.0.1").offer("127.0.0.1", 42000)
        target = f"sip:1000@127.0.0.1:{self.stack.port}"
        self.clock.deliver(
            self.far.inDialog("INVITE", self.invite, 5, target, farSdp(version=3))
        )
        self.clock.settle()
        ok = self.clock.sent[-1]
        self.assertTrue(ok.data.startswith("SIP/2.0 200 OK"), ok.data)
        d = self.leg.reInvite(SdpSession("127.0.0.1").offer("127.0.0.1", 43000))
        reinvite = [s for s in self.clock.sent if s.method == "INVITE"][-1].data
        self.clock.deliver(self.far.response(reinvite, 200, "OK", farSdp(version=4)))
        self.clock.settle()
        self.assertEqual(self.successResultOf(d), farSdp(version=4))
        self.leg.hangUp()
        self.assertEqual(len([s for s in self.clock.sent if s.method == "BYE"]), 1)


class ParkedLegTests(HeldLegTests):
    """
    A held leg after L{PARK_AFTER} seconds of quiet, when its sippy UA is
    let go: it keeps no UA, freed by reference counting alone, its dialog
    is unchanged, and it still answers, sends and hangs up like one whose
    UA was kept (the tests of L{HeldLegTests} run on it too).
    """

    def setUp(self) -> None:
        super().setUp()
        self.stateBefore = self.leg.dialogState()
        self.lastInvite = [s for s in self.clock.sent if s.method == "INVITE"][-1]
        ua = weakref.ref(self.leg._ua)
        gc.disable()
        self.addCleanup(gc.enable)
        runUntil(self.clock, self.clock.seconds() + PARK_AFTER + 1)
        self.sentBefore = len(self.clock.sent)
        self.assertIsNone(ua())

    def lastRequest(self, method: str):
        return [s for s in self.clock.sent if s.method == method][-1]

    def test_parked(self) -> None:
        """
        Parked, the leg reaches no sippy UA and sends nothing; its dialog
        state is the one it had before.
        """
        reached = [o for o in self.reachable(self.leg) if isinstance(o, UA)]
        self.assertEqual(reached, [])
        self.assertEqual(self.leg.dialogState(), self.stateBefore)
        self.assertEqual(len(self.clock.sent), self.sentBefore)

    def test_reInviteContinuesDialog(self) -> None:
        """
        A re-INVITE of the parked leg continues the dialog: the same R-URI,
        From, To, Call-ID, Contact and body headers as the last one, the
        next CSeq number; the dialog state then moves on by one CSeq.
        """
        d = self.leg.reInvite(SdpSession("127.0.0.1").offer("127.0.0.1", 43000))
        reinvite = self.lastRequest("INVITE")
        self.assertIsNot(reinvite, self.lastInvite)
        for name in ("from", "to", "call-id", "contact", "max-forwards"):
            self.assertEqual(reinvite.header(name), self.lastInvite.header(name))
        self.assertEqual(reinvite.firstLine, self.lastInvite.firstLine)
        self.assertEqual(reinvite.addr, self.lastInvite.addr)
        cseq = int(self.lastInvite.header("cseq").split()[0])
        self.assertEqual(reinvite.header("cseq"), f"{cseq + 1} INVITE")
        self.clock.deliver(self.far.response(reinvite.data, 200, "OK", farSdp(4)))
        self.clock.settle()
        self.assertEqual(self.successResultOf(d), farSdp(4))
        self.assertEqual(self.lastRequest("ACK").header("cseq"), f"{cseq + 1} ACK")
        self.assertEqual(self.leg.dialogState().nextCSeq, cseq + 2)

    def test_byeContinuesDialog(self) -> None:
        """
        Hanging up the parked leg sends one BYE in the dialog, with the
        next CSeq number, and ends the leg.
        """
        self.leg.hangUp()
        self.clock.settle()
        bye = self.lastRequest("BYE")
        for name in ("from", "to", "call-id"):
            self.assertEqual(bye.header(name), self.lastInvite.header(name))
        target = self.lastInvite.firstLine.split()[1]
        self.assertEqual(bye.firstLine, f"BYE {target} SIP/2.0")
        cseq = int(self.lastInvite.header("cseq").split()[0])
        self.assertEqual(bye.header("cseq"), f"{cseq + 1} BYE")
        self.assertEqual(self.leg.state, "ended")
        self.assertEqual(len([s for s in self.clock.sent if s.method == "BYE"]), 1)

    def test_farEndBye(self) -> None:
        """
        A BYE from the far end reaches the parked dialog: it gets 200 and
        the leg ends, hung up by the far end.
        """
        target = f"sip:1000@127.0.0.1:{self.stack.port}"
        self.clock.deliver(self.far.inDialog("BYE", self.invite, 9, target))
        self.clock.settle()
        ok = self.clock.sent[-1]
        self.assertTrue(ok.data.startswith("SIP/2.0 200 OK"), ok.data)
        self.assertEqual(headerOf(ok.data, "cseq"), "9 BYE")
        self.assertEqual(self.leg.state, "ended")
        self.assertEqual([end.byRemote for end in self.listener.ends], [True])

    def test_farEndOptions(self) -> None:
        """
        An in-dialog OPTIONS from the far end is answered 200 by the
        dialog (not as a stranger's request), and the leg stays up.
        """
        target = f"sip:1000@127.0.0.1:{self.stack.port}"
        self.clock.deliver(self.far.inDialog("OPTIONS", self.invite, 9, target))
        self.clock.settle()
        ok = self.clock.sent[-1]
        self.assertTrue(ok.data.startswith("SIP/2.0 200 OK"), ok.data)
        self.assertEqual(headerOf(ok.data, "cseq"), "9 OPTIONS")
        self.assertEqual(self.leg.state, "answered")

    def test_otherDialogNotWoken(self) -> None:
        """
        A request with the dialog's Call-ID but another tag is not the
        dialog's: it does not wake it and is refused as a stranger's.
        """
        target = f"sip:1000@127.0.0.1:{self.stack.port}"
        bye = self.far.inDialog("BYE", self.invite, 9, target).replace(
            ";tag=far1", ";tag=other"
        )
        self.clock.deliver(bye)
        self.clock.settle()
        self.assertTrue(self.clock.sent[-1].data.startswith("SIP/2.0 481"))
        self.assertEqual(self.leg.state, "answered")
        reached = [o for o in self.reachable(self.leg) if isinstance(o, UA)]
        self.assertEqual(reached, [])

    def test_parksAgain(self) -> None:
        """
        Woken by a request, the dialog is parked again after another
        L{PARK_AFTER} seconds of quiet, with its new state.
        """
        self.listener.answerWith = SdpSession("127.0.0.1").offer("127.0.0.1", 42000)
        target = f"sip:1000@127.0.0.1:{self.stack.port}"
        self.clock.deliver(
            self.far.inDialog("INVITE", self.invite, 5, target, farSdp(version=3))
        )
        self.clock.settle()
        self.clock.deliver(self.far.inDialog("ACK", self.invite, 5, target))
        self.clock.settle()
        state = self.leg.dialogState()
        self.assertEqual(self.leg.remoteSdp, farSdp(version=3))
        runUntil(self.clock, self.clock.seconds() + PARK_AFTER + 1)
        reached = [o for o in self.reachable(self.leg) if isinstance(o, UA)]
        self.assertEqual(reached, [])
        self.assertEqual(self.leg.dialogState(), state)

    def test_freedAfterEnd(self) -> None:
        """
        Hung up while parked, the leg and what it woke are freed by
        reference counting alone once sippy is done with the dialog (the
        collector is off in these tests).
        """
        self.leg.hangUp()
        bye = self.lastRequest("BYE")
        self.clock.deliver(self.far.response(bye.data, 200, "OK"))
        self.clock.settle()
        runUntil(self.clock, self.clock.seconds() + 40)
        legRef, uaRef = weakref.ref(self.leg), weakref.ref(self.leg._ua)
        del self.leg
        self.assertIsNone(legRef())
        self.assertIsNone(uaRef())
