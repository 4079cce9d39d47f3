"""
Tests for L{callback_tw.http}: C{/metrics} and C{/health} of a server built by
L{callback_tw.tap.buildService} on a test reactor, fetched through
twisted.web's own request handling; and the Grafana dashboard checked against
what such a server exports.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from twisted.web.test.requesthelper import DummyRequest

from tests.metricshelpers import names, value
from tests.siphelpers import FarEnd
from tests.test_service import AS, PROVIDER, BuiltServiceCase, ServiceReactor

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DASHBOARD = os.path.join(_REPO, "etc", "grafana", "callback_tw.json")


class _Page:
    def __init__(self, code: int, headers: Any, body: bytes) -> None:
        self.code = code
        self.headers = headers
        self.body = body

    def header(self, name: bytes) -> bytes:
        return self.headers.getRawHeaders(name)[0]

    def json(self) -> Any:
        return json.loads(self.body)


def get(site: Any, path: bytes) -> _Page:
    """
    C{GET path} from C{site} as twisted.web serves it: the resource found by
    the site for the path, rendered with a request for it.
    """
    request = DummyRequest(path.lstrip(b"/").split(b"/"))
    request.method = b"GET"
    resource = site.getResourceFor(request)
    body = resource.render(request)
    code = request.responseCode or 200
    return _Page(code, request.responseHeaders, body)


class ServedServiceCase(BuiltServiceCase):
    """
    A whole server built as L{tests.test_service} builds it, and its web site.
    """

    @property
    def site(self) -> Any:
        [(port, factory, backlog, interface)] = self.reactor.tcpServers
        return factory


class HTTPPortTests(ServedServiceCase):
    """
    The HTTP port of C{[http]}.
    """

    def test_listensOnDefault(self) -> None:
        """
        Without an C{[http]} section the server listens on 127.0.0.1:9280 (a
        TCP port, bound at start with the others); anything but C{/metrics}
        and C{/health} is a 404.
        """
        self.start()
        [(port, factory, backlog, interface)] = self.reactor.tcpServers
        self.assertEqual((interface, port), ("127.0.0.1", 9280))
        self.assertEqual(get(factory, b"/nothing").code, 404)

    def test_metricsFormat(self) -> None:
        """
        C{/metrics} answers the Prometheus text format with every callback
        metric.
        """
        self.start()
        page = get(self.site, b"/metrics")
        self.assertEqual(page.code, 200)
        self.assertTrue(page.header(b"content-type").startswith(b"text/plain"))
        exported = names(page.body)
        for name in (
            "callback_active",
            "callback_rtp_streams",
            "callback_reactor_lag_seconds",
            "callback_external_line_registered",
            "callback_ack_seconds_count",
            "callback_talk_seconds_count",
        ):
            self.assertIn(name, exported)

    def test_metricsFollowACallback(self) -> None:
        """
        A REQUEST that is accepted counts C{ok} and its ACK latency, the
        callback is active while it runs; user1's ringing observes leg1's
        post-dial delay; once the shutdown releases it, it is no longer active
        and ended by C{shutdown}, with leg1's final status 487.
        """
        sip, iif = self.start()
        iif.protocol.datagramReceived(
            b"REQUEST: id=7;user1=100;user2=101;duration=60;", AS
        )
        text = get(self.site, b"/metrics").body
        self.assertEqual(
            value(text, "callback_requests_total", peer="as1", outcome="ok"), 1.0
        )
        self.assertEqual(value(text, "callback_ack_seconds_count"), 1.0)
        self.assertEqual(value(text, "callback_active"), 1.0)
        far = FarEnd(port=PROVIDER[1])
        invite = sip.written[0][0].decode()
        self.reactor.advance(0.5)
        sip.protocol.datagramReceived(
            far.response(invite, 180, "Ringing").encode(), PROVIDER
        )
        self.reactor.advance(0)
        text = get(self.site, b"/metrics").body
        pdd = "callback_post_dial_delay_seconds"
        self.assertEqual(value(text, pdd + "_count", leg="leg1"), 1.0)
        self.assertEqual(value(text, pdd + "_sum", leg="leg1"), 0.5)

        self.service.manager.releaseAll("server shutting down")
        text = get(self.site, b"/metrics").body
        self.assertEqual(value(text, "callback_active"), 0.0)
        self.assertEqual(value(text, "callback_ended_total", cause="shutdown"), 1.0)
        self.assertEqual(
            value(text, "callback_leg_responses_total", leg="leg1", status="487"), 1.0
        )
        self.assertEqual(value(text, "callback_talk_seconds_count"), 0.0)


class HTTPOffTests(ServedServiceCase):
    """
    C{[http] listen_port = 0}.
    """

    extraConfig = "[http]\nlisten_port = 0\n"

    def test_noPort(self) -> None:
        """
        No HTTP port is opened at all.
        """
        self.start()
        self.assertEqual(self.reactor.tcpServers, [])
        self.assertIsNone(self.service.httpPort)


class HealthTests(ServedServiceCase):
    """
    C{/health}: 200 when the server can take callbacks, 503 naming what
    fails.
    """

    def health(self) -> _Page:
        page = get(self.site, b"/health")
        self.assertEqual(page.header(b"content-type"), b"application/json")
        return page

    def test_healthy(self) -> None:
        """
        Started, with the store open and the reactor on time: 200, every
        check ok.
        """
        self.start()
        page = self.health()
        self.assertEqual(page.code, 200)
        body = page.json()
        self.assertEqual((body["status"], body["failing"]), ("ok", []))
        self.assertEqual(sorted(body["checks"]), ["reactor", "sip", "store"])

    def test_storeDown(self) -> None:
        """
        While the store cannot be written: 503, C{store} failing.
        """
        self.start()
        self.store.healthy = False
        page = self.health()
        self.assertEqual(page.code, 503)
        self.assertEqual(page.json()["failing"], ["store"])
        self.assertEqual(page.json()["status"], "fail")

    def test_late(self) -> None:
        """
        While the reactor lags more than max_lag: 503, C{reactor} failing.
        """
        self.start()
        # One reactor turn 0.6 s late: the guard's 50 ms tick runs that late.
        self.reactor.advance(0.6)
        self.assertGreater(self.service.overloadGuard.lag, 0.5)
        page = self.health()
        self.assertEqual(page.code, 503)
        self.assertEqual(page.json()["failing"], ["reactor"])

    def test_sipDown(self) -> None:
        """
        Before the SIP socket is bound (not started): 503, C{sip} and the
        store (not open yet) failing.
        """
        from callback_tw.http import Health, buildSite

        service = self.service
        health = Health(service.sip, None, lambda: service.store, service.overloadGuard)
        page = get(buildSite(service.metrics, health), b"/health")
        self.assertEqual(page.code, 503)
        self.assertEqual(json.loads(page.body)["failing"], ["sip", "store"])


class LineHealthTests(ServedServiceCase):
    """
    C{/health} with an external line to register.
    """

    extraConfig = """\
