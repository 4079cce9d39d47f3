# -*- test-case-name: tests.test_tap -*-
"""
C{twistd callback}: command-line options and the service they build.

This is the only module that knows every part: it reads the configuration
file (L{callback_tw.config}), builds every part of the server from it
(L{buildService}) and hands them to L{callback_tw.service.CallbackService},
which starts and stops them.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from twisted.application.service import IService
from twisted.logger import Logger
from twisted.python import usage

from callback_tw.config import WILDCARD_ADDRESSES, Config, ConfigError, loadConfig

if TYPE_CHECKING:
    from twisted.logger import ILogObserver

    from callback_tw.config.model import LogConfig
    from callback_tw.media.prompts import PromptCatalogue
    from callback_tw.service import CallbackService

__all__ = [
    "Options",
    "buildLogObserver",
    "buildService",
    "checkStore",
    "loadPrompts",
    "makeService",
    "serverIdOf",
]


class Options(usage.Options):
    """
    Options of C{twistd callback}.

    After parsing, C{self["configObject"]} is the checked L{Config} with the
    overrides applied.  A configuration or an override that cannot be used
    ends the process with one line on stderr and status 1 (see
    L{postOptions}).

    @cvar configSearch: the files tried in order when C{--config} is not
        given: the installed configuration (what C{scripts/install} and the
        systemd unit use), then the sample of a checkout, relative to the
        working directory.
    """

    _log = Logger()

    configSearch: tuple[str, ...] = (
        "/etc/callback_tw/callback.ini",
        "etc/callback.ini",
    )

    synopsis = "[options]"
    longdesc = (
        "Run the SIP callback server: application servers (the peer servers of"
        " the configuration) send 'REQUEST: id=..;user1=..;user2=..;duration=..;'"
        " to the IIF UDP port; the server calls user1, then user2, joins them"
        " and answers 'RESPONSE: id=..;real_duration=N;'.  Every setting is in"
        " the configuration file, each key documented in the sample"
        " etc/callback.ini; the options above override a few of them."
    )

    optParameters = [
        [
            "config",
            "c",
            None,
            "The configuration file (INI).  Default: the first that exists of"
            " /etc/callback_tw/callback.ini and etc/callback.ini (relative to"
            " the working directory).",
        ],
        [
            "iif-port",
            None,
            None,
            "Override [callback] listen_port, the IIF UDP port (0-65535,"
            " 0 = any free port).",
        ],
        [
            "sip-port",
            None,
            None,
            "Override [sip] port, the SIP UDP port (0-65535, 0 = any free port).",
        ],
        [
            "sip-address",
            None,
            None,
            "Override [sip] address, the SIP bind address (an IPv4 address).",
        ],
    ]

    def postOptions(self) -> None:
        """
        Load the configuration file and apply the overrides.

        A problem raises C{SystemExit} with one line, not L{usage.UsageError}:
        twistd answers a C{UsageError} by printing its whole usage text (every
        twistd option, on stdout) before the message, which buries the one
        line that says what to fix.  Python prints a C{SystemExit} message
        alone on stderr and exits with status 1, before twistd daemonizes or
        opens its log.
        """
        try:
            if self["config"] is None:
                self["config"] = self.findConfig()
            self["configObject"] = self.loadConfig()
        except (ConfigError, usage.UsageError) as e:
            raise SystemExit(f"callback: {e}") from None

    def findConfig(self) -> str:
        """
        The first file of L{configSearch} that exists, said in one info line
        so that the operator knows which file the server runs with.

        @raise usage.UsageError: when none exists.
        """
        for path in self.configSearch:
            if os.path.isfile(path):
                self._log.info(
                    "using configuration {path} (no --config given;"
                    " looked for {tried})",
                    path=path,
                    tried=", ".join(self.configSearch),
                )
                return path
        raise usage.UsageError(
            "no configuration file: no --config FILE given, and none of "
            + ", ".join(self.configSearch)
            + " exists"
        )

    def loadConfig(self) -> Config:
        """
        Read the file named by C{--config} and apply the command-line
        overrides to it.

        @raise ConfigError: when the file, or the file with the overrides,
            cannot be used.
        @raise usage.UsageError: when an override is malformed.
        """
        iifPort = _port("--iif-port", self["iif-port"])
        sipPort = _port("--sip-port", self["sip-port"])
        sipAddress = _ipv4("--sip-address", self["sip-address"])
        config = loadConfig(self["config"])
        callback, sip = config.callback, config.sip
        if iifPort is not None:
            callback = dataclasses.replace(callback, listenPort=iifPort)
        if sipPort is not None:
            sip = dataclasses.replace(sip, port=sipPort)
        if sipAddress is not None:
            sip = dataclasses.replace(sip, address=sipAddress)
            if sip.sipHost in WILDCARD_ADDRESSES:
                raise ConfigError(
                    config.path,
                    f"must be set when --sip-address is {sipAddress!r}: Via,"
                    " Contact and SDP need an address peers can reach",
                    "sip",
                    "advertised_address",
                )
        return dataclasses.replace(config, callback=callback, sip=sip)


def _port(option: str, value: str | None) -> int | None:
    if value is None:
        return None
    if not (value.isdigit() and 0 <= int(value) <= 65535):
        raise usage.UsageError(
            f"{option}: must be a UDP port from 0 to 65535 (0: any free port),"
            f" got {value!r}"
        )
    return int(value)


def _ipv4(option: str, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise usage.UsageError(
            f"{option}: must be an IPv4 address, got {value!r}"
        ) from None


def makeService(options: Options) -> IService:
    """
    Build the callback server from parsed L{Options}, on the global reactor.

    Announcements are loaded here, before the reactor runs; a prompt file
    that cannot be used stops start-up with one line, like a bad
    configuration.

    @param options: parsed options; C{options["configObject"]} is used.
    @return: a L{callback_tw.service.CallbackService}, not yet started.
    """
    from twisted.internet import reactor

    from callback_tw.media.prompts import PromptError
    from callback_tw.store import StoreError

    config = options["configObject"]
    try:
        prompts = loadPrompts(config)
    except PromptError as e:
        raise SystemExit(f"callback: {e} (see [media] in {config.path})") from None
    try:
        checkStore(config)
    except StoreError as e:
        raise SystemExit(f"callback: {e} (see [store] in {config.path})") from None
    service = buildService(config, reactor, prompts)
    stream = _logStream(options)
    if stream is not None:
        service.logObserver = buildLogObserver(config.log, stream)
    return service


def buildLogObserver(log: LogConfig, stream: IO[str]) -> ILogObserver:
    """
    The observer of C{[log]}: events below C{level} are dropped by a
    filtering predicate before anything formats them, so a debug line costs
    no text at level info; the rest is written to C{stream} as text lines or
    one JSON object per line (twisted.logger's own event format).

    @param log: the L{callback_tw.config.LogConfig}.
    @param stream: where the lines go (twistd's log file, or stdout).
    """
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        jsonFileLogObserver,
        textFileLogObserver,
    )

    if log.format == "json":
        # One object per line (no RFC 7464 separator), as journald and log
        # shippers read them.
        output = jsonFileLogObserver(stream, recordSeparator="")
    else:
        output = textFileLogObserver(stream)
    level = LogLevel.levelWithName(log.level)
    predicates = [LogLevelFilterPredicate(defaultLogLevel=level)]
    if level > LogLevel.debug:
        predicates.append(_withoutRTPPortChatter)
    return FilteringLogObserver(output, predicates)


#: What Twisted's UDP port writes, at info and unconditionally, when a port
#: opens or closes: two lines per RTP port, four per callback.
_RTP_PORT_CHATTER = re.compile(r"RTPPort starting on \d+|\(UDP Port \d+ Closed\)")


def _withoutRTPPortChatter(event: dict) -> Any:
    """
    Drop Twisted's own "RTPPort starting on N" / "(UDP Port N Closed)" lines
    below level debug: at info an operator reads one line per callback.
    (The service logs its own start and stop lines for its long-lived ports.)
    """
    from twisted.logger import PredicateResult

    if event.get("log_namespace") == "log_legacy":
        message = event.get("message") or ()
        if len(message) == 1 and _RTP_PORT_CHATTER.fullmatch(str(message[0])):
            return PredicateResult.no
    return PredicateResult.maybe


def _logStream(options: Options) -> IO[str] | None:
    """
    Where twistd would write its log, from its own options (the parent of
    ours): stdout for C{-n} without C{--logfile} or C{--logfile -}, else the
    file (appended to, never rotated here: logrotate with copytruncate, or
    journald, does that).  L{None} when twistd was told to use syslog or a
    C{--logger} of its own choosing: then that observer is used as given.
    """
    import sys

    parent = getattr(options, "parent", None)
    if parent is None:
        return sys.stdout
    if parent.get("logger") or parent.get("syslog"):
        return None
    logfile = parent.get("logfile")
    if logfile == "-" or (not logfile and parent.get("nodaemon")):
        return sys.stdout
    return open(logfile or "twistd.log", "a", buffering=1, encoding="utf-8")


def serverIdOf(config: Config) -> str:
    """
    This server's name in the store: C{[store] server_id}, else the host
    name, a colon and the SIP port (so two servers on one host differ).
    """
    return config.store.serverId or f"{socket.gethostname()}:{config.sip.port}"


def checkStore(config: Config) -> None:
    """
    Open and migrate the store once, blocking, before the reactor runs, so
    that a store that cannot be used stops start-up with one line (the URL
    without its password) and exit status 1, like a bad configuration.
    The server then opens it again on its own threads (nothing left to
    migrate).

    @raise callback_tw.store.StoreError: the store cannot be used.
    """
    import os

    from callback_tw.store import StoreError, parseURL, redact
    from callback_tw.store.schema import migrate
    from callback_tw.store.sql import connect

    url = parseURL(config.store.url)
    if url.dialect == "sqlite" and url.path is not None:
        try:
            os.makedirs(os.path.dirname(url.path), exist_ok=True)
        except OSError as e:
            raise StoreError(f"store {url.safe}: cannot open: {e.strerror}") from None
    connection = connect(url)
    try:
        migrate(connection, url.dialect, url.safe)
    except StoreError:
        raise
    except Exception as e:
        message = redact(" ".join(str(e).split()))
        raise StoreError(f"store {url.safe}: cannot migrate: {message}") from None
    finally:
        connection.close()


# Longer than 60 lines on purpose: one straight list of constructions in
# dependency order, so the whole wiring reads top to bottom in one place.
def buildService(
    config: Config,
    reactor: Any,
    prompts: PromptCatalogue,
    openStore: Callable[[], Any] | None = None,
) -> CallbackService:
    """
    Build every part of the server from C{config} and hang them on one
    L{callback_tw.service.CallbackService}, which starts and stops them.

    The parts are imported here, not at module level: twistd imports this
    module to parse the options, and C{--help} or a bad configuration should
    not load the SIP stack.

    @param reactor: what every part runs on (an L{IReactorTime} and
        L{IReactorUDP}).
    @param prompts: the announcements, loaded (L{loadPrompts}).
    @param openStore: C{() -> Deferred[Store]}, called when the service
        starts; by default it opens C{[store] url} on the reactor's threads.
    @return: the service, not yet started.
    """
    from callback_tw.callback.announcer import Announcer
    from callback_tw.callback.manager import CallbackManager
    from callback_tw.callback.overload import OverloadGuard
    from callback_tw.http import Health, buildSite
    from callback_tw.iif.peers import peersFromConfig
    from callback_tw.iif.protocol import IIFProtocol
    from callback_tw.media.player import RTPScheduler
    from callback_tw.media.rtp import RTPPortAllocator
    from callback_tw.metrics import CallbackMetrics
    from callback_tw.service import CallbackService
    from callback_tw.sip.registrar import Registrar
    from callback_tw.sip.registration import LineRegistration
    from callback_tw.sip.routing import Router, callerIds, defaultRoute
    from callback_tw.sip.stack import SipStack

    sip, callback, media = config.sip, config.callback, config.media
    metrics = CallbackMetrics()
    registrar = None
    if config.users:
        registrar = Registrar(config.users, sip.sipHost, reactor=reactor)
    stack = SipStack(
        sip.address,
        sip.port,
        sip.sipHost,
        sip.trace,
        reactor=reactor,
        registrar=registrar,
        maxRequestsPerSource=sip.maxRequestsPerSource,
        blockTime=sip.blockTime,
    )
    lineRegistration = None
    line = config.externalLine
    if callback.externalLineMode and line is not None and line.register:
        lineRegistration = LineRegistration(stack, line, reactor)
    router = Router(
        stack,
        defaultRoute(config),
        callback.noAnswerTimeout,
        locator=registrar,
        callerIds=callerIds(config),
    )
    bindHost = "0.0.0.0" if sip.address in WILDCARD_ADDRESSES else sip.address
    rtpPorts = RTPPortAllocator(sip.sipHost, media.rtpPorts, reactor, bindHost=bindHost)
    scheduler = RTPScheduler(reactor)
    ringback = None
    if media.ringbackFrequency:
        on, off = media.ringbackCadence
        ringback = (media.ringbackFrequency, on, off)
    announcer = Announcer(prompts, scheduler, media.defaultAnnId1, ringback)
    overloadGuard = OverloadGuard(reactor, callback.maxLag)
    if openStore is None:
        from callback_tw.store import open as openStoreAt

        url, serverId = config.store.url, serverIdOf(config)

        def openStore() -> Any:
            return openStoreAt(url, serverId, reactor)

    manager = CallbackManager(
        router,
        rtpPorts,
        callback.maxCalls,
        callback.maxDuration,
        reactor,
        announcer=announcer,
        checkRequest=announcer.checkRequest,
        overloadGuard=overloadGuard,
        metrics=metrics,
        joinTimeout=callback.joinTimeout,
    )
    iif = IIFProtocol(
        manager,
        peersFromConfig(config),
        callback.maxDuration,
        reactor=reactor,
        requestMemory=config.store.requestMemory,
        signatureWindow=callback.signatureWindow,
        metrics=metrics,
    )
    metrics.watch(
        active=lambda: len(manager.active),
        rtpStreams=lambda: len(scheduler),
        reactorLag=lambda: overloadGuard.lag,
        lineRegistered=(
            None
            if lineRegistration is None
            else lambda: lineRegistration.state == "registered"
        ),
    )
    # The store is opened when the service starts (its Deferreds need a
    # running reactor); the service hands it to the manager and the IIF.
    service = CallbackService(
        config,
        reactor,
        sip=stack,
        registrar=registrar,
        lineRegistration=lineRegistration,
        router=router,
        rtpPorts=rtpPorts,
        prompts=prompts,
        scheduler=scheduler,
        announcer=announcer,
        overloadGuard=overloadGuard,
        manager=manager,
        iif=iif,
        openStore=openStore,
        metrics=metrics,
    )
    if config.http.listenPort:
        health = Health(stack, lineRegistration, lambda: service.store, overloadGuard)
        service.httpSite = buildSite(metrics, health, reactor)
    return service


def loadPrompts(config: Config) -> PromptCatalogue:
    """
    Load every announcement at start-up; the default ann_id1, when set, must
    exist (a missing one would fail every call).

    @raise PromptError: naming the file that is missing or unusable.
    """
    from callback_tw.media.prompts import PromptCatalogue

    media = config.media
    required = [media.defaultAnnId1] if media.defaultAnnId1 else []
    return PromptCatalogue.load(media.prompts, required=required)
