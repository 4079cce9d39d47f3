"""
Tests of L{tests.e2e.processes}: the server process wrapper (its INI file,
readiness, failure output, stop), with a stand-in process instead of the
server.
"""

from __future__ import annotations

import configparser
import sys
import time
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from tests.e2e.processes import ServerProcess


class _FakeServer(ServerProcess):
    """
    A stand-in server process: a Python one-liner that prints the ready
    marker after a delay and then behaves as told.
    """

    script = (
        "import time; time.sleep(0.2);"
        " print('callback_tw ready: test', flush=True); time.sleep(60)"
    )

    def argv(self) -> list[str]:
        return [sys.executable, "-c", self.script]


class ServerProcessTests(TestCase):
    """
    L{ServerProcess}: the config it writes, readiness, failure output, stop.
    """

    timeout = 30

    def _server(self, cls: type = ServerProcess, **overrides: Any) -> ServerProcess:
        directory = self.mktemp()
        server = cls(directory, 5070, [6000, 6001], reactor=reactor, **overrides)
        self.addCleanup(server.stop)
        return server

    def test_config(self) -> None:
        """
        The INI file has the seven sections with the e2e defaults, the peers
        pss/as1/as2 on loopback, fresh IIF and SIP ports, the overrides, a
        store in the server's own directory, no HTTP port and every step
        logged (level debug).
        """
        server = self._server(no_answer_timeout=3, trace=False)
        path = server.writeConfig()
        text = path.read_text()
        parser = configparser.ConfigParser()
        parser.read_string(text)
        self.assertEqual(
            parser.sections(),
            ["callback", "sip", "peer_servers", "media", "store", "http", "log"],
        )
        self.assertEqual(parser["http"]["listen_port"], "0")
        self.assertEqual(parser["log"]["level"], "debug")
        self.assertEqual(parser["store"]["url"], "sqlite:///callbacks.db")
        self.assertEqual(parser["callback"]["no_answer_timeout"], "3")
        self.assertEqual(parser["callback"]["default_caller"], "1000")
        self.assertEqual(parser["callback"]["listen_port"], str(server.iifPort))
        self.assertEqual(parser["sip"]["port"], str(server.sipPort))
        self.assertEqual(parser["sip"]["trace"], "no")
        self.assertEqual(
            dict(parser["peer_servers"]),
            {"pss": "127.0.0.1:5070", "as1": "127.0.0.1:6000", "as2": "127.0.0.1:6001"},
        )
        self.assertEqual(parser["media"]["default_ann_id1"], "")
        self.assertNotEqual(server.iifPort, server.sipPort)
        self.assertEqual(server.iifAddress, ("127.0.0.1", server.iifPort))

    def test_unknownKey(self) -> None:
        """
        An override that is no config key is a C{TypeError} (a typo in a test
        must not silently test the default).
        """
        self.assertRaises(
            TypeError,
            ServerProcess,
            self.mktemp(),
            5070,
            6000,
            reactor=reactor,
            no_such_key=1,
        )

    @defer.inlineCallbacks
    def test_readyAndStop(self) -> Any:
        """
        C{start} fires once the ready marker is printed; C{stop} ends the
        process with SIGTERM and fires.
        """
        server = self._server(_FakeServer)
        result = yield server.start()
        self.assertIs(result, server)
        self.assertTrue(server.running)
        self.assertIn("callback_tw ready", server.output)
        yield server.stop()
        self.assertFalse(server.running)
        self.assertEqual(server.exitSignal, 15)

    @defer.inlineCallbacks
    def test_exitBeforeReady(self) -> Any:
        """
        A server that exits before it is ready fails C{start} with its output.
        """
        server = self._server(_FakeServer)
        server.script = (
            "import sys; print('config: [callback] max_calls: bad'); sys.exit(1)"
        )
        failure = yield self.assertFailure(server.start(), RuntimeError)
        self.assertIn("exited before it was ready", str(failure))
        self.assertIn("max_calls: bad", str(failure))

    @defer.inlineCallbacks
    def test_notReadyInTime(self) -> Any:
        """
        A server that never prints the marker fails C{start} after the
        timeout, with its output, and is killed.
        """
        server = self._server(_FakeServer)
        server.script = "import time; print('starting', flush=True); time.sleep(60)"
        failure = yield self.assertFailure(server.start(timeout=1), RuntimeError)
        self.assertIn("not ready within 1 s", str(failure))
        self.assertIn("starting", str(failure))
        yield server.ended
        self.assertFalse(server.running)

    @defer.inlineCallbacks
    def test_sigkillAfterGrace(self) -> Any:
        """
        A process that ignores SIGTERM is killed when the grace time is over.
        """
        server = self._server(_FakeServer)
        server.script = (
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
            " print('callback_tw ready', flush=True); time.sleep(60)"
        )
        server.stopGrace = 0.5
        yield server.start()
        start = time.time()
        yield server.stop()
        self.assertEqual(server.exitSignal, 9)
        self.assertLess(time.time() - start, 5)
