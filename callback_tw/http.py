# -*- test-case-name: tests.test_http -*-
"""
The operator's HTTP port (C{[http]}): C{/metrics} and C{/health}, served by
twisted.web on the server's own reactor.

C{/metrics} renders the server's L{callback_tw.metrics.CallbackMetrics} with
C{prometheus_client}'s own exposition, on the reactor thread: the gauges
read live objects of the server (callbacks, streams, the overload guard),
which only the reactor thread may touch.  That is why
C{prometheus_client.twisted.MetricsResource} (a WSGI app on the reactor's
thread pool) is not used.

C{/health} answers 200 when the server can take callbacks, else 503; the
JSON body names every check and what fails, for a load balancer, a
systemd watchdog script or a person with curl.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

__all__ = ["Health", "HealthResource", "MetricsResource", "OperatorSite", "buildSite"]


class Health:
    """
    Whether this server can take callbacks now, part by part.

    @param sip: the L{callback_tw.sip.stack.SipStack}: its socket must be up.
    @param lineRegistration: the external line's
        L{callback_tw.sip.registration.LineRegistration}, or L{None} when no
        line is to be registered.
    @param store: C{() -> Store or None}: the store once open.
    @param overloadGuard: the L{callback_tw.callback.overload.OverloadGuard}:
        its lag must be under its C{maxLag} (when the guard is on).
    """

    def __init__(
        self,
        sip: Any,
        lineRegistration: Any,
        store: Callable[[], Any],
        overloadGuard: Any,
    ) -> None:
        self._sip = sip
        self._line = lineRegistration
        self._store = store
        self._guard = overloadGuard

    def checks(self) -> dict[str, dict[str, Any]]:
        """
        Every check by name (C{sip}, C{external_line} when there is one,
        C{store}, C{reactor}), each C{{"ok": bool, "detail": str}}.
        """
        checks: dict[str, dict[str, Any]] = {}

        def check(name: str, ok: bool, detail: str) -> None:
            checks[name] = {"ok": bool(ok), "detail": detail}

        port = getattr(self._sip, "port", None)
        sipUp = bool(self._sip.running) and port is not None
        check("sip", sipUp, f"udp port {port}" if sipUp else "SIP socket not bound")
        if self._line is not None:
            state = str(self._line.state)
            detail = state
            if state != "registered" and self._line.lastStatus is not None:
                code, _ = self._line.lastStatus
                detail = f"{state} (last answer {code})"
            check("external_line", state == "registered", detail)
        store = self._store()
        if store is None:
            check("store", False, "not open")
        else:
            check("store", store.healthy, "answers" if store.healthy else "unavailable")
        lag, maxLag = self._guard.lag, self._guard.maxLag
        lagOk = maxLag <= 0 or lag <= maxLag
        check(
            "reactor",
            lagOk,
            f"{lag * 1000:.0f} ms late (max_lag {maxLag * 1000:.0f} ms)",
        )
        return checks


class HealthResource(Resource):
    """C{GET /health}: 200 or 503, with the checks as JSON."""

    isLeaf = True

    def __init__(self, health: Health) -> None:
        super().__init__()
        self._health = health

    def render_GET(self, request: Request) -> bytes:
        checks = self._health.checks()
        failing = [name for name, c in checks.items() if not c["ok"]]
        request.setResponseCode(503 if failing else 200)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        body = {
            "status": "fail" if failing else "ok",
            "failing": failing,
            "checks": checks,
        }
        return json.dumps(body, sort_keys=True).encode("utf-8") + b"\n"


class MetricsResource(Resource):
    """C{GET /metrics}: the Prometheus text format."""

    isLeaf = True

    def __init__(self, metrics: Any) -> None:
        super().__init__()
        self._metrics = metrics

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        return self._metrics.exposition()


class OperatorSite(Site):
    """
    A quiet L{Site}: a scrape every few seconds is not worth a log line,
    nor is the factory starting and stopping.
    """

    noisy = False

    def log(self, request: Request) -> None:
        pass


def buildSite(metrics: Any, health: Health, reactor: Any = None) -> Site:
    """
    The site of the HTTP port: C{/metrics} and C{/health}; anything else
    is a 404.
    """
    root = Resource()
    root.putChild(b"metrics", MetricsResource(metrics))
    root.putChild(b"health", HealthResource(health))
    if reactor is None:
        return OperatorSite(root)
    return OperatorSite(root, reactor=reactor)
