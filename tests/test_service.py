"""
Tests for L{callback_tw.service.CallbackService} as L{callback_tw.tap.buildService}
assembles it: the whole server started and stopped in-process on a test reactor,
checking what it binds, in which order, and what an AS sees when it stops.
"""

from __future__ import annotations

import gc
import os
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import succeed
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from callback_tw.config import loadConfig
from callback_tw.config.values import PACKAGED_PROMPTS
from callback_tw.tap import buildService, loadPrompts
from tests.siphelpers import FarEnd, useFakeReactor
from tests.storehelpers import MemoryStore

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIG = """\
[callback]
listen_address = 127.0.0.1
listen_port = 5080
default_caller = 1000
outbound_peer = pss
max_duration = 600
shutdown_timeout = 2
[sip]
address = 127.0.0.1
port = 0
max_requests_per_source = 3
[peer_servers]
pss = 127.0.0.1:5070
as1 = 127.0.0.1:6000
[media]
prompts = {prompts}
"""

AS = ("127.0.0.1", 6000)
"""The application server the tests speak for (a peer server of L{CONFIG})."""

PROVIDER = ("127.0.0.1", 5070)
"""Where every leg goes: the outbound peer of L{CONFIG}."""


class FakeUDPPort:
    """
    A bound UDP port of L{ServiceReactor}: records what is written, never sends.

    @ivar how: C{"listenUDP"} or C{"adoptDatagramPort"}.
    @ivar written: every C{(data, address)} written, in order.
    @ivar closed: whether C{stopListening} was called.
    """

    def __init__(
        self, reactor: ServiceReactor, how: str, host: str, port: int, protocol: Any
    ) -> None:
        self._reactor = reactor
        self.how = how
        self.host = host
        self.port = port
        self.protocol = protocol
        self.written: list[tuple[bytes, Any]] = []
        self.closed = False

    def write(self, data: bytes, addr: Any) -> None:
        self.written.append((data, addr))

    def getHost(self) -> IPv4Address:
        return IPv4Address("UDP", self.host, self.port)

    def stopListening(self) -> Any:
        self.closed = True
        self._reactor.closed.append(self)
        self.protocol.doStop()
        return succeed(None)


class ServiceReactor(MemoryReactorClock):
    """
    L{MemoryReactorClock} with the UDP the server needs (it has no C{listenUDP}):
    every port bound is recorded in C{bound}, every port closed in C{closed}, in
    order.
    """

    def __init__(self) -> None:
        super().__init__()
        self.bound: list[FakeUDPPort] = []
        self.closed: list[FakeUDPPort] = []
        self._nextPort = 40000

    def _bind(self, how: str, host: str, port: int, protocol: Any) -> FakeUDPPort:
        if port == 0:
            port, self._nextPort = self._nextPort, self._nextPort + 2
        bound = FakeUDPPort(self, how, host, port, protocol)
        self.bound.append(bound)
        protocol.makeConnection(bound)
        return bound

    def listenUDP(
        self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192
    ) -> FakeUDPPort:
        return self._bind("listenUDP", interface, port, protocol)

    def adoptDatagramPort(
        self, fileDescriptor: int, addressFamily: int, protocol: Any, maxPacketSize=8192
    ) -> FakeUDPPort:
        return self._bind("adoptDatagramPort", "", 0, protocol)

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)

    def run(self, seconds: float, step: float = 0.05) -> None:
        """Let C{seconds} pass in small steps, as a running reactor would."""
        for _ in range(round(seconds / step)):
            self.advance(step)


