"""
Tests for L{callback_tw.media.rtp}: where a leg's RTP port is bound, and the
search of a configured port range.
"""

import random
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import SynchronousTestCase, TestCase

from callback_tw.media.rtp import RTPPort, RTPPortAllocator


class _Listening:
    """What C{listenUDP} returns: the bound port, and whether it was closed."""

    def __init__(self, port: int, interface: str, bound: dict) -> None:
        self._address = IPv4Address("UDP", interface, port)
        self._bound = bound
        self.stopped = False

    def getHost(self) -> IPv4Address:
        return self._address

    def stopListening(self) -> None:
        self.stopped = True
        self._bound.pop(self._address.port, None)


class _PortsReactor:
    """
    A reactor whose C{listenUDP} refuses the ports in C{busy} (another
    process holds them) and records every port tried, in order.

    @ivar anyPort: the port the kernel "chooses" for a request of port 0.
    @ivar bound: the ports bound now; C{listened}: every port ever bound.
    """

    anyPort = 49170

    def __init__(self, busy: set[int] = frozenset()) -> None:
        self.busy = set(busy)
        self.tried: list[int] = []
        self.interfaces: list[str] = []
        self.bound: dict[int, _Listening] = {}
        self.listened: list[_Listening] = []

    def listenUDP(
        self, port: int, protocol: DatagramProtocol, interface: str = ""
    ) -> _Listening:
        self.tried.append(port)
        self.interfaces.append(interface)
        if port in self.busy or port in self.bound:
            raise CannotListenError(interface, port, OSError("Address in use"))
        listening = _Listening(port or self.anyPort, interface, self.bound)
        self.bound[port or self.anyPort] = listening
        self.listened.append(listening)
        return listening


class PortRangeTests(SynchronousTestCase):
    """
    L{RTPPortAllocator.openPort} within a configured range: even ports only,
    from a random start, wrapping around, skipping ports in use.
    """

    def setUp(self) -> None:
        # The search starts at a random even port: a fixed seed makes each
        # run try the same starts, and the generator is left as it was.
        self.addCleanup(random.setstate, random.getstate())
        random.seed(20261129)

    def test_evenPortsOnly(self) -> None:
        """
        Only even ports of the range are tried; an odd low end is rounded up
        and an odd high end is left out.
        """
        fake = _PortsReactor(busy=set(range(10000, 10020)))
        allocator = RTPPortAllocator("192.0.2.1", (10001, 10011), reactor=fake)
        self.assertRaises(CannotListenError, allocator.openPort)
        self.assertEqual(sorted(fake.tried), [10002, 10004, 10006, 10008, 10010])

    def test_rangeExhausted(self) -> None:
        """
        When every port of the range is in use, each is tried once and
        L{CannotListenError} says no RTP port is free; nothing is left open.
        """
        fake = _PortsReactor(busy={20000, 20002, 20004})
        allocator = RTPPortAllocator("192.0.2.1", (20000, 20005), reactor=fake)
        error = self.assertRaises(CannotListenError, allocator.openPort)
        self.assertIn("no free RTP port in range", str(error))
        self.assertEqual(sorted(fake.tried), [20000, 20002, 20004])
        self.assertEqual(allocator.open, set())

    def test_rangeWithoutEvenPort(self) -> None:
        """
        A range holding no even port binds nothing: L{CannotListenError}.
        """
        fake = _PortsReactor()
        allocator = RTPPortAllocator("192.0.2.1", (30001, 30001), reactor=fake)
        self.assertRaises(CannotListenError, allocator.openPort)
        self.assertEqual(fake.tried, [])

    def test_portsInUseSkipped(self) -> None:
        """
        Ports in use are skipped until a free one binds; the port object
        reports the port bound and the advertised host.
        """
        fake = _PortsReactor(busy={40000, 40002, 40006})
        allocator = RTPPortAllocator("192.0.2.1", (40000, 40007), reactor=fake)
        for _ in range(20):
            fake.tried.clear()
            rtp = allocator.openPort()
            self.assertEqual(rtp.port, 40004)
            self.assertEqual(rtp.host, "192.0.2.1")
            self.assertEqual(fake.tried[-1], 40004)
            self.assertTrue(set(fake.tried[:-1]) <= {40000, 40002, 40006})
            rtp.close()

    def test_wrapAround(self) -> None:
        """
        The search starts anywhere in the range and wraps around past the
        high end, so every port is tried exactly once in ring order,
        whichever the start: the free port is found from every start.
        """
        evens = [50000, 50002, 50004, 50006, 50008]
        starts = set()
        for _ in range(200):
            fake = _PortsReactor(busy=set(evens) - {50000})
            allocator = RTPPortAllocator("192.0.2.1", (50000, 50008), reactor=fake)
            rtp = allocator.openPort()
            self.assertEqual(rtp.port, 50000)
            first = evens.index(fake.tried[0])
            self.assertEqual(
                fake.tried, (evens[first:] + evens[:first])[: len(fake.tried)]
            )
            self.assertEqual(fake.tried[-1], 50000)
            starts.add(fake.tried[0])
        self.assertEqual(starts, set(evens))

    def test_spreadOverRange(self) -> None:
        """
        Free ports are not always taken from the bottom of the range: the
        random start spreads legs over it.
        """
        fake = _PortsReactor()
        allocator = RTPPortAllocator("192.0.2.1", (60000, 60098), reactor=fake)
        ports = set()
        for _ in range(30):
            rtp = allocator.openPort()
            ports.add(rtp.port)
            rtp.close()
        self.assertGreater(len(ports), 5)


