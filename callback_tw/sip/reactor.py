# -*- test-case-name: tests.test_sip_reactor -*-
"""
sippy on the Twisted reactor.

sippy 2.x normally runs its own event loop (C{sippy.Core.EventDispatcher.ED2}, on
the ElPeriodic extension) and its own UDP threads (C{sippy.Udp_server}). This
server has one loop, Twisted's, and no threads on the call path. This module is
the only place that knows about ED2; it:

  - installs a stand-in module as C{sippy.Core.EventDispatcher} whose C{ED2}
    runs sippy's timers (C{Timeout}, C{TimeoutAbsMono}, periodic timers) and
    call-from-thread on an injected reactor. It must happen before any other
    sippy module is imported, because C{sippy.Time.Timeout} and
    C{sippy.Udp_server} bind C{ED2} at import time; importing the real module
    under Twisted is harmful (it blocks SIGURG and starts a thread). So every
    module of ours imports sippy only after importing this one.
  - gives C{SipTransactionManager} a UDP transport on the reactor through its
    C{model_udp_server} hook (L{ReactorUdpServer}), and normalises what sippy
    gets wrong there (L{ReactorTransactionManager}).
  - routes sippy's C{dump_exception} (which prints to stdout and swallows) to
    C{twisted.logger}, so errors are seen by operators and by trial.

Everything is driven by C{ED2.reactor}; a unit test sets it to a
L{twisted.internet.task.Clock} with L{useReactor} and steps SIP timers.
"""

from __future__ import annotations

import errno
import socket
import sys
import types
from collections.abc import Callable
from typing import Any

from twisted.internet import abstract
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from callback_tw.sockets import setBuffers

_log = Logger(namespace="callback_tw.sip")


