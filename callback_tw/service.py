# -*- test-case-name: tests.test_service -*-
"""
The running server: the SIP stack, the callback manager and the IIF port,
started and stopped in the order that loses nothing.

Start: SIP first (legs need it), then the IIF port (commands need legs).
Stop: release every active callback (BYE/CANCEL) and send its RESPONSE while
both SIP and the IIF port are still up, bounded by C{shutdown_timeout}; then
close the IIF port, unregister the external line (bounded, 2 s), then SIP.
"""

from __future__ import annotations

import gc
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from callback_tw.callback.announcer import Announcer
from callback_tw.callback.manager import CallbackManager
from callback_tw.callback.overload import OverloadGuard
from callback_tw.config import Config
from callback_tw.iif.protocol import IIFProtocol
from callback_tw.media.player import RTPScheduler
from callback_tw.media.prompts import PromptCatalogue
from callback_tw.media.rtp import RTPPortAllocator
from callback_tw.sip.registrar import Registrar
from callback_tw.sip.registration import LineRegistration
from callback_tw.sip.routing import Router, defaultRoute
from callback_tw.sip.stack import SipStack
from callback_tw.sockets import setBuffers


class CallbackService(MultiService):
    """
    The whole server as one service (what C{twistd callback} runs).

    @ivar sip: the L{SipStack}.
    @ivar manager: the L{CallbackManager}.
    @ivar iif: the L{IIFProtocol}; C{iifPort} its listening port.
    """

    _log = Logger()

    def __init__(
        self,
        config: Config,
        reactor: Any = None,
        prompts: PromptCatalogue | None = None,
    ) -> None:
        """
        @param prompts: the announcements, loaded already (the twistd options
            load them so that a bad prompt is a one-line start-up error);
            loaded from C{[media] prompts} when not given.
        @raise PromptError: when the prompts cannot be loaded.
        """
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        self._reactor = reactor
        self.config = config
        sip = config.sip
        #: the registrar of the local users ([users]); None without any.
        self.registrar: Registrar | None = None
        if config.users:
            self.registrar = Registrar(config.users, sip.sipHost, reactor=reactor)
        self.sip = SipStack(
            sip.address,
            sip.port,
            sip.sipHost,
            sip.trace,
            reactor=reactor,
            registrar=self.registrar,
        )
        self.sip.setServiceParent(self)
        #: the external line's registration; None unless external line mode
        #: with register = yes.
        self.lineRegistration: LineRegistration | None = None
        line = config.externalLine
        if config.callback.externalLineMode and line is not None and line.register:
            # A child after the SIP stack: started once SIP is bound.
            # Stopped explicitly in stopService, before SIP, so the
            # unregistration is answered while SIP is still up.
            self.lineRegistration = LineRegistration(self.sip, line, reactor)
            self.lineRegistration.setServiceParent(self)
        self.dialer = Router(
            self.sip,
            defaultRoute(config),
            config.callback.noAnswerTimeout,
            locator=self.registrar,
        )
        bindHost = sip.address if sip.address not in ("", "0.0.0.0") else "0.0.0.0"
        self.media = RTPPortAllocator(
            sip.sipHost, config.media.rtpPorts, reactor, bindHost=bindHost
        )
        if prompts is None:
            prompts = loadPrompts(config)
        self.prompts = prompts
        self.scheduler = RTPScheduler(reactor)
        ringback = None
        if config.media.ringbackFrequency:
            on, off = config.media.ringbackCadence
            ringback = (config.media.ringbackFrequency, on, off)
        self.announcer = Announcer(
            prompts, self.scheduler, config.media.defaultAnnId1, ringback
        )
        self.overloadGuard = OverloadGuard(reactor, config.callback.maxLag)
        self.manager = CallbackManager(
            self.dialer,
            self.media,
            config.callback.maxCalls,
            config.callback.maxDuration,
            reactor,
            announcer=self.announcer,
            checkRequest=self.announcer.checkRequest,
            overloadGuard=self.overloadGuard,
        )
        self.iif = IIFProtocol(
            self.manager,
            [(p.host, p.port) for p in config.peerServers.values()],
            config.callback.maxDuration,
            reactor=reactor,
            requestMemory=config.callback.requestMemory,
        )
        self.iifPort = None
        self._collector: LoopingCall | None = None

    def startService(self) -> None:
        tuneGarbageCollector()
        self._collector = LoopingCall(collectGarbage)
        self._collector.clock = self._reactor
        self._collector.start(FULL_COLLECTION_INTERVAL, now=False)
        super().startService()  # SIP binds here
        self.overloadGuard.startService()
        cb = self.config.callback
        self.iifPort = self._reactor.listenUDP(
            cb.listenPort, self.iif, interface=cb.listenAddress
        )
        if hasattr(self.iifPort, "socket"):
            setBuffers(self.iifPort.socket)
        iifHost = self.iifPort.getHost()
        self._log.info(
            "callback_tw ready: IIF on udp {iifHost}:{iifPort}, SIP on udp {sipHost}:{sipPort}",
            iifHost=iifHost.host,
            iifPort=iifHost.port,
            sipHost=self.sip.host,
            sipPort=self.sip.port,
        )

    @inlineCallbacks
    def stopService(self) -> Any:
        if self._collector is not None and self._collector.running:
            self._collector.stop()
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


#: gc thresholds: small young generations (a collection every 5 000 net
#: allocations, the middle one every 5 of those), and no automatic full
#: collection (see L{tuneGarbageCollector}).
GC_THRESHOLDS = (5_000, 5, 1_000_000)

#: seconds between the full collections the service runs itself.
FULL_COLLECTION_INTERVAL = 600.0


def tuneGarbageCollector() -> None:
    """
    Keep Python's cycle collector from stalling the reactor.

    A running server holds ~1 000 live objects per callback for 32 s after
    it ends (sippy keeps each finished dialog that long), so the heap is
    large and mostly long-lived. With the default thresholds a full
    collection ran every ~1.5 s at 200 callbacks/s and took up to 240 ms,
    finding nothing: the reactor stood still, ACK p99 was 290 ms, SIP
    datagrams queued, timers fired late. The callback path makes no cyclic
    garbage (legs detach from finished callbacks; sippy's per-request
    closure cycle is broken in the leg), so reference counting frees it all:
    young collections stay small and cheap, start-up objects are frozen out
    of every collection, and full collections run only every
    L{FULL_COLLECTION_INTERVAL} seconds, as a safety net whose finds are
    logged (bench/bench_callbacks.py: p99 9 ms, longest pause 40 ms).
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


def loadPrompts(config: Config) -> PromptCatalogue:
    """
    Load every announcement at start-up; the default ann_id1, when set, must
    exist (a missing one would fail every call).

    @raise PromptError: naming the file that is missing or unusable.
    """
    media = config.media
    required = [media.defaultAnnId1] if media.defaultAnnId1 else []
    return PromptCatalogue.load(media.prompts, required=required)
