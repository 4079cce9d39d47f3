"""
A finished callback must be freed by reference counting alone: the server
runs the cycle collector rarely (L{callback_tw.service.tuneGarbageCollector}),
so anything left in a reference cycle would stay until the next full
collection. These tests run with the collector disabled.
"""

from __future__ import annotations

import gc
import weakref

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from callback_tw.callback.call import CallbackCall
from callback_tw.sip.sdp import SdpSession
from tests.siphelpers import (
    FAR_ROUTE,
    FarEnd,
    RecordingListener,
    farSdp,
    runUntil,
    startStack,
)
from tests.test_callback_call import (
    PCMU1,
    PCMU2,
    FakeDialer,
    FakeLeg,
    FakeMedia,
    request,
)


class _Detaching(FakeLeg):
    """A fake leg that keeps the detach contract of the real one."""

    def detach(self) -> None:
        self.listener = None


class _DetachingDialer(FakeDialer):
    def dial(self, user, offer, listener, name="", caller=None):
        leg = _Detaching(user, offer, listener, name)
        self.legs.append(leg)
        return leg


class NoCyclesTests(SynchronousTestCase):
    def setUp(self) -> None:
        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)

    def test_finishedCallbackFreed(self) -> None:
        """
        A callback that ran to the end is freed as soon as nothing refers to
        it: its legs are detached, so they do not keep it alive.
        """
        clock = Clock()
        dialer = _DetachingDialer()
        call = CallbackCall(request(), dialer, FakeMedia(), 60, clock)
        call.start()
        dialer.legs[0].answer(PCMU1)
        dialer.legs[1].answer(PCMU2)
        dialer.legs[0].updates[0][1].callback(PCMU1)
        dialer.legs[1].updates[0][1].callback(PCMU2)
        dialer.legs[1].hangUpRemote()
        self.successResultOf(call.finished)
        ref = weakref.ref(call)
        del call
        self.assertIsNone(ref())

    def test_deadLegFreed(self) -> None:
        """
        A leg and its sippy UA are freed once sippy is done with the dialog
        (32 s after the BYE), including after a request from the far end
        (sippy hangs a closure cycle on each request it hands a UA).
        """
        clock, stack = startStack(self)
        far = FarEnd()
        offer = SdpSession("127.0.0.1").offer("127.0.0.1", 40000)
        leg = stack.dial("100", FAR_ROUTE, offer, RecordingListener(), 60, "t/leg1")
        invite = clock.sent[0].data
        clock.deliver(far.response(invite, 200, "OK", farSdp()))
        clock.settle()
        clock.deliver(
            far.inDialog("BYE", invite, 7, f"sip:1000@127.0.0.1:{stack.port}")
        )
        clock.settle()
        self.assertEqual(leg.state, "ended")
        runUntil(clock, clock.seconds() + 40)
        legRef, uaRef = weakref.ref(leg), weakref.ref(leg._ua)
        del leg
        self.assertIsNone(legRef())
        self.assertIsNone(uaRef())
