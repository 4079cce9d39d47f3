# -*- test-case-name: tests.test_sip_adapter -*-
"""
sippy's UDP transport on a Twisted UDP port.

C{SipTransactionManager} creates its servers from its C{model_udp_server}
class attribute; sippy's own C{Udp_server} runs reader and writer threads.
L{ReactorUdpServer} offers the same interface on the reactor: no threads, no
blocking writes or name look-ups. Checked against sippy 2.5.0
(C{Udp_server}'s C{send_to}, C{getSIPaddr}, C{addr2str}, C{shutdown},
C{uopts}).
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from sippy.Network_server import Remote_address
from sippy.Time.MonoTime import MonoTime
from sippy.Udp_server import Udp_server_opts
from twisted.internet import abstract
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from callback_tw.sockets import setBuffers
from callback_tw.timers import cancelDelayed

__all__ = ["ReactorUdpServer"]

_log = Logger(namespace="callback_tw.sip")

#: The largest UDP payload: a SIP datagram is read whole (Twisted reads
#: 8 192 bytes unless told otherwise, and drops the rest silently).
MAX_DATAGRAM = 65535


class _SipDatagramProtocol(DatagramProtocol):
    """Hands datagrams from the reactor to sippy's data callback."""

    noisy = False

    def __init__(self, server: ReactorUdpServer) -> None:
        self._server = server

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        self._server.datagramReceived(datagram, addr)


class ReactorUdpServer:
    """
    sippy's UDP server interface (what C{Udp_server} offers to
    C{SipTransactionManager}), on a Twisted UDP port.

    The socket is bound at once (sippy binds, closes and re-binds in its
    constructor and expects that to be synchronous) and adopted by the
    reactor. Outgoing datagrams are written by the reactor; host names are
    resolved without blocking, and EAGAIN/ENOBUFS are retried shortly after.
    An address that cannot be bound raises L{CannotListenError}, like
    C{listenUDP}, for start-up to report in one line.

    The reactor comes from C{global_config['_reactor']}; the address put in
    Via/Contact/SDP (C{getSIPaddr}) from C{global_config['_sip_advertised']}
    when set, so a wildcard bind still advertises a real address.
    """

    transport = "udp"
    _retries = 10

    def __init__(self, global_config: dict[str, Any], uopts: Udp_server_opts) -> None:
        self.uopts = uopts.getCopy()
        self._reactor = global_config["_reactor"]
        self._advertised = global_config.get("_sip_advertised")
        self._port = None
        #: writes to try again shortly (EAGAIN); cancelled at shutdown.
        self._retryCalls: list[Any] = []
        self.stats = [0, 0, 0]
        family = self.uopts.family or socket.AF_INET
        host, port = self.uopts.laddress
        port = int(port)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            # No SO_REUSEADDR: on UDP it would let a second server bind the
            # same address and port and take this one's responses; a port in
            # use must stop start-up instead.
            setBuffers(sock)
            sock.setblocking(False)
            try:
                sock.bind((host, port))
            except OSError as e:
                raise CannotListenError(host, port, e) from None
            self.uopts.laddress = sock.getsockname()[:2]
            if uopts.flags == 0:
                # sippy's dry run: only proves the address is free.
                return
            self._port = self._reactor.adoptDatagramPort(
                sock.fileno(),
                family,
                _SipDatagramProtocol(self),
                maxPacketSize=MAX_DATAGRAM,
            )
        finally:
            # The reactor holds its own duplicate of the descriptor.
            sock.close()

    @property
    def port(self) -> int:
        """The bound local port (useful when configured as 0)."""
        return int(self.uopts.laddress[1])

    def getSIPaddr(self) -> tuple[tuple[str, int], str]:
        host = self._advertised or self.uopts.laddress[0]
        return ((host, self.port), self.transport)

    def addr2str(self, address: tuple[str, int]) -> str:
        return f"{self.transport}:{address[0]}:{address[1]}"

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        callback = self.uopts.data_callback
        if not data or callback is None:
            return
        self.stats[2] += 1
        try:
            callback(data, Remote_address(addr, self.transport), self, MonoTime())
        except Exception:
            # Only errors in our own dialogs get here (the transaction
            # manager reports bad messages as one line): a bug of ours.
            _log.failure("SIP message from {addr} could not be handled", addr=addr)

    def send_to(
        self, data: bytes | str, address: tuple[str, int], delayed: bool = False
    ) -> None:
        """Send one SIP message; never blocks, never raises into sippy."""
        if not isinstance(data, bytes):
            data = data.encode("utf-8")
        host, port = address[0], int(address[1])
        if host.startswith("["):
            host = host[1:-1]
        if abstract.isIPAddress(host) or abstract.isIPv6Address(host):
            self._write(data, (host, port), self._retries)
            return
        d = self._reactor.resolve(host)
        d.addCallback(lambda ip: self._write(data, (ip, port), self._retries))
        d.addErrback(
            lambda f: _log.warn(
                "cannot resolve SIP destination {host}: {error}",
                host=host,
                error=f.value,
            )
        )

    def _write(self, data: bytes, address: tuple[str, int], retries: int) -> None:
        if self._port is None:
            return
        try:
            self._port.write(data, address)
            self.stats[0] += 1
        except OSError as e:
            if (
                e.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS)
                and retries > 0
            ):
                self._retryCalls = [c for c in self._retryCalls if c.active()]
                self._retryCalls.append(
                    self._reactor.callLater(
                        0.01, self._write, data, address, retries - 1
                    )
                )
                return
            _log.warn(
                "SIP message to {address} not sent: {error}", address=address, error=e
            )

    def shutdown(self) -> None:
        """
        Stop listening and drop the writes waiting to be retried;
        L{stopped} is the Deferred of the port closing.
        """
        self.uopts.data_callback = None
        for call in self._retryCalls:
            cancelDelayed(call)
        self._retryCalls = []
        if self._port is not None:
            self.stopped = self._port.stopListening()
            self._port = None

    stopped = None
