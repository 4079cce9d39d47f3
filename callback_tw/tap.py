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
from typing import TYPE_CHECKING, Any

from twisted.application.service import IService
from twisted.python import usage

from callback_tw.config import WILDCARD_ADDRESSES, Config, ConfigError, loadConfig

if TYPE_CHECKING:
    from callback_tw.media.prompts import PromptCatalogue
    from callback_tw.service import CallbackService

__all__ = ["Options", "buildService", "loadPrompts", "makeService"]


class Options(usage.Options):
    """
    Options of C{twistd callback}.

    After parsing, C{self["configObject"]} is the checked L{Config} with the
    overrides applied.  A configuration or an override that cannot be used
    ends the process with one line on stderr and status 1 (see
    L{postOptions}).
    """

    synopsis = "[options]"
    longdesc = (
        "Run the SIP callback server: application servers (the peer servers of"
        " the configuration) send 'REQUEST: id=..;user1=..;user2=..;duration=..;'"
        " to the IIF UDP port; the server calls user1, then user2, joins them"
        " and answers 'RESPONSE: id=..;real_duration=N;'.  Every setting is in"
        " the configuration file, each key documented in etc/callback.ini; the"
        " options above override a few of them."
    )

    optParameters = [
        ["config", "c", "etc/callback.ini", "The configuration file (INI)."],
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
            self["configObject"] = self.loadConfig()
        except (ConfigError, usage.UsageError) as e:
            raise SystemExit(f"callback: {e}") from None

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

    config = options["configObject"]
    try:
        prompts = loadPrompts(config)
    except PromptError as e:
        raise SystemExit(f"callback: {e} (see [media] in {config.path})") from None
    return buildService(config, reactor, prompts)


# Longer than 60 lines on purpose: one straight list of constructions in
# dependency order, so the whole wiring reads top to bottom in one place.
def buildService(
    config: Config, reactor: Any, prompts: PromptCatalogue
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
    @return: the service, not yet started.
    """
    from callback_tw.callback.announcer import Announcer
    from callback_tw.callback.manager import CallbackManager
    from callback_tw.callback.overload import OverloadGuard
    from callback_tw.iif.peers import peersFromConfig
    from callback_tw.iif.protocol import IIFProtocol
    from callback_tw.media.player import RTPScheduler
    from callback_tw.media.rtp import RTPPortAllocator
    from callback_tw.service import CallbackService
    from callback_tw.sip.registrar import Registrar
    from callback_tw.sip.registration import LineRegistration
    from callback_tw.sip.routing import Router, callerIds, defaultRoute
    from callback_tw.sip.stack import SipStack

    sip, callback, media = config.sip, config.callback, config.media
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
    manager = CallbackManager(
        router,
        rtpPorts,
        callback.maxCalls,
        callback.maxDuration,
        reactor,
        announcer=announcer,
        checkRequest=announcer.checkRequest,
        overloadGuard=overloadGuard,
    )
    iif = IIFProtocol(
        manager,
        peersFromConfig(config),
        callback.maxDuration,
        reactor=reactor,
        requestMemory=callback.requestMemory,
        signatureWindow=callback.signatureWindow,
    )
    return CallbackService(
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
    )


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
