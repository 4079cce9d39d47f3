"""
Tests for L{callback_tw.metrics}: what each count means, as a scrape shows it,
and the IIF protocol and the manager counting what happens to callbacks.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from callback_tw.callback.call import CallResult
from callback_tw.callback.errors import CallbackRefused
from callback_tw.iif.protocol import IIFProtocol
from callback_tw.metrics import CAUSES, CallbackMetrics, MeasuredDialer, causeWord
from tests.iifhelpers import PEER, FakeManager
from tests.metricshelpers import names, value
from tests.storehelpers import MemoryStore


class CauseWordTests(SynchronousTestCase):
    """
    L{causeWord} turns the free-text cause of a finished callback into one
    word of a small fixed set, so C{callback_ended_total} has few series.
    """

    def test_knownCauses(self) -> None:
        """
        Each cause the callback reports maps to its word.
        """
        cases = {
            "duration limit": "duration",
            "user1 hung up": "user1_hangup",
            "user2 hung up": "user2_hangup",
            "user1 busy (486 Busy Here)": "user1_busy",
            "user2 no answer (408 Request Timeout)": "user2_no_answer",
            "user2 not found (404 Not Found)": "user2_not_found",
            "user1 declined (603 Decline)": "user1_declined",
            "user1 failed (500 Server Internal Error)": "user1_failed",
            "cancelled by the application server": "cancelled",
            "server shutting down": "shutdown",
            "unusable SDP: no audio": "media",
            "user1 and user2 share no codec: join not attempted": "media",
            "join failed: 488 Not Acceptable Here": "join_failed",
            "cannot call user2: boom": "not_placed",
            "no free RTP port ([media] rtp_ports exhausted)": "not_placed",
        }
        for cause, word in cases.items():
            self.assertEqual(causeWord(cause), word, cause)
            self.assertIn(word, CAUSES)

    def test_unknownCause(self) -> None:
        """
        A cause it does not know (free text from anywhere) is C{other}, never
        the text itself.
        """
        self.assertEqual(causeWord("user1 busy because <script>"), "other")
        self.assertEqual(causeWord(""), "other")


class CallbackMetricsTests(SynchronousTestCase):
    """
    L{CallbackMetrics} as a scrape of its registry shows it.
    """

    def test_everyMetricExported(self) -> None:
        """
        A fresh registry exports every metric the issue lists, and nothing of
        the process or platform collectors of prometheus_client's global one.
        """
        metrics = CallbackMetrics()
        exported = names(metrics.exposition())
        for name in (
            "callback_active",
            "callback_ack_seconds_count",
            "callback_talk_seconds_count",
            "callback_rtp_streams",
            "callback_reactor_lag_seconds",
            "callback_external_line_registered",
        ):
            self.assertIn(name, exported)
        self.assertFalse([n for n in exported if n.startswith("process_")])

    def test_registriesApart(self) -> None:
        """
        Two services' metrics do not share counts (each has its registry).
        """
        first, second = CallbackMetrics(), CallbackMetrics()
        first.requests.labels(peer="as1", outcome="ok").inc()
        self.assertEqual(
            value(
                first.exposition(), "callback_requests_total", peer="as1", outcome="ok"
            ),
            1.0,
        )
        self.assertIsNone(
            value(
                second.exposition(), "callback_requests_total", peer="as1", outcome="ok"
            )
        )

    def test_callbackFinished(self) -> None:
        """
        A finished callback counts its cause word, its talk time and each
        leg's final status.
        """
        metrics = CallbackMetrics()
        metrics.callbackFinished(
            CallResult(42, "user2 hung up", {"leg1Status": 200, "leg2Status": 200})
        )
        metrics.callbackFinished(
            CallResult(
                0, "user2 busy (486 Busy Here)", {"leg1Status": 200, "leg2Status": 486}
            )
        )
        text = metrics.exposition()
        self.assertEqual(value(text, "callback_ended_total", cause="user2_hangup"), 1.0)
        self.assertEqual(value(text, "callback_ended_total", cause="user2_busy"), 1.0)
        self.assertEqual(value(text, "callback_talk_seconds_count"), 1.0)
        self.assertEqual(value(text, "callback_talk_seconds_sum"), 42.0)
        leg = "callback_leg_responses_total"
        self.assertEqual(value(text, leg, leg="leg1", status="200"), 2.0)
        self.assertEqual(value(text, leg, leg="leg2", status="200"), 1.0)
        self.assertEqual(value(text, leg, leg="leg2", status="486"), 1.0)

    def test_levelsReadAtScrape(self) -> None:
        """
        The levels are read from their owners when scraped: the value of the
        moment, no stale copy.
        """
        metrics = CallbackMetrics()
        level = {"active": 1, "registered": True}
        metrics.watch(
            active=lambda: level["active"],
            rtpStreams=lambda: 3,
            reactorLag=lambda: 0.25,
            lineRegistered=lambda: level["registered"],
        )
        text = metrics.exposition()
        self.assertEqual(value(text, "callback_active"), 1.0)
        self.assertEqual(value(text, "callback_rtp_streams"), 3.0)
        self.assertEqual(value(text, "callback_reactor_lag_seconds"), 0.25)
        self.assertEqual(value(text, "callback_external_line_registered"), 1.0)
        level.update(active=0, registered=False)
        text = metrics.exposition()
        self.assertEqual(value(text, "callback_active"), 0.0)
        self.assertEqual(value(text, "callback_external_line_registered"), 0.0)


class _Listener:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def legRinging(self, leg: Any) -> None:
        self.events.append(("ringing", leg))

    def legAnswered(self, leg: Any, sdp: str) -> None:
        self.events.append(("answered", leg))

    def legEnded(self, leg: Any, end: Any) -> None:
        self.events.append(("ended", leg))


class _Dialer:
    sdpHost = "192.0.2.1"

    def __init__(self) -> None:
        self.listeners: list[Any] = []

    def dial(
        self,
        user: str,
        offer: str,
        listener: Any,
        name: str = "",
        caller: str | None = None,
    ) -> Any:
        self.listeners.append(listener)
        return f"leg of {user}"


class MeasuredDialerTests(SynchronousTestCase):
    """
    L{MeasuredDialer} times each leg's first sign of life and passes every
    event on unchanged.
    """

    def test_postDialDelay(self) -> None:
        """
        The delay from the INVITE to the first ringing is observed once per
        leg, labelled by the leg; later events are not observed again, and
        every event reaches the callback with the leg itself.
        """
        clock, metrics, dialer, listener = (
            Clock(),
            CallbackMetrics(),
            _Dialer(),
            _Listener(),
        )
        measured = MeasuredDialer(dialer, metrics, clock)
        self.assertEqual(measured.sdpHost, "192.0.2.1")
        leg = measured.dial("100", "v=0", listener, "7/leg2")
        self.assertEqual(leg, "leg of 100")
        clock.advance(1.5)
        dialer.listeners[0].legRinging(leg)
        clock.advance(3)
        dialer.listeners[0].legAnswered(leg, "v=0")
        dialer.listeners[0].legEnded(leg, None)
        self.assertEqual(
            listener.events, [("ringing", leg), ("answered", leg), ("ended", leg)]
        )
        text = metrics.exposition()
        name = "callback_post_dial_delay_seconds"
        self.assertEqual(value(text, name + "_count", leg="leg2"), 1.0)
        self.assertEqual(value(text, name + "_sum", leg="leg2"), 1.5)


class _Manager(FakeManager):
    """A fake manager that refuses on admission when told to."""

    admitError: Exception | None = None

    def admit(self, request: Any) -> None:
        if self.admitError is not None:
            raise self.admitError


class IIFCountingTests(SynchronousTestCase):
    """
    The IIF protocol counts each command of a peer by outcome, and the ACK's
    latency of each new REQUEST.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.metrics = CallbackMetrics()
        self.manager = _Manager()
        self.store = MemoryStore(clock=self.clock)
        self.protocol = IIFProtocol(
            self.manager,
            [PEER],
            86400,
            reactor=self.clock,
            store=self.store,
            metrics=self.metrics,
        )
        from twisted.internet.testing import FakeDatagramTransport

        self.transport = FakeDatagramTransport()
        self.protocol.makeConnection(self.transport)

    def count(self, outcome: str) -> float | None:
        peer = self.protocol.peers.identify(PEER).name
        return value(
            self.metrics.exposition(),
            "callback_requests_total",
            peer=peer,
            outcome=outcome,
        )

    def send(self, data: bytes) -> None:
        self.protocol.datagramReceived(data, PEER)

    def test_okDuplicateRefused(self) -> None:
        """
        An accepted REQUEST counts C{ok}, its repeat C{duplicate}, an
        invalid command C{invalid}, a refusal by the manager C{refused}, a
        CANCEL of a running callback C{cancelled}; each new REQUEST's ACK
        latency is observed once.
        """
        self.send(b"REQUEST: id=1;user1=100;user2=101;duration=60;")
        self.send(b"REQUEST: id=1;user1=100;user2=101;duration=60;")
        self.send(b"REQUEST: id=2;user1=100;duration=60;")
        self.manager.admitError = CallbackRefused("max_calls (1) reached")
        self.send(b"REQUEST: id=3;user1=100;user2=101;duration=60;")
        self.manager.admitError = None
        self.send(b"CANCEL: id=1;")
        self.assertEqual(self.count("ok"), 1.0)
        self.assertEqual(self.count("duplicate"), 1.0)
        self.assertEqual(self.count("invalid"), 1.0)
        self.assertEqual(self.count("refused"), 1.0)
        self.assertEqual(self.count("cancelled"), 1.0)
        self.assertEqual(
            value(self.metrics.exposition(), "callback_ack_seconds_count"), 1.0
        )