class BuiltServiceCase(SynchronousTestCase):
    """
    A whole server built by L{buildService} from L{CONFIG} (plus
    C{callbackConfig} lines in C{[callback]} and C{extraConfig} sections) on
    a L{ServiceReactor}, with a L{MemoryStore}.
    """

    extraConfig = ""
    callbackConfig = ""

    def setUp(self) -> None:
        # sippy's timers run on one process-wide dispatcher, which the SIP stack
        # points at its own reactor when it starts; useFakeReactor puts the
        # previous one back (and cancels leftovers) after the test.
        useFakeReactor(self)
        # Starting tunes the process's garbage collector; undo that.
        self.addCleanup(gc.set_threshold, *gc.get_threshold())
        self.addCleanup(gc.unfreeze)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "callback.ini")
        with open(path, "w", encoding="utf-8") as f:
            text = CONFIG.format(prompts=PACKAGED_PROMPTS)
            text = text.replace("[callback]\n", "[callback]\n" + self.callbackConfig)
            f.write(text + self.extraConfig)
        config = loadConfig(path)
        self.reactor = ServiceReactor()
        self.store = MemoryStore(clock=self.reactor)
        self.service = buildService(
            config,
            self.reactor,
            loadPrompts(config),
            openStore=lambda: succeed(self.store),
        )

    def start(self) -> tuple[FakeUDPPort, FakeUDPPort]:
        """
        Start the service; return its SIP and IIF ports.
        """
        self.service.startService()
        self.addCleanup(self.stopIfRunning)
        sip, iif = self.reactor.bound[:2]
        return sip, iif

    def stopIfRunning(self) -> None:
        if self.service.running:
            self.stop()

    def stop(self) -> None:
        """
        Stop the service, letting time pass while it waits, until it has stopped.
        """
        d = self.service.stopService()
        self.reactor.run(self.service.config.callback.shutdownTimeout + 1)
        self.successResultOf(d)