[external_line]
registrar = 127.0.0.1:5070
username = 1234567
password = secret
"""

    callbackConfig = "external_line_mode = yes\n"

    def test_lineState(self) -> None:
        """
        Until the provider accepts the REGISTER: 503 naming
        C{external_line}, and C{callback_external_line_registered} 0; once it
        is registered: 200 and 1.
        """
        self.start()
        line = self.service.lineRegistration
        self.assertIsNotNone(line)
        page = get(self.site, b"/health")
        self.assertEqual(page.code, 503)
        self.assertEqual(page.json()["failing"], ["external_line"])
        text = get(self.site, b"/metrics").body
        self.assertEqual(value(text, "callback_external_line_registered"), 0.0)
        sip = self.reactor.bound[0]
        register = sip.written[0][0].decode()
        self.assertTrue(register.startswith("REGISTER "), register)
        ok = FarEnd(port=PROVIDER[1]).response(register, 200, "OK")
        ok = ok.replace("\r\nContent-Length", "\r\nExpires: 3600\r\nContent-Length")
        sip.protocol.datagramReceived(ok.encode(), PROVIDER)
        self.reactor.advance(0)
        self.assertEqual(str(line.state), "registered")
        self.assertEqual(get(self.site, b"/health").code, 200)
        text = get(self.site, b"/metrics").body
        self.assertEqual(value(text, "callback_external_line_registered"), 1.0)


#: A metric name in PromQL: a word that is followed by C{{}, C{[} or C{)},
#: or stands alone, and is neither a function, an aggregation keyword nor a
#: label name.
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_PROMQL_WORDS = {
    "sum",
    "by",
    "rate",
    "histogram_quantile",
    "max",
    "min",
    "avg",
    "without",
    "irate",
    "increase",
    "le",
    "leg",
    "outcome",
    "cause",
    "status",
    "job",
    "instance",
    "on",
    "ignoring",
    "count",
    "topk",
    "bool",
}


def metricNames(expr: str) -> set[str]:
    """
    The metric names a PromQL expression reads: identifiers outside label
    matchers (C{{...}}), ranges (C{[...]}) and strings, less functions,
    keywords and the label names of C{by (...)}.
    """
    stripped = re.sub(r'"[^"]*"', "", expr)
    stripped = re.sub(r"\{[^}]*\}", " ", stripped)
    stripped = re.sub(r"\[[^\]]*\]", " ", stripped)
    stripped = re.sub(r"\b(by|without)\s*\([^)]*\)", " ", stripped)
    found = set(_IDENTIFIER.findall(stripped))
    return {name for name in found if name not in _PROMQL_WORDS}


class DashboardTests(ServedServiceCase):
    """
    etc/grafana/callback_tw.json reads only what the server exports.
    """

    def expressions(self) -> list[str]:
        with open(DASHBOARD, encoding="utf-8") as f:
            dashboard = json.load(f)
        return [
            target["expr"]
            for panel in dashboard["panels"]
            for target in panel.get("targets", [])
        ]

    def test_metricNamesParsed(self) -> None:
        """
        The parser of expressions finds the metric names and nothing else.
        """
        self.assertEqual(
            metricNames(
                "histogram_quantile(0.9, sum by (le, leg) (rate("
                'callback_post_dial_delay_seconds_bucket{job=~"$job"}[5m])))'
                " / sum(callback_active)"
            ),
            {"callback_post_dial_delay_seconds_bucket", "callback_active"},
        )

    def test_everyExpressionNamesExportedMetrics(self) -> None:
        """
        Every metric named by a dashboard expression is in a scrape of a
        built server whose callback went through (so the labelled series
        exist); the dashboard covers outcomes, answer ratios, talk time, ACK
        latency and lag.
        """
        sip, iif = self.start()
        iif.protocol.datagramReceived(
            b"REQUEST: id=7;user1=100;user2=101;duration=60;", AS
        )
        self.service.manager.releaseAll("server shutting down")
        exported = names(get(self.site, b"/metrics").body)
        expressions = self.expressions()
        used: set[str] = set()
        for expr in expressions:
            found = metricNames(expr)
            self.assertTrue(found, expr)
            self.assertEqual(found - exported, set(), expr)
            used |= found
        for needed in (
            "callback_requests_total",
            "callback_leg_responses_total",
            "callback_talk_seconds_bucket",
            "callback_ack_seconds_bucket",
            "callback_reactor_lag_seconds",
        ):
            self.assertIn(needed, used)


class _TakenTCPReactor(ServiceReactor):
    """A L{ServiceReactor} on which every TCP port is in use."""

    def listenTCP(
        self, port: int, factory: Any, backlog: int = 50, interface: str = ""
    ):
        import errno

        from twisted.internet.error import CannotListenError

        raise CannotListenError(
            interface,
            port,
            OSError(errno.EADDRINUSE, "Address already in use"),
        )


class HTTPBindErrorTests(ServedServiceCase):
    """
    An HTTP port that cannot be bound is a start-up error like the others.
    """

    def test_portInUse(self) -> None:
        """
        One line on stderr naming C{[http] listen_port} and the TCP address,
        then exit status 1.
        """
        import io
        import sys

        self.service._reactor = _TakenTCPReactor()
        stderr = io.StringIO()
        self.patch(sys, "__stderr__", stderr)
        with self.assertRaises(SystemExit) as raised:
            self.service.startService()
        self.addCleanup(self.stopIfRunning)
        self.assertEqual(raised.exception.code, 1)
        path = self.service.config.path
        self.assertEqual(
            stderr.getvalue(),
            f"callback: {path}: [http] listen_port: cannot bind tcp"
            " 127.0.0.1:9280: Address already in use\n",
        )
