"""
Socket tuning shared by the SIP and IIF ports.
"""

from __future__ import annotations

import socket

__all__ = ["SOCKET_BUFFER", "setBuffers"]


#: Socket buffer asked for on SIP and IIF sockets. The default (~200 KiB)
#: overflows during a short reactor stall at a few hundred messages per
#: second, and every datagram the kernel drops costs a retransmission
#: 0.5 s later (or a callback). The kernel caps it at net.core.rmem_max.
SOCKET_BUFFER = 4 * 1024 * 1024


def setBuffers(sock: socket.socket, size: int = SOCKET_BUFFER) -> None:
    """Ask for large receive and send buffers; the kernel may give less."""
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
        except OSError:
            pass