class CallbackServiceTests(BuiltServiceCase):
    """
    The assembled server, started and stopped on a L{ServiceReactor}.
    """

    def start(self) -> tuple[FakeUDPPort, FakeUDPPort]:
        """
        Start the service; return its SIP and IIF ports.
        """
        self.service.startService()
        self.addCleanup(self.stopIfRunning)
        sip, iif = self.reactor.bound
        return sip, iif

    def provider(self, sip: FakeUDPPort, message: str) -> None:
        """The outbound peer sends C{message} to the server's SIP port."""
        sip.protocol.datagramReceived(message.encode(), PROVIDER)
        self.reactor.advance(0)

    def test_bindsSipThenIIF(self) -> None:
        """
        Starting binds the SIP port first, then the IIF port on the configured
        address and port, whose datagrams go to the IIF protocol; nothing else is
        bound before a callback needs it.
        """
        sip, iif = self.start()
        self.assertEqual(sip.how, "adoptDatagramPort")
        self.assertEqual(
            (iif.how, iif.host, iif.port), ("listenUDP", "127.0.0.1", 5080)
        )
        self.assertIs(iif.protocol, self.service.iif)
        self.assertEqual(len(self.reactor.bound), 2)
        self.assertTrue(self.service.running)

    def test_periodicJobsOnTheReactor(self) -> None:
        """
        The overload guard's tick and the full garbage collection are timers of
        the reactor the service was built with, only while it runs.
        """
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.start()
        delays = sorted(
            c.getTime() - self.reactor.seconds() for c in self.reactor.getDelayedCalls()
        )
        self.assertIn(0.05, delays)
        self.assertIn(600.0, delays)
        self.stop()
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_requestPlacesACall(self) -> None:
        """
        A REQUEST from a peer server is acknowledged on the IIF port, user1 is
        called through the outbound peer, and the leg's RTP port is bound then.
        """
        sip, iif = self.start()
        iif.protocol.datagramReceived(
            b"REQUEST: id=7;user1=100;user2=101;duration=60;", AS
        )
        self.assertEqual(iif.written, [(b"ACK: id=7;code=ok;", AS)])
        [(invite, destination)] = sip.written
        self.assertTrue(invite.startswith(b"INVITE sip:100@127.0.0.1:5070"), invite)
        self.assertEqual(destination, PROVIDER)
        rtp = self.reactor.bound[2]
        self.assertEqual((rtp.how, rtp.host), ("listenUDP", "127.0.0.1"))
        self.assertIn(b"m=audio %d RTP/AVP" % (rtp.port,), invite)

    def test_sipPerSourceLimitFromConfig(self) -> None:
        """
        [sip] max_requests_per_source reaches the SIP stack: a stranger's
        fourth out-of-dialog request in one second gets no answer.
        """
        sip, iif = self.start()
        stranger = ("127.0.0.9", 5099)
        for n in range(5):
            options = (
                f"OPTIONS sip:probe@127.0.0.1:{sip.port} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.9:5099;branch=z9hG4bK-opt-{n}\r\n"
                "Max-Forwards: 70\r\n"
                "From: <sip:probe@127.0.0.9>;tag=p\r\n"
                f"To: <sip:probe@127.0.0.1>\r\n"
                f"Call-ID: opt-{n}@127.0.0.9\r\n"
                f"CSeq: {n + 1} OPTIONS\r\n"
                "Content-Length: 0\r\n\r\n"
            )
            sip.protocol.datagramReceived(options.encode(), stranger)
        self.reactor.advance(0)
        answers = [d for d, a in sip.written if a == stranger]
        self.assertEqual(len(answers), 3, answers)
        self.assertTrue(all(d.startswith(b"SIP/2.0 200") for d in answers), answers)

    def test_durationAboveMaximumRefused(self) -> None:
        """
        A REQUEST asking for more than max_duration is refused with code=fail and
        places no call.
        """
        sip, iif = self.start()
        iif.protocol.datagramReceived(
            b"REQUEST: id=8;user1=100;user2=101;duration=601;", AS
        )
        self.assertEqual(iif.written, [(b"ACK: id=8;code=fail;", AS)])
        self.assertEqual(sip.written, [])

    def test_stopReleasesRunningCallbacks(self) -> None:
        """
        Stopping releases a running callback while SIP and the IIF port are up:
        user1's ringing INVITE is cancelled, the RESPONSE reaches the AS before the
        IIF port closes, and the service waits for the CANCEL to be answered. The
        IIF port closes before SIP; once stopped every port is closed and no
        delayed call is left on the reactor.
        """
        sip, iif = self.start()
        iif.protocol.datagramReceived(
            b"REQUEST: id=7;user1=100;user2=101;duration=60;", AS
        )
        rtp = self.reactor.bound[2]
        far = FarEnd(port=PROVIDER[1])
        invite = sip.written[0][0].decode()
        self.provider(sip, far.response(invite, 180, "Ringing"))
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

        d = self.service.stopService()
        [(cancel, destination)] = sip.written[1:]
        self.assertTrue(cancel.startswith(b"CANCEL sip:100@127.0.0.1:5070"), cancel)
        self.assertEqual(destination, PROVIDER)
        self.assertEqual(
            iif.written,
            [(b"ACK: id=7;code=ok;", AS), (b"RESPONSE: id=7;real_duration=0;", AS)],
        )
        self.assertEqual(self.reactor.closed, [rtp])
        self.provider(sip, far.response(cancel.decode(), 200, "OK"))
        self.provider(sip, far.response(invite, 487, "Request Terminated"))
        self.reactor.run(0.1)
        self.successResultOf(d)

        self.assertEqual(self.service.manager.active, {})
        self.assertEqual(self.reactor.closed, [rtp, iif, sip])
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.assertFalse(self.service.running)
        self.assertEqual([e for e in events if "unanswered" in e["log_format"]], [])

    def test_stopGivesUpWaitingAfterTimeout(self) -> None:
        """
        A request nobody answers holds the stop for shutdown_timeout seconds at
        most; then the service says so and stops anyway, leaving nothing behind.
        """
        sip, iif = self.start()
        iif.protocol.datagramReceived(
            b"REQUEST: id=7;user1=100;user2=101;duration=60;", AS
        )
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        d = self.service.stopService()
        self.reactor.run(1.9)
        self.assertNoResult(d)
        self.reactor.run(0.2)
        self.successResultOf(d)
        [warning] = [e for e in events if "unanswered" in e["log_format"]]
        self.assertEqual((warning["n"], warning["t"]), (1, 2.0))
        self.assertEqual(
            iif.written,
            [(b"ACK: id=7;code=ok;", AS), (b"RESPONSE: id=7;real_duration=0;", AS)],
        )
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_commandsWaitForRecovery(self) -> None:
        """
        The IIF port is bound at start (a taken port is a start-up error),
        but a REQUEST that arrives before recovery is done gets no answer
        and places no call; the same REQUEST once the service is ready is
        accepted.
        """
        from twisted.internet.defer import Deferred

        opened: Deferred = Deferred()
        self.service._openStore = lambda: opened
        sip, iif = self.start()
        request = b"REQUEST: id=9;user1=100;user2=101;duration=60;"
        iif.protocol.datagramReceived(request, AS)
        self.assertEqual((iif.written, sip.written), ([], []))
        opened.callback(self.store)
        self.reactor.advance(0.1)
        iif.protocol.datagramReceived(request, AS)
        self.reactor.advance(0.1)
        self.assertEqual(iif.written, [(b"ACK: id=9;code=ok;", AS)])

    def test_storeJobsAndClose(self) -> None:
        """
        While running, the heartbeat (every second) and the retention purge
        (daily, and once at start) are timers of the service's reactor; at
        stop they are gone and the store is closed after the RESPONSE of a
        released callback is recorded as sent.
        """
        sip, iif = self.start()
        delays = {
            round(c.getTime() - self.reactor.seconds(), 3)
            for c in self.reactor.getDelayedCalls()
        }
        self.assertTrue({1.0, 86400.0} <= delays, delays)
        iif.protocol.datagramReceived(
            b"REQUEST: id=7;user1=100;user2=101;duration=60;", AS
        )
        self.stop()
        self.assertTrue(self.store.closed)
        record = self.store.rows["7"]
        self.assertEqual(record.endCause, "server shutting down")
        self.assertIsNotNone(record.responseSentAt)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_recoveryBeforeTheIIFPort(self) -> None:
        """
        A callback a crash left unfinished (no leg placed) is ended as
        "recovered" before the IIF port serves commands, and its RESPONSE is
        the first datagram the port sends, to the address that asked.
        """
        from callback_tw.store import NewCallback

        self.store.accept(
            NewCallback("old", "as1", "127.0.0.1:6000", "100", "101", 60), at=1.0
        )
        sip, iif = self.start()
        self.assertEqual(iif.written, [(b"RESPONSE: id=old;real_duration=0;", AS)])
        record = self.store.rows["old"]
        self.assertEqual(record.endCause, "recovered")
        self.assertIsNotNone(record.responseSentAt)

    def test_heartbeatStartsAfterRecovery(self) -> None:
        """
        A restart 70 s after the last heartbeat of a run that crashed with a
        callback joined at 5.0 (last heartbeat 30.0): recovery counts the
        talk time up to that heartbeat (RESPONSE real_duration=25), not the
        downtime, because this run's first heartbeat (it beats at once) is
        written only after recovery settled the checkpoints.
        """
        from callback_tw.store import NewCallback

        crashed = MemoryStore(rows=self.store.rows, servers=self.store.servers)
        crashed.heartbeat(at=1.0)
        crashed.accept(
            NewCallback("old", "as1", "127.0.0.1:6000", "100", "101", 60), at=2.0
        )
        crashed.update("old", state="joined", joinedAt=5.0, checkpointAt=5.0)
        crashed.heartbeat(at=30.0)
        self.reactor.advance(100)
        before = len(self.store.writes)
        sip, iif = self.start()
        self.assertEqual(iif.written, [(b"RESPONSE: id=old;real_duration=25;", AS)])
        kinds = [kind for kind, _, _ in self.store.writes[before:]]
        self.assertLess(kinds.index("settleCheckpoints"), kinds.index("heartbeat"))
        self.assertEqual(self.store.servers["srv1"], (100.0, 100.0))
        self.reactor.advance(1)
        self.assertEqual(self.successResultOf(self.store.aliveAt()), 101.0)
