# -*- test-case-name: tests.test_service -*-
"""
The running server: starts and stops the parts L{callback_tw.tap} built, in
the order that loses nothing.

Start: SIP first (legs need it), then the store, then recovery (what a
crash left unfinished is released over SIP and answered), then the IIF port
(commands need legs and the store).
Stop: release every active callback (BYE/CANCEL) and send its RESPONSE (once
its end is committed) while both SIP and the IIF port are still up, bounded
by C{shutdown_timeout}; then close the IIF port, unregister the external
line (bounded, 2 s), then SIP, then the store (its last writes committed).
"""

from __future__ import annotations

import errno
import gc
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn

from twisted.application.internet import TimerService
from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import CannotListenError
from twisted.logger import ILogObserver, Logger
from twisted.python.components import Componentized

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

#: seconds between two heartbeats of this server in the store: a crash loses
#: at most this much of a joined call's measured time.
HEARTBEAT_INTERVAL = 1.0

#: seconds between two runs of the retention purge.
PURGE_INTERVAL = 86400.0


class CallbackService(MultiService):
    """
    The whole server as one service (what C{twistd callback} runs).

    It holds every part (built by L{callback_tw.tap.buildService}) and only
    decides when each starts and stops. Its children start in this order:
    the full garbage collection timer, the SIP stack, the external line's
    registration (when there is one), the overload guard; then the store
    opens, the purge timer starts, recovery runs, the heartbeat starts, and
    the IIF port (bound at start, paused) serves commands last.

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
    @ivar metrics: the L{callback_tw.metrics.CallbackMetrics}, or L{None}.
    @ivar httpSite: the site of C{/metrics} and C{/health} (L{callback_tw.http}),
        or L{None} when C{[http] listen_port} is 0; C{httpPort} its
        listening port while running.
    @ivar logObserver: the observer of C{[log]}
        (L{callback_tw.tap.buildLogObserver}), or L{None}: see
        L{setServiceParent}.
    @ivar store: the open L{callback_tw.store.Store} once started, else
        L{None}.
    @ivar ready: a Deferred that fires once the IIF port is open (the store
        opened and recovery done), or with L{None} if start-up failed.
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
        openStore: Callable[[], Deferred],
        metrics: Any = None,
    ) -> None:
        """
        @param reactor: the reactor the parts run on: it clocks the periodic
            jobs and binds the IIF port.
        @param openStore: C{() -> Deferred[Store]}: opens the store at start.
        @param metrics: the server's L{callback_tw.metrics.CallbackMetrics}.
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
        self.metrics = metrics
        self.httpSite: Any = None
        self.httpPort: Any = None
        self.logObserver: Any = None
        self.store: Any = None
        self.ready: Deferred = Deferred()
        self._openStore = openStore
        self._storeJobs: list[TimerService] = []
        self._collector = TimerService(FULL_COLLECTION_INTERVAL, collectGarbage)
        self._collector.clock = reactor
        self._collector.setServiceParent(self)
        sip.setServiceParent(self)
        if lineRegistration is not None:
            # Started once SIP is bound. Stopped explicitly in stopService,
            # before SIP, so the unregistration is answered while SIP is up.
            lineRegistration.setServiceParent(self)
        overloadGuard.setServiceParent(self)

    def setServiceParent(self, parent: Any) -> None:
        """
        Hang on C{parent}; when it is twistd's application, also hand it
        L{logObserver} as its C{ILogObserver}: twistd starts logging after
        it builds the service and takes the application's observer when it
        has one, so the C{[log]} level and format apply from the first line.
        """
        super().setServiceParent(parent)
        if self.logObserver is None or not isinstance(parent, Componentized):
            return
        if parent.getComponent(ILogObserver, None) is None:
            parent.setComponent(ILogObserver, self.logObserver)

    def startService(self) -> None:
        """
        Bind SIP, probe the RTP ports and bind the IIF port, all at once so
        that a port that cannot be bound is a start-up error; then open the
        store, recover, and only then serve IIF commands.

        @raise SystemExit: with one line naming the configuration key and
            the address when a port cannot be bound (twistd calls this
            before the reactor runs, so the process exits with status 1).
        """
        tuneGarbageCollector()
        with _bindErrors(self.config, "sip", "address", "port"):
            super().startService()  # SIP binds here
        with _bindErrors(self.config, "media", "rtp_ports", "rtp_ports"):
            self.rtpPorts.probe()
        with _bindErrors(self.config, "callback", "listen_address", "listen_port"):
            self._listen()
        if self.httpSite is not None:
            http = self.config.http
            with _bindErrors(
                self.config, "http", "listen_address", "listen_port", "tcp"
            ):
                self.httpPort = self._reactor.listenTCP(
                    http.listenPort, self.httpSite, interface=http.listenAddress
                )
            self._log.info(
                "HTTP /metrics and /health on tcp {host}:{port}",
                host=http.listenAddress,
                port=http.listenPort,
            )
        self._starting = self._startWithStore()

    @inlineCallbacks
    def _startWithStore(self) -> Any:
        """
        Open the store, recover, then serve IIF commands (the port is bound
        already: a recovered RESPONSE goes out at once, while commands that
        arrive during recovery get no answer and are retransmitted by their
        AS).  A store that cannot be opened stops the process (one line
        naming the URL).
        """
        from callback_tw.callback.recovery import Recovery
        from callback_tw.store import PurgeJob

        try:
            store = yield self._openStore()
        except Exception as e:
            self._log.critical("callback_tw cannot start: {error}", error=str(e))
            self.ready.callback(None)
            if self._reactor.running:
                self._reactor.stop()
            return
        self.store = store
        self.manager.store = store
        self.iif.store = store
        self._startJob(
            TimerService(
                PURGE_INTERVAL, PurgeJob(store, self.config.store.retentionDays)
            )
        )
        yield Recovery(
            store,
            self.sip,
            self.iif.resendResponse,
            self._reactor,
        ).run()
        if not self.running:
            self.ready.callback(None)
            return
        # Only now: recovery counted the joined callbacks of the previous run
        # up to that run's last heartbeat, which a TimerService started
        # earlier (it beats at once) would have replaced by this run's before
        # recovery used it.  The IIF is still paused, nothing has joined yet.
        self._startJob(TimerService(HEARTBEAT_INTERVAL, self.manager.heartbeat))
        self.iif.serve()
        iifHost = self.iifPort.getHost()
        self._log.info(
            "callback_tw ready: IIF on udp {iifHost}:{iifPort},"
            " SIP on udp {sipHost}:{sipPort}",
            iifHost=iifHost.host,
            iifPort=iifHost.port,
            sipHost=self.sip.host,
            sipPort=self.sip.port,
        )
        self.ready.callback(self)

    def _startJob(self, job: TimerService) -> None:
        """Run a store timer on our reactor; L{stopService} stops it first."""
        job.clock = self._reactor
        job.setServiceParent(self)
        self._storeJobs.append(job)

    def _listen(self) -> None:
        cb = self.config.callback
        self.iif.pause()
        self.iifPort = self._reactor.listenUDP(
            cb.listenPort, self.iif, interface=cb.listenAddress
        )
        if hasattr(self.iifPort, "socket"):
            setBuffers(self.iifPort.socket)

    @inlineCallbacks
    def stopService(self) -> Any:
        yield self._collector.stopService()
        yield self.overloadGuard.stopService()
        # Each release is synchronous: BYE/CANCEL are sent and every
        # RESPONSE is out when releaseAll returns. Then wait (bounded) for
        # those requests to be answered, so a lost one is retransmitted.
        if getattr(self, "_starting", None) is not None:
            yield self.ready
        for job in self._storeJobs:
            yield job.stopService()
        self.manager.releaseAll("server shutting down")
        # Each RESPONSE goes out once its end is committed (a few ms).
        yield self.iif.drain()
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
        if self.httpPort is not None:
            yield self.httpPort.stopListening()
            self.httpPort = None
        if self.lineRegistration is not None:
            # MultiService stops its children all in one turn; the
            # unregistration must be answered before SIP closes, so it is
            # waited for here (bounded by the registration itself).
            yield self.lineRegistration.stopService()
        yield super().stopService()
        if self.store is not None:
            # After the callbacks' last writes (their ends, RESPONSEs sent).
            yield self.store.close()


@contextmanager
def _bindErrors(
    config: Config, section: str, addressKey: str, portKey: str, kind: str = "udp"
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
        problem = f"cannot bind {kind} {e.interface or '0.0.0.0'}:{port}: {what}"
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
