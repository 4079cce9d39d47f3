"""
End-to-end tests of start-up as an operator meets it: C{twistd -n callback}
started the way the harness starts it, and what it says when it cannot run.

A port that cannot be bound stops start-up with status 1 and one line on
stderr naming the configuration key and the address, like a bad
configuration value: no traceback, and never a second server quietly
sharing the first one's SIP port.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from callback_tw.config.values import PACKAGED_PROMPTS
from callback_tw.media.prompts import PromptCatalogue
from tests.e2e.loopback import LOOPBACK, freePort, pollUntil, sleep
from tests.e2e.peers import ASClient
from tests.e2e.processes import (
    REPO_ROOT,
    SCENARIOS,
    SIPP,
    ServerProcess,
    SippUAS,
    startManaged,
)
from tests.e2e.test_media import RTPReceiver

MEDIA_SCENARIO = SCENARIOS / "uas_media.xml"


class RecordingServer(ServerProcess):
    """
    A L{ServerProcess} that also keeps what it wrote on stderr alone.

    @ivar stderr: the text written on stderr.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stderr = ""

    def errReceived(self, data: bytes) -> None:
        self.stderr += data.decode("utf-8", "replace")
        super().errReceived(data)

    def run(self, timeout: float = 20.0) -> defer.Deferred:
        """
        Start the server expecting it to exit during start-up; fire with the
        exit code (it is killed after C{timeout} seconds).
        """
        self.writeConfig()
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        self._spawn(self.argv(), str(REPO_ROOT), env)
        killer = self._reactor.callLater(timeout, self._signal, "KILL")
        ended = defer.Deferred()
        self.ended.addBoth(lambda _: ended.callback(self.exitCode))
        ended.addBoth(lambda value: (killer.active() and killer.cancel(), value)[1])
        return ended


def holdEvenPort() -> socket.socket:
    """
    A UDP socket bound to an even loopback port (RTP ports are even), which
    the caller closes.
    """
    for _ in range(100):
        port = freePort()
        if port % 2 == 0:
            held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                held.bind((LOOPBACK, port))
            except OSError:
                held.close()
                continue
            return held
    raise RuntimeError("no free even loopback port")


class BindErrorTests(TestCase):
    """
    A port in use, or an address that is not local, ends start-up with one
    line naming the key, and status 1.
    """

    timeout = 60

    def setUp(self) -> None:
        self.directory = self.mktemp()

    def server(self, name: str, **overrides: Any) -> RecordingServer:
        return RecordingServer(
            f"{self.directory}/{name}",
            freePort(),
            freePort(),
            reactor=reactor,
            **overrides,
        )

    @defer.inlineCallbacks
    def assertStartUpError(self, server: RecordingServer, expected: str) -> Any:
        self.addCleanup(server.stop)
        code = yield server.run()
        self.assertEqual(code, 1, server.output)
        self.assertEqual(
            server.stderr.splitlines(),
            [f"callback: {server.configPath}: {expected}"],
            server.output,
        )
        self.assertNotIn("Traceback", server.output)

    @defer.inlineCallbacks
    def test_secondServerOnTheSameSipPort(self) -> Any:
        """
        A second server configured with the SIP port of a running one exits
        1 with one line on stderr, and the first one keeps its port.
        """
        first = self.server("first")
        yield startManaged(self, first)
        second = self.server("second", port=first.sipPort)
        yield self.assertStartUpError(
            second,
            f"[sip] port: cannot bind udp {LOOPBACK}:{first.sipPort}:"
            " Address already in use",
        )
        yield sleep(reactor, 0.2)
        self.assertTrue(first.running)

    @defer.inlineCallbacks
    def test_iifPortInUse(self) -> Any:
        """
        An IIF port that another server holds is reported as
        C{[callback] listen_port}.
        """
        first = self.server("first")
        yield startManaged(self, first)
        second = self.server("second", listen_port=first.iifPort)
        yield self.assertStartUpError(
            second,
            f"[callback] listen_port: cannot bind udp {LOOPBACK}:{first.iifPort}:"
            " Address already in use",
        )

    @defer.inlineCallbacks
    def test_sipAddressNotLocal(self) -> Any:
        """
        A SIP bind address that is not one of this host's is reported as
        C{[sip] address}.
        """
        server = self.server("remote", address="192.0.2.1")
        yield self.assertStartUpError(
            server,
            f"[sip] address: cannot bind udp 192.0.2.1:{server.sipPort}:"
            " Cannot assign requested address",
        )

    @defer.inlineCallbacks
    def test_rtpRangeInUse(self) -> Any:
        """
        An RTP port range with no free port is reported as
        C{[media] rtp_ports} at start-up, not at the first call.
        """
        held = holdEvenPort()
        self.addCleanup(held.close)
        port = held.getsockname()[1]
        server = self.server("rtp", sections={"media": {"rtp_ports": f"{port}-{port}"}})
        yield self.assertStartUpError(
            server,
            f"[media] rtp_ports: cannot bind udp {LOOPBACK}:{port}-{port}:"
            " no free RTP port in range",
        )


class PackagedPromptsTests(TestCase):
    """
    A configuration without [media] plays the prompts shipped in the package.
    """

    timeout = 60

    @defer.inlineCallbacks
    def test_defaultAnnouncementWithoutMediaSection(self) -> Any:
        """
        With no [media] section, user1 hears the spec's default announcement
        00080002 from the package's prompts as soon as it answers.
        """
        if SIPP is None:
            raise self.skipTest("sipp is not installed (Debian package sip-tester)")
        receiver = RTPReceiver()
        listening = reactor.listenUDP(0, receiver, interface=LOOPBACK)
        self.addCleanup(listening.stopListening)
        rtp = str(listening.getHost().port)
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        uas = SippUAS(
            str(directory),
            scenario=MEDIA_SCENARIO,
            extraArgs=["-key", "rtp1", rtp, "-key", "rtp2", rtp],
        )
        yield startManaged(self, uas)
        client = ASClient(reactor)
        client.start()
        self.addCleanup(client.stop)
        server = ServerProcess(str(directory), uas.port, client.port)
        del server.sections["media"]
        client.defaultTarget = server.iifAddress
        yield startManaged(self, server)
        self.assertNotIn("[media]", server.configPath.read_text())
        self.assertEqual(
            len(server.logLines(f"from {PACKAGED_PROMPTS}: 00080002 00080003")), 1
        )

        client.request("p1", "media1", "media2", duration=30)
        self.assertEqual((yield client.expectAck("p1")), "ok")
        announcement = list(
            PromptCatalogue.load(PACKAGED_PROMPTS).announcement("00080002", "PCMU")
        )
        yield pollUntil(reactor, lambda: len(receiver.packets) >= len(announcement), 10)
        client.send("CANCEL: id=p1;")
        yield client.expectResponse("p1", timeout=10)
        # Frame by frame, placed by RTP timestamp: on a loaded machine the
        # player skips the frames it is too late for (the timestamp jumps).
        first = receiver.packets[0][1]
        heard = {}
        for _, packet in receiver.packets:
            index = ((packet["ts"] - first["ts"]) % 2**32) // 160
            if index < len(announcement):
                heard[index] = packet["payload"]
        self.assertEqual(first["marker"], 1)
        self.assertGreater(len(heard), 0.9 * len(announcement))
        self.assertEqual(heard, {i: announcement[i] for i in heard})
