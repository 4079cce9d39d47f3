# -*- test-case-name: tests.test_metrics -*-
"""
What the server counts, for Prometheus (served by L{callback_tw.http}).

Every metric lives in the L{CallbackMetrics} of one service, in a
C{CollectorRegistry} of its own rather than C{prometheus_client}'s global
one: a test can build several services in one process, and a scrape shows
only this server's figures (no process or platform collectors by surprise).

Two kinds of figures:
  - events (requests, ends, leg outcomes, latencies) are counted where they
    happen, by the part that sees them (the IIF protocol, the manager);
  - levels (active callbacks, RTP streams, reactor lag, the external line)
    are read from the part that owns them at scrape time
    (L{CallbackMetrics.watch}), so they can never drift from the truth.

Label values come from small fixed sets (peer names of the configuration,
outcome and cause words, leg names, SIP status codes): never free text,
which would make a new time series per callback.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

__all__ = ["CallbackMetrics", "MeasuredDialer", "causeWord"]

#: seconds from a REQUEST to its ACK: a store commit, a few ms.
ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

#: seconds of conversation.
TALK_BUCKETS = (5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)

#: seconds from a leg's INVITE to its first sign of life (ringing or answer).
POST_DIAL_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0, 60.0)

#: C{callback_requests_total} outcomes whose word is not the IIF's kind.
_OUTCOMES = {"repeated": "duplicate", "cancel": "cancel_unknown"}

_FAILURE_WORDS = {
    "busy": "busy",
    "declined": "declined",
    "not found": "not_found",
    "no answer": "no_answer",
    "unavailable": "unavailable",
    "cancelled": "cancelled",
    "failed": "failed",
}

_LEG_FAILURE = re.compile(
    r"(user[12]) (busy|declined|not found|no answer|unavailable|cancelled|failed) \("
)

#: the words C{callback_ended_total} uses, with the causes they stand for.
CAUSES = (
    "duration",
    "user1_hangup",
    "user2_hangup",
    *(f"user{n}_{w}" for n in (1, 2) for w in _FAILURE_WORDS.values()),
    "cancelled",
    "shutdown",
    "media",
    "join_failed",
    "not_placed",
    "other",
)

_CAUSE_PREFIXES = (
    ("duration limit", "duration"),
    ("user1 hung up", "user1_hangup"),
    ("user2 hung up", "user2_hangup"),
    ("cancelled by the application server", "cancelled"),
    ("server shutting down", "shutdown"),
    ("unusable SDP", "media"),
    ("user1 and user2 share no codec", "media"),
    ("join failed", "join_failed"),
    ("cannot call user", "not_placed"),
    ("no free RTP port", "not_placed"),
)


def causeWord(cause: str) -> str:
    """
    The word of L{CAUSES} for the free-text cause of a finished callback
    (L{callback_tw.callback.call.CallResult.cause}): C{"user1 busy (486 Busy
    Here)"} -> C{"user1_busy"}; C{"other"} for a cause it does not know.
    """
    for prefix, word in _CAUSE_PREFIXES:
        if cause.startswith(prefix):
            return word
    match = _LEG_FAILURE.match(cause)
    if match is not None:
        return f"{match.group(1)}_{_FAILURE_WORDS[match.group(2)]}"
    return "other"


class CallbackMetrics:
    """
    The metrics of one server, in their own registry.

    @ivar registry: the C{CollectorRegistry} that L{exposition} renders.
    @ivar requests: C{callback_requests_total{peer,outcome}}: IIF commands
        by peer and what became of them (C{ok}, C{duplicate}, C{cancel}, or
        the kind of refusal: C{invalid}, C{policy_rate}, C{refused},
        C{store}...).
    @ivar ended: C{callback_ended_total{cause}}, a word of L{CAUSES}.
    @ivar ackSeconds: C{callback_ack_seconds}: from a new REQUEST to its
        ACK (the store's commit).
    @ivar talkSeconds: C{callback_talk_seconds}: the real_duration of each
        callback that had a conversation.
    @ivar postDialDelay: C{callback_post_dial_delay_seconds{leg}}.
    @ivar legResponses: C{callback_leg_responses_total{leg,status}}: each
        leg's final INVITE status (200 answered, 486, 408, 487...).
    """

    # Longer than 60 lines: one declaration per metric, in one place.
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "callback_requests",
            "IIF commands by peer and outcome",
            ["peer", "outcome"],
            registry=registry,
        )
        self.ended = Counter(
            "callback_ended",
            "Finished callbacks by cause",
            ["cause"],
            registry=registry,
        )
        self.ackSeconds = Histogram(
            "callback_ack_seconds",
            "Seconds from a new REQUEST to its ACK",
            buckets=ACK_BUCKETS,
            registry=registry,
        )
        self.talkSeconds = Histogram(
            "callback_talk_seconds",
            "real_duration of the callbacks that had a conversation",
            buckets=TALK_BUCKETS,
            registry=registry,
        )
        self.postDialDelay = Histogram(
            "callback_post_dial_delay_seconds",
            "Seconds from a leg's INVITE to its first ringing or answer",
            ["leg"],
            buckets=POST_DIAL_BUCKETS,
            registry=registry,
        )
        self.legResponses = Counter(
            "callback_leg_responses",
            "Final INVITE status of each leg",
            ["leg", "status"],
            registry=registry,
        )
        # The series of the fixed label sets exist from the start, at 0: a
        # rate() over a series that appears only with its first event misses
        # that event, and a dashboard shows "no data" instead of 0.
        for leg in ("leg1", "leg2"):
            self.postDialDelay.labels(leg=leg)
        for cause in CAUSES:
            self.ended.labels(cause=cause)
        self.active = Gauge(
            "callback_active", "Callbacks running now", registry=registry
        )
        self.rtpStreams = Gauge(
            "callback_rtp_streams",
            "RTP streams (announcements, ringback) being sent now",
            registry=registry,
        )
        self.reactorLag = Gauge(
            "callback_reactor_lag_seconds",
            "How late the reactor runs (largest over the last second)",
            registry=registry,
        )
        self.externalLineRegistered = Gauge(
            "callback_external_line_registered",
            "1 while the external line is registered, else 0"
            " (0 also when no line is to be registered)",
            registry=registry,
        )

    def watch(
        self,
        *,
        active: Callable[[], float],
        rtpStreams: Callable[[], float],
        reactorLag: Callable[[], float],
        lineRegistered: Callable[[], bool] | None,
    ) -> None:
        """
        Read the levels from their owners at each scrape.

        @param lineRegistered: whether the external line is registered, or
            L{None} when there is no line to register.
        """
        self.active.set_function(active)
        self.rtpStreams.set_function(rtpStreams)
        self.reactorLag.set_function(reactorLag)
        if lineRegistered is not None:
            self.externalLineRegistered.set_function(lambda: float(lineRegistered()))

    def commandOutcome(self, peer: str, kind: str) -> None:
        """
        Count one IIF command of C{peer} in C{callback_requests_total}.

        @param kind: what became of it: C{ok}, C{cancelled}, C{repeated}
            (counted as C{duplicate}), C{cancel} (a CANCEL of no running
            callback: C{cancel_unknown}), or the IIF's kind of refusal
            (C{invalid}, C{policy rate}...: spaces become C{_});
            C{ignored} (unknown parameters, the command goes on) is not an
            outcome and is not counted.
        """
        if kind == "ignored":
            return
        outcome = _OUTCOMES.get(kind) or kind.replace(" ", "_")
        self.requests.labels(peer=peer, outcome=outcome).inc()

    def callbackFinished(self, result: Any) -> None:
        """
        Count a finished callback: its cause, its talk time, each leg's final
        status.

        @param result: its L{callback_tw.callback.call.CallResult}.
        """
        self.ended.labels(cause=causeWord(result.cause)).inc()
        if result.realDuration > 0:
            self.talkSeconds.observe(result.realDuration)
        for leg in ("leg1", "leg2"):
            status = result.values.get(f"{leg}Status")
            if status is not None:
                self.legResponses.labels(leg=leg, status=str(status)).inc()

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


class _MeasuredListener:
    """
    Stands between a leg and its listener (the callback) and times the
    leg's first sign of life; every other event goes through untouched.
    """

    def __init__(
        self, listener: Any, metrics: CallbackMetrics, leg: str, reactor: Any
    ) -> None:
        self._listener = listener
        self._metrics = metrics
        self._leg = leg
        self._reactor = reactor
        self._dialedAt: float | None = reactor.seconds()

    def _alive(self) -> None:
        if self._dialedAt is not None:
            delay = self._reactor.seconds() - self._dialedAt
            self._dialedAt = None
            self._metrics.postDialDelay.labels(leg=self._leg).observe(delay)

    def legRinging(self, leg: Any) -> None:
        self._alive()
        self._listener.legRinging(leg)

    def legAnswered(self, leg: Any, sdp: str) -> None:
        self._alive()
        self._listener.legAnswered(leg, sdp)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._listener, name)


class MeasuredDialer:
    """
    An L{callback_tw.callback.call.IDialer} that measures the post-dial
    delay of each leg it places through another dialer, so that neither
    the callback nor the SIP legs carry timing code of their own.
    """

    def __init__(self, dialer: Any, metrics: CallbackMetrics, reactor: Any) -> None:
        self._dialer = dialer
        self._metrics = metrics
        self._reactor = reactor

    def dial(
        self,
        user: str,
        offer: str,
        listener: Any,
        name: str = "",
        caller: str | None = None,
    ) -> Any:
        """
        Place a leg through the wrapped dialer; C{name} ends in C{/leg1} or
        C{/leg2}, which labels the measure; C{caller} as the dialer's.
        """
        leg = name.rsplit("/", 1)[-1] if name else "leg"
        if leg not in ("leg1", "leg2"):
            leg = "other"
        measured = _MeasuredListener(listener, self._metrics, leg, self._reactor)
        return self._dialer.dial(user, offer, measured, name, caller=caller)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dialer, name)
