"""
Tests of L{tests.e2e.peers}: the UDP peers and the AS client the end-to-end
tests talk through.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.e2e.peers import ASClient, DatagramPeer, parseIIF


class ParseIIFTests(SynchronousTestCase):
    """
    L{parseIIF} reads the datagrams the AS client receives.
    """

    def test_iif(self) -> None:
        """
        L{parseIIF} splits an IIF datagram into method and parameters.
        """
        self.assertEqual(
            parseIIF("ACK: id=1234;code=ok;\r\n"), ("ACK", {"id": "1234", "code": "ok"})
        )
        self.assertEqual(
            parseIIF("RESPONSE: id=7;real_duration=0"),
            ("RESPONSE", {"id": "7", "real_duration": "0"}),
        )


class DatagramPeerTests(TestCase):
    """
    L{ASClient} and L{DatagramPeer} over real loopback UDP.
    """

    timeout = 10

    def setUp(self) -> None:
        self.server = DatagramPeer(reactor).start()
        self.addCleanup(self.server.stop)
        self.client = ASClient(reactor, server=("127.0.0.1", self.server.port)).start()
        self.addCleanup(self.client.stop)

    @defer.inlineCallbacks
    def test_requestAndExpect(self) -> Any:
        """
        C{request} sends the spec's REQUEST text from the client's own port;
        C{expectAck} and C{expectResponse} pick the datagrams of their id,
        even when they arrived before the test asked.
        """
        self.client.request("77", "100", "101", duration=30)
        text = yield self.server.expect("REQUEST")
        self.assertEqual(text, "REQUEST: id=77;user1=100;user2=101;duration=30;")
        source = self.server.received[-1][2]
        self.assertEqual(source, ("127.0.0.1", self.client.port))
        self.server.send("RESPONSE: id=77;real_duration=12;", source)
        self.server.send("ACK: id=78;code=fail;", source)
        self.server.send("ACK: id=77;code=ok;", source)
        code = yield self.client.expectAck("77")
        self.assertEqual(code, "ok")
        duration, when = yield self.client.expectResponse("77")
        self.assertEqual(duration, 12)
        self.assertLess(abs(when - time.time()), 5)
        code = yield self.client.expectAck("78")
        self.assertEqual(code, "fail")

    @defer.inlineCallbacks
    def test_eachDatagramClaimedOnce(self) -> Any:
        """
        Two C{expect}s for the same prefix get two different datagrams; a
        third times out with L{defer.TimeoutError} listing what arrived.
        """
        self.client.send("A 1")
        self.client.send("A 2")
        first = yield self.server.expect("A")
        second = yield self.server.expect("A")
        self.assertEqual({first, second}, {"A 1", "A 2"})
        failure = yield self.assertFailure(
            self.server.expect("A", timeout=0.3), defer.TimeoutError
        )
        self.assertIn("'A 1'", str(failure))

    @defer.inlineCallbacks
    def test_expectNone(self) -> Any:
        """
        C{expectNone} succeeds when nothing matching arrives in time and fails
        with C{AssertionError} when something does.
        """
        self.client.send("B")
        yield self.server.expectNone("A", 0.3)
        later = self.server.expectNone("C", 2)
        self.client.send("C now")
        yield self.assertFailure(later, AssertionError)