class AllocatorTests(SynchronousTestCase):
    """
    L{RTPPortAllocator} without a range, the bind address and closing.
    """

    def test_anyPort(self) -> None:
        """
        Without a range the kernel chooses: port 0 is asked for, once, and
        the port it bound is reported.
        """
        fake = _PortsReactor()
        allocator = RTPPortAllocator("192.0.2.1", reactor=fake)
        rtp = allocator.openPort()
        self.assertEqual(fake.tried, [0])
        self.assertEqual(rtp.port, _PortsReactor.anyPort)

    def test_anyPortRefused(self) -> None:
        """
        When even port 0 cannot be bound the error is L{CannotListenError}.
        """
        fake = _PortsReactor(busy={0})
        allocator = RTPPortAllocator("192.0.2.1", reactor=fake)
        self.assertRaises(CannotListenError, allocator.openPort)

    def test_bindHost(self) -> None:
        """
        The port binds on C{bindHost} (a wildcard, say) while C{host} is
        what the SDP advertises; without C{bindHost} it binds on C{host}.
        """
        fake = _PortsReactor()
        RTPPortAllocator("203.0.113.1", reactor=fake, bindHost="0.0.0.0").openPort()
        RTPPortAllocator("192.0.2.1", reactor=fake).openPort()
        self.assertEqual(fake.interfaces, ["0.0.0.0", "192.0.2.1"])

    def test_openAndClose(self) -> None:
        """
        An open port is in C{open} until closed; closing stops listening,
        leaves C{open} and may be repeated.
        """
        fake = _PortsReactor()
        allocator = RTPPortAllocator("192.0.2.1", (7000, 7003), reactor=fake)
        first = allocator.openPort()
        second = allocator.openPort()
        self.assertEqual(allocator.open, {first, second})
        self.assertEqual({first.port, second.port}, {7000, 7002})
        first.close()
        first.close()
        self.assertEqual(
            [listening.stopped for listening in fake.listened], [True, False]
        )
        self.assertEqual(list(fake.bound), [second.port])
        self.assertEqual(allocator.open, {second})

    def test_receivedDiscarded(self) -> None:
        """
        What arrives on a leg's port is counted and dropped.
        """
        rtp = RTPPort("192.0.2.1")
        rtp.datagramReceived(b"\x80\x00" + b"\x00" * 170, ("192.0.2.9", 4000))
        rtp.datagramReceived(b"\x80\x00" + b"\x00" * 170, ("192.0.2.9", 4000))
        self.assertEqual(rtp.received, 2)


class LoopbackTests(TestCase):
    """
    One real port on loopback, in the real reactor.
    """

    @defer.inlineCallbacks
    def test_bindsAndReleases(self) -> Any:
        """
        The port is really bound (a second bind of it fails) and really
        released by C{close}.
        """
        allocator = RTPPortAllocator("127.0.0.1", reactor=reactor)
        rtp = allocator.openPort()
        self.assertNotEqual(rtp.port, 0)
        other = DatagramProtocol()
        self.assertRaises(
            CannotListenError, reactor.listenUDP, rtp.port, other, interface="127.0.0.1"
        )
        rtp.close()
        # A UDP port closes its socket on the reactor's next turn.
        yield task.deferLater(reactor, 0.01, lambda: None)
        again = reactor.listenUDP(rtp.port, other, interface="127.0.0.1")
        yield again.stopListening()