class ReactorTimer:
    """
    One sippy timer (what C{ED2.regTimer} returns), scheduled with the
    reactor's C{callLater}.

    sippy reads C{etime} (a C{MonoTime}) and may set C{cb_with_ts}; it calls
    C{go()} to arm, C{cancel()} to disarm and C{spread_runs(p)} to randomise
    a periodic interval. C{nticks} is 1 for a one-shot timer, -1 for a
    periodic timer that runs until cancelled, and N > 1 for N runs. Periodic
    timers re-arm from their previous deadline, not from "now", so they do
    not drift.
    """

    cb_with_ts = False

    def __init__(
        self,
        dispatcher: ReactorDispatcher,
        callback: Callable[..., Any],
        ival: Any,
        nticks: int | None,
        absTime: bool,
        params: tuple[Any, ...],
    ) -> None:
        self._dispatcher = dispatcher
        self.cb_func: Callable[..., Any] | None = callback
        self.ival = ival
        self.nticks = 1 if nticks is None else nticks
        self.abs_time = absTime
        self.cb_params = params
        self.etime = None
        self._call = None
        self._deadline = 0.0
        self._randomizer: Callable[[float], float] | None = None

    def spread_runs(self, p: float) -> None:
        """Randomise each interval by +/- C{p} (a fraction), as ED2 does."""
        from random import random

        self._randomizer = lambda x: x * (1.0 + p * (1.0 - 2.0 * random()))

    def _interval(self) -> float:
        ival = float(self.ival)
        if self._randomizer is not None:
            ival = self._randomizer(ival)
        return max(ival, 0.0)

    def go(self) -> None:
        """Arm the timer."""
        from sippy.Time.MonoTime import MonoTime

        if self.cb_func is None:
            return
        reactor = self._dispatcher.reactor
        now = MonoTime()
        if self.abs_time:
            self.etime = self.ival
            delay = max(self.ival.monot - now.monot, 0.0)
            self.nticks = 1
        else:
            delay = self._interval()
            self.etime = now.getOffsetCopy(delay)
        self._deadline = reactor.seconds() + delay
        self._call = reactor.callLater(delay, self._fire)
        self._dispatcher._armed.add(self)

    def _fire(self) -> None:
        from sippy.Time.MonoTime import MonoTime

        self._call = None
        callback, params = self.cb_func, self.cb_params
        if callback is None:
            return
        repeat = self.nticks == -1 or self.nticks > 1
        if repeat:
            if self.nticks > 1:
                self.nticks -= 1
            reactor = self._dispatcher.reactor
            ival = self._interval()
            self._deadline += ival
            self.etime = self.etime.getOffsetCopy(ival)
            self._call = reactor.callLater(
                max(self._deadline - reactor.seconds(), 0.0), self._fire
            )
        else:
            self._dispatcher._armed.discard(self)
        try:
            if self.cb_with_ts:
                callback(MonoTime(), *params)
            else:
                callback(*params)
        except Exception:
            _log.failure("sippy timer callback {callback!r} failed", callback=callback)
        if not repeat:
            self._cleanup()

    def cancel(self) -> None:
        """Disarm the timer; safe to call more than once."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._dispatcher._armed.discard(self)
        self._cleanup()

    def _cleanup(self) -> None:
        self.cb_func = None
        self.cb_params = ()

    @property
    def active(self) -> bool:
        return self._call is not None and self._call.active()


class ReactorDispatcher:
    """
    What sippy expects of C{ED2}, on a Twisted reactor.

    @ivar reactor: the reactor timers run on; L{useReactor} swaps it.
    """

    def __init__(self, reactor: Any = None) -> None:
        self.reactor = reactor
        self._armed: set[ReactorTimer] = set()

    def regTimer(
        self,
        timeout_cb: Callable[..., Any],
        ival: Any,
        nticks: int | None = 1,
        abs_time: bool = False,
        *cb_params: Any,
    ) -> ReactorTimer | None:
        """Create (not arm) a timer, as C{EventDispatcher2.regTimer}."""
        from sippy.Time.MonoTime import MonoTime

        if self.reactor is None:
            raise RuntimeError("sippy timer created before a reactor was installed")
        if nticks == 0:
            return None
        if abs_time and not isinstance(ival, MonoTime):
            raise TypeError("ival is not MonoTime")
        return ReactorTimer(self, timeout_cb, ival, nticks, abs_time, cb_params)

    def callFromThread(self, thread_cb: Callable[..., Any], *cb_params: Any) -> None:
        """Run C{thread_cb} on the reactor thread."""
        self.reactor.callFromThread(self._runLogged, thread_cb, cb_params)

    def callFromThreadSync(self, thread_cb: Callable[..., Any], *cb_params: Any) -> Any:
        """Run C{thread_cb} on the reactor thread and wait for its result."""
        from twisted.internet.threads import blockingCallFromThread

        return blockingCallFromThread(self.reactor, thread_cb, *cb_params)

    @staticmethod
    def _runLogged(callback: Callable[..., Any], params: tuple[Any, ...]) -> None:
        try:
            callback(*params)
        except Exception:
            _log.failure(
                "sippy call-from-thread {callback!r} failed", callback=callback
            )

    def breakLoop(self, rval: int = 0) -> None:
        """sippy's way to stop its loop; the reactor is stopped by its owner."""
        _log.debug("sippy asked to break its loop (ignored: the reactor owns the loop)")

    def loop(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(
            "sippy's own loop must not run: callback_tw runs sippy on the reactor"
        )

    def regSignal(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("sippy signal handlers are not supported on the reactor")

    def armedTimers(self) -> list[ReactorTimer]:
        """The timers that are still armed (for shutdown and for tests)."""
        return list(self._armed)

    def cancelAll(self) -> int:
        """
        Cancel every armed sippy timer.

        sippy's C{SipTransactionManager.shutdown} cancels only its purge
        timer; transaction timers and the UA's go-dead timers keep firing and
        crash on a torn-down manager. Stopping the stack calls this.
        @return: how many were cancelled.
        """
        timers = list(self._armed)
        for timer in timers:
            timer.cancel()
        return len(timers)


ED2 = ReactorDispatcher()


def _installDispatcher() -> None:
    """
    Make C{sippy.Core.EventDispatcher} our stand-in before sippy loads it.
    """
    name = "sippy.Core.EventDispatcher"
    existing = sys.modules.get(name)
    if existing is not None:
        if getattr(existing, "ED2", None) is ED2:
            return
        raise ImportError(
            "sippy's own event dispatcher was imported before callback_tw.sip.reactor; "
            "import callback_tw.sip.reactor before any sippy module"
        )
    import sippy.Core  # the package only; its __init__ loads nothing else

    module = types.ModuleType(
        name, "callback_tw stand-in: sippy timers on the Twisted reactor"
    )
    module.ED2 = ED2  # type: ignore[attr-defined]
    module.EventDispatcher2 = ReactorDispatcher  # type: ignore[attr-defined]
    module.EventListener = ReactorTimer  # type: ignore[attr-defined]
    sys.modules[name] = module
    sippy.Core.EventDispatcher = module  # type: ignore[attr-defined]


_installDispatcher()

# Only now may sippy be imported.
from sippy.Core import Exceptions as _sippyExceptions  # noqa: E402
from sippy.Network_server import Remote_address  # noqa: E402
from sippy.SipTransactionManager import SipTransactionManager  # noqa: E402
from sippy.Time.MonoTime import MonoTime  # noqa: E402
from sippy.Udp_server import Udp_server_opts  # noqa: E402

_originalDumpException = _sippyExceptions.dump_exception


def dumpException(msg: str, f: Any = None, extra: Any = None) -> None:
    """
    Stand-in for sippy's C{dump_exception}: log the current exception with
    C{twisted.logger} (where trial and operators see it) instead of stdout.
    """
    _log.failure(
        "sippy: {msg}{extra}",
        Failure(),
        msg=msg,
        extra="" if extra is None else f"\n{extra}",
    )


def routeSippyErrors() -> None:
    """
    Replace C{dump_exception} in every loaded sippy module.

    sippy modules bind it with C{from ... import dump_exception}, so each
    module's global has to be replaced; this runs after the stack imported
    the modules it uses (and again whenever it is called).
    """
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "sippy" or name.startswith("sippy.")):
            continue
        if getattr(module, "dump_exception", None) is _originalDumpException:
            module.dump_exception = dumpException  # type: ignore[attr-defined]


def useReactor(reactor: Any) -> Any:
    """
    Run sippy's timers on C{reactor} from now on.

    @return: the previous reactor, so a test can restore it.
    """
    previous = ED2.reactor
    ED2.reactor = reactor
    return previous


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
        self.stats = [0, 0, 0]
        family = self.uopts.family or socket.AF_INET
        host, port = self.uopts.laddress
        port = int(port)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            setBuffers(sock)
            sock.setblocking(False)
            sock.bind((host, port))
            self.uopts.laddress = sock.getsockname()[:2]
            if uopts.flags == 0:
                # sippy's dry run: only proves the address is free.
                return
            self._port = self._reactor.adoptDatagramPort(
                sock.fileno(), family, _SipDatagramProtocol(self)
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
                self._reactor.callLater(0.01, self._write, data, address, retries - 1)
                return
            _log.warn(
                "SIP message to {address} not sent: {error}", address=address, error=e
            )

    def shutdown(self) -> None:
        """Stop listening; L{stopped} is the Deferred of the port closing."""
        self.uopts.data_callback = None
        if self._port is not None:
            self.stopped = self._port.stopListening()
            self._port = None

    stopped = None


class ReactorTransactionManager(SipTransactionManager):
    """
    sippy's transaction manager on the reactor's UDP transport, with the
    traps found in sippy 2.5 handled here.
    """

    model_udp_server = (ReactorUdpServer, Udp_server_opts)

    #: RFC 3261 17.1.2.2 / 17.2.1: T2, the cap on retransmission intervals
    #: of non-INVITE requests and of 2xx responses to INVITE.
    T2 = 4.0

    def timerA(self, t: Any) -> None:
        """
        Retransmit. sippy doubles the interval without bound for every
        transaction; RFC 3261 lets only an INVITE client transaction (Timer
        A) do that, while non-INVITE requests (Timer E) and a UAS's 2xx are
        capped at T2, so a lost BYE is retried every 4 s, not after 8, 16 s.
        """
        from sippy.Time.Timeout import Timeout

        self.transmitData(t.userv, t.data, t.address)
        inviteClient = t.method == "INVITE" and self.tclient.get(t.tid) is t
        t.tout = t.tout * 2 if inviteClient else min(t.tout * 2, self.T2)
        t.teA = Timeout(self.timerA, t.tout, 1, t)

    def newTransaction(self, msg: Any, *args: Any, **kwargs: Any) -> Any:
        # A Contact with "transport=UDP" (SIPp, many phones) becomes the
        # in-dialog target; sippy compares the transport case-sensitively
        # and raises on every re-INVITE and BYE. Normalise it.
        target = msg.getTarget()
        if target is not None:
            address, transport = target
            if isinstance(transport, str) and transport != transport.lower():
                msg.setTarget((address, transport.lower()))
        return super().newTransaction(msg, *args, **kwargs)

    def servers(self) -> list[ReactorUdpServer]:
        """The UDP servers sippy created (one when the address is fixed)."""
        if self.l4r is None:
            return []
        return list(self.l4r.cache_l2s.values())
