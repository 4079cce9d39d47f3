# -*- test-case-name: tests.e2e.test_callback -*-
"""
One end-to-end test's world: the real server, a SIPp "phone farm" and an
application server (AS), all on loopback, all in trial's reactor, started
and torn down for one test by L{startCallbackWorld}.

The pieces live in modules by job:
  - L{tests.e2e.loopback}: free ports, bounded waiting;
  - L{tests.e2e.siplog}: SIPp's message log parsed into L{SipMessage}s;
  - L{tests.e2e.processes}: the server and SIPp processes;
  - L{tests.e2e.peers}: UDP peers, the AS client.

C{bench/bench_callbacks.py} reaches the pieces through this module's names
below (C{harness.ServerProcess}...), so they are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer

from tests.e2e.loopback import freePort, sleep
from tests.e2e.peers import ASClient, parseIIF
from tests.e2e.processes import SIPP, ServerProcess, SippUAS, startManaged

__all__ = [
    "SIPP",
    "ASClient",
    "CallbackWorld",
    "ServerProcess",
    "SippUAS",
    "freePort",
    "parseIIF",
    "sleep",
    "startCallbackWorld",
]


@dataclass
class CallbackWorld:
    """
    What one end-to-end test talks to.
    """

    server: ServerProcess
    uas: SippUAS
    client: ASClient


@defer.inlineCallbacks
def startCallbackWorld(testCase: Any, reactor: Any = None, **overrides: Any) -> Any:
    """
    Start SIPp (the phones), an AS client and the server for C{testCase}, and
    register their teardown (server first, so its SIGTERM release reaches
    SIPp) with C{testCase.addCleanup}.  Fire with a L{CallbackWorld}.

    @param overrides: server config values, as for L{ServerProcess}.
    """
    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]
    directory = Path(testCase.mktemp())
    directory.mkdir(parents=True)
    uas = SippUAS(str(directory), reactor=reactor)
    yield startManaged(testCase, uas)
    client = ASClient(reactor)
    client.start()
    testCase.addCleanup(client.stop)
    server = ServerProcess(
        str(directory), uas.port, client.port, reactor=reactor, **overrides
    )
    client.defaultTarget = server.iifAddress
    yield startManaged(testCase, server)
    return CallbackWorld(server, uas, client)
