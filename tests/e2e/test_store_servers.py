"""
End-to-end tests of the store as operators meet it: two servers sharing one
PostgreSQL database (an AS that fails over sends the same REQUEST to both),
and a store that cannot be opened at start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from tests import pgserver
from tests.e2e.loopback import freePort, sleep
from tests.e2e.peers import ASClient
from tests.e2e.processes import SIPP, ServerProcess, SippUAS, startManaged


class SeveralServersTests(TestCase):
    """
    Two servers, one PostgreSQL database: one id, one call, one RESPONSE.
    """

    timeout = 90

    if SIPP is None:
        skip = "sipp is not installed (Debian package sip-tester)"

    @defer.inlineCallbacks
    def test_sameRequestToBoth(self) -> Any:
        """
        The same REQUEST sent to both servers at once gets ACK ok from each,
        places one call (one INVITE to user1) and gets one RESPONSE, from the
        server that owns the callback; the repeat to the other one later gets
        ACK ok again and no call.
        """
        url = pgserver.server().createDatabase("two_servers")
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        uas = SippUAS(str(directory), reactor=reactor)
        yield startManaged(self, uas)
        client = ASClient(reactor)
        client.start()
        self.addCleanup(client.stop)
        servers = []
        for name in ("a", "b"):
            server = ServerProcess(
                str(directory / name), uas.port, client.port, reactor=reactor, url=url
            )
            yield startManaged(self, server)
            servers.append(server)
        text = "REQUEST: id=ha1;user1=answer71;user2=hangup2b;duration=60;"
        for server in servers:
            client.send(text, to=server.iifAddress)
        codes = []
        for _ in servers:
            codes.append((yield client.expectAck("ha1")))
        self.assertEqual(codes, ["ok", "ok"])
        real, _ = yield client.expectResponse("ha1", timeout=30)
        self.assertIn(real, (2, 3))
        yield sleep(reactor, 2.0)
        responses = [
            addr for _, got, addr in client.received if got.startswith("RESPONSE:")
        ]
        self.assertEqual(len(responses), 1)
        self.assertIn(responses[0], [s.iifAddress for s in servers])
        self.assertEqual(len(uas.callsTo("answer71")), 1)
        owner = [s for s in servers if s.iifAddress == responses[0]][0]
        other = [s for s in servers if s is not owner][0]
        client.send(text, to=other.iifAddress)
        self.assertEqual((yield client.expectAck("ha1")), "ok")
        yield sleep(reactor, 1.0)
        self.assertEqual(len(uas.callsTo("answer71")), 1)


class UnusableStoreTests(TestCase):
    """
    A store that cannot be opened stops start-up with one line.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_unreachableDatabase(self) -> Any:
        """
        A PostgreSQL URL nobody answers: the server exits with status 1 and
        one line naming the URL without its password.
        """
        port = freePort()
        url = f"postgresql://cb:Sup3rSecret@127.0.0.1:{port}/callback"
        server = ServerProcess(self.mktemp(), freePort(), freePort(), url=url)
        d = server.start(timeout=30)
        yield self.assertFailure(d, RuntimeError)
        yield server.ended
        self.assertEqual(server.exitCode, 1)
        self.assertNotIn("Sup3rSecret", server.output)
        lines = [line for line in server.output.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, server.output)
        self.assertIn(f"postgresql://cb:***@127.0.0.1:{port}/callback", lines[0])
        self.assertIn("[store]", lines[0])
