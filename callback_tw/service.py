# -*- test-case-name: tests.test_service -*-
"""
The running server: starts and stops the parts L{callback_tw.tap} built, in
the order that loses nothing.

Start: SIP first (legs need it), then the IIF port (commands need legs).
Stop: release every active callback (BYE/CANCEL) and send its RESPONSE while
both SIP and the IIF port are still up, bounded by C{shutdown_timeout}; then
close the IIF port, unregister the external line (bounded, 2 s), then SIP.
"""

from __future__ import annotations

import errno
import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

from twisted.application.internet import TimerService
from twisted.application.service import IService, MultiService
from twisted.internet.defer import inlineCallbacks
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from callback_tw.config import ConfigError
from callback_tw.sockets import setBuffers

if TYPE_CHECKING:
    from callback_tw.callback.announcer import Announcer
    from callback_tw.callback.manager import CallbackManager
    from callback_tw.callback.overload import OverloadGuard
    from callback_tw.config import Config
    from callback_tw.iif.protocol import IIFProtocol
    from callback_tw.media.player import RTPScheduler
    from callback_tw.media.prompts import PromptCatalogue
    from callback_tw.media.rtp import RTPPortAllocator
    from callback_tw.sip.registrar import Registrar
    from callback_tw.sip.routing import Router
    from callback_tw.sip.stack import SipStack

__all__ = ["CallbackService", "collectGarbage", "tuneGarbageCollector"]


class CallbackService(MultiService):
    """
    The whole server as one service (what C{twistd callback} runs).

    It holds every part (built by L{callback_tw.tap.buildService}) and only
    decides when each starts and stops. Its children start in this order:
    the full garbage collection timer, the SIP stack, the external line's
    registration (when there is one), the overload guard; the IIF port opens
    last.

    @ivar config: the configuration the parts were built from.
    @ivar sip: the L{SipStack}.
    @ivar registrar: the L{Registrar} of the local users, or L{None}.
    @ivar lineRegistration: the external line's
        L{callback_tw.sip.registration.LineRegistration}, or L{None}.
    @ivar router: the L{Router} every leg is placed through.
    @ivar rtpPorts: the L{RTPPortAllocator} of the legs' RTP ports.
    @ivar prompts: the announcements (L{PromptCatalogue}).
    @ivar scheduler: the L{RTPScheduler} that paces announcements.
    @ivar announcer: the L{Announcer}: what each party hears before the join.
    @ivar overloadGuard: the L{OverloadGuard}.
    @ivar manager: the L{CallbackManager}.
    @ivar iif: the L{IIFProtocol}; C{iifPort} its listening port while running.
    """

    _log = Logger()

    def __init__(
        self,
        config: Config,
        reactor: Any,
        *,
        sip: SipStack,
        registrar: Registrar | None,
        lineRegistration: IService | None,
        router: Router,
        rtpPorts: RTPPortAllocator,
        prompts: PromptCatalogue,
        scheduler: RTPScheduler,
        announcer: Announcer,
        overloadGuard: OverloadGuard,
        manager: CallbackManager,
        iif: IIFProtocol,
    ) -> None:
        """
        @param reactor: the reactor the parts run on: it clocks the periodic
            jobs and binds the IIF port.
        """
        super().__init__()
        self._reactor = reactor
        self.config = config
        self.sip = sip
        self.registrar = registrar
        self.lineRegistration = lineRegistration
        self.router = router
        self.rtpPorts = rtpPorts
        self.prompts = prompts
        self.scheduler = scheduler
        self.announcer = announcer
        self.overloadGuard = overloadGuard
        self.manager = manager
        self.iif = iif
        self.iifPort: Any = None
        self._collector = TimerService(FULL_COLLECTION_INTERVAL, collectGarbage)
        self._collector.clock = reactor
        self._collector.setServiceParent(self)
        sip.setServiceParent(self)
        if lineRegistration is not None:
            # Started once SIP is bound. Stopped explicitly in stopService,
            # before SIP, so the unregistration is answered while SIP is up.
            lineRegistration.setServiceParent(self)
        overloadGuard.setServiceParent(self)

    def startService(self) -> None:
        """
        Bind SIP, probe the RTP ports, then open the IIF port.

        @raise SystemExit: with one line naming the configuration key and
            the address when a port cannot be bound (twistd calls this
            before the reactor runs, so the process exits with status 1).
        """
        tuneGarbageCollector()
        cb = self.config.callback
        with _bindErrors(self.config, "sip", "address", "port"):
            super().startService()  # SIP binds here
        with _bindErrors(self.config, "media", "rtp_ports", "rtp_ports"):
            self.rtpPorts.probe()
        with _bindErrors(self.config, "callback", "listen_address", "listen_port"):
            self.iifPort = self._reactor.listenUDP(
                cb.listenPort, self.iif, interface=cb.listenAddress
            )
        if hasattr(self.iifPort, "socket"):
            setBuffers(self.iifPort.socket)
        iifHost = self.iifPort.getHost()
        self._log.info(
            "callback_tw ready: IIF on udp {iifHost}:{iifPort},"
            " SIP on udp {sipHost}:{sipPort}",
            iifHost=iifHost.host,
            iifPort=iifHost.port,
            sipHost=self.sip.host,
            sipPort=self.sip.port,
        )

    @inlineCallbacks
    def stopService(self) -> Any:
        yield self._collector.stopService()
        yield self.overloadGuard.stopService()
        # Each release is synchronous: BYE/CANCEL are sent and every
        # RESPONSE is out when releaseAll returns. Then wait (bounded) for
        # those requests to be answered, so a lost one is retransmitted.
        self.manager.releaseAll("server shutting down")
        timeout = self.config.callback.shutdownTimeout
        settled = yield self.sip.settle(timeout)
        if not settled:
            self._log.warn(
                "shutdown: {n} SIP requests still unanswered after {t} s",
                n=self.sip.pendingTransactions,
                t=timeout,
            )
        if self.iifPort is not None:
            yield self.iifPort.stopListening()
            self.iifPort = None
        if self.lineRegistration is not None:
            # MultiService stops its children all in one turn; the
            # unregistration must be answered before SIP closes, so it is
            # waited for here (bounded by the registration itself).
            yield self.lineRegistration.stopService()
        yield super().stopService()


