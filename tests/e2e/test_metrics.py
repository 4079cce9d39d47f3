"""
End-to-end tests of the operator's view: C{/metrics} and C{/health} fetched
over HTTP from the real server (C{twistd -n callback}) while SIPp plays the
phones (and Kamailio the provider), and the log at level info.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, readBody

from tests.e2e.harness import startCallbackWorld
from tests.e2e.kamailio import KAMAILIO, startExternalLineWorld
from tests.e2e.loopback import LOOPBACK, freePort, sleep
from tests.e2e.processes import SIPP
from tests.metricshelpers import value


def _http() -> dict[str, Any]:
    """An C{[http]} section on a free loopback TCP port."""
    return {
        "http": {
            "listen_address": LOOPBACK,
            "listen_port": freePort(socket.SOCK_STREAM),
        }
    }


class _Scraper:
    """Fetches the server's pages over HTTP, as Prometheus and curl do."""

    def __init__(self, testCase: TestCase, server: Any) -> None:
        self._testCase = testCase
        port = server.sections["http"]["listen_port"]
        self._base = f"http://{LOOPBACK}:{port}".encode()
        self._agent = Agent(reactor)

    @defer.inlineCallbacks
    def get(self, path: bytes) -> Any:
        """Fire with C{(code, body)} of C{GET path}."""
        response = yield self._agent.request(b"GET", self._base + path)
        body = yield readBody(response)
        return response.code, body

    @defer.inlineCallbacks
    def until(
        self,
        path: bytes,
        predicate: Callable[[int, bytes], bool],
        what: str,
        timeout: float = 15.0,
    ) -> Any:
        """
        Fetch C{path} every 0.1 s until C{predicate(code, body)}; fire with
        that C{(code, body)}, or fail naming C{what} with the last page.
        """
        deadline = time.monotonic() + timeout
        while True:
            code, body = yield self.get(path)
            if predicate(code, body):
                return code, body
            if time.monotonic() > deadline:
                self._testCase.fail(
                    f"{what}: last {path!r} was {code}:\n{body.decode()}"
                )
            yield sleep(reactor, 0.1)


class MetricsEndToEndTests(TestCase):
    """
    C{/metrics} follows a real callback.
    """

    timeout = 60

    if SIPP is None:
        skip = "sipp is not installed (Debian package sip-tester)"

    @defer.inlineCallbacks
    def test_countersFollowACallback(self) -> None:
        """
        answer1 then hangup2: while it runs, the scrape shows the REQUEST
        counted ok, its ACK latency observed, one callback active; once the
        RESPONSE is out, none active, one ended by user2 hanging up, its talk
        time observed (the RESPONSE's real_duration), both legs answered
        (200) and their post-dial delays observed.  At level info the log
        has one line for the callback: its summary, not its steps.
        """
        sections = {**_http(), "log": {"level": "info"}}
        world = yield startCallbackWorld(self, reactor, sections=sections)
        scraper = _Scraper(self, world.server)
        world.client.request("m1", "answer1", "hangup2", duration=60)
        code = yield world.client.expectAck("m1")
        self.assertEqual(code, "ok")
        _, text = yield scraper.until(
            b"/metrics",
            lambda c, b: value(b, "callback_active") == 1.0,
            "one active callback",
        )
        self.assertEqual(
            value(text, "callback_requests_total", peer="as1", outcome="ok"), 1.0
        )
        self.assertEqual(value(text, "callback_ack_seconds_count"), 1.0)
        realDuration, _ = yield world.client.expectResponse("m1", timeout=15)
        _, text = yield scraper.until(
            b"/metrics",
            lambda c, b: value(b, "callback_active") == 0.0,
            "no active callback",
        )
        self.assertEqual(value(text, "callback_ended_total", cause="user2_hangup"), 1.0)
        self.assertEqual(value(text, "callback_talk_seconds_count"), 1.0)
        self.assertEqual(value(text, "callback_talk_seconds_sum"), float(realDuration))
        for leg in ("leg1", "leg2"):
            self.assertEqual(
                value(text, "callback_leg_responses_total", leg=leg, status="200"),
                1.0,
            )
            self.assertEqual(
                value(text, "callback_post_dial_delay_seconds_count", leg=leg), 1.0
            )
        self.assertEqual(value(text, "callback_external_line_registered"), 0.0)
        code, body = yield scraper.get(b"/health")
        self.assertEqual(code, 200, body)

        lines = world.server.logLines("m1")
        self.assertEqual(len(lines), 1, "\n".join(lines))
        self.assertIn(
            "callback m1 finished: peer=as1 user1=answer1 user2=hangup2"
            f" leg1=answered leg2=answered real_duration={realDuration}"
            " cause=user2 hung up",
            lines[0],
        )


class HealthEndToEndTests(TestCase):
    """
    C{/health} with an external line (Kamailio as the provider).
    """

    timeout = 60

    if SIPP is None:
        skip = "sipp is not installed (Debian package sip-tester)"
    elif KAMAILIO is None:
        skip = "kamailio is not installed (Debian package kamailio)"

    @defer.inlineCallbacks
    def test_lineNotRegistered(self) -> None:
        """
        Wrong credentials: the provider answers 403, C{/health} is 503 naming
        the external line (every other part ok), and
        C{callback_external_line_registered} is 0.
        """
        world = yield startExternalLineWorld(
            self, reactor, password="wrong", sections=_http()
        )
        scraper = _Scraper(self, world.server)
        code, body = yield scraper.until(
            b"/health",
            lambda c, b: "403" in json.loads(b)["checks"]["external_line"]["detail"],
            "the line failing with 403",
        )
        self.assertEqual(code, 503)
        health = json.loads(body)
        self.assertEqual(health["failing"], ["external_line"])
        self.assertEqual(health["status"], "fail")
        _, text = yield scraper.get(b"/metrics")
        self.assertEqual(value(text, "callback_external_line_registered"), 0.0)

    @defer.inlineCallbacks
    def test_lineRegistered(self) -> None:
        """
        Right credentials: once the provider accepts the REGISTER, C{/health}
        is 200 with every check ok, and C{callback_external_line_registered}
        is 1.
        """
        world = yield startExternalLineWorld(self, reactor, sections=_http())
        scraper = _Scraper(self, world.server)
        code, body = yield scraper.until(
            b"/health", lambda c, b: c == 200, "healthy once registered"
        )
        health = json.loads(body)
        self.assertEqual(health["failing"], [])
        self.assertEqual(
            sorted(health["checks"]), ["external_line", "reactor", "sip", "store"]
        )
        _, text = yield scraper.get(b"/metrics")
        self.assertEqual(value(text, "callback_external_line_registered"), 1.0)