@contextmanager
def _bindErrors(
    config: Config, section: str, addressKey: str, portKey: str
) -> Iterator[None]:
    """
    Turn a port that cannot be bound into the one-line start-up error the
    configuration gets, naming the key to change: the address key when the
    address is not local (EADDRNOTAVAIL), else the port key.
    """
    try:
        yield
    except CannotListenError as e:
        reason = e.socketError
        number = getattr(reason, "errno", None)
        key = addressKey if number == errno.EADDRNOTAVAIL else portKey
        what = getattr(reason, "strerror", None) or str(reason)
        port = e.port
        if isinstance(port, tuple):
            port = "{}-{}".format(*port)
        problem = f"cannot bind udp {e.interface or '0.0.0.0'}:{port}: {what}"
        _exitAtStartUp(f"callback: {ConfigError(config.path, problem, section, key)}")


def _exitAtStartUp(line: str) -> NoReturn:
    """
    Write C{line} on the process's own stderr and exit with status 1.

    By the time services start, twistd has replaced C{sys.stderr} with a
    file that writes into the log, so a C{SystemExit} message would become a
    log event among the others instead of the one line on stderr that the
    configuration's own errors give.
    """
    stream = sys.__stderr__
    if stream is not None:
        stream.write(line + "\n")
        stream.flush()
    raise SystemExit(1)


#: gc thresholds: small young generations (a collection every 5 000 net
#: allocations, the middle one every 5 of those), and no automatic full
#: collection (see L{tuneGarbageCollector}).
GC_THRESHOLDS = (5_000, 5, 1_000_000)

#: seconds between the full collections the service runs itself.
FULL_COLLECTION_INTERVAL = 600.0


def tuneGarbageCollector() -> None:
    """
    Keep Python's cycle collector from stalling the reactor: the heap of a
    running server is large and long-lived while the callback path makes no
    cyclic garbage, so an automatic full collection is a long pause that
    finds nothing.

    Young collections stay small, start-up objects are frozen out of every
    collection, and full collections run only every
    L{FULL_COLLECTION_INTERVAL} seconds (L{collectGarbage}), as a safety net
    whose finds are logged.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def collectGarbage() -> int:
    """
    A full collection; say so when it found cyclic garbage (a leak on some
    path, worth a bug report).
    """
    found = gc.collect()
    if found:
        CallbackService._log.info(
            "garbage collector freed {n} objects in cycles", n=found
        )
    return found
