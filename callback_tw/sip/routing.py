# -*- test-case-name: tests.test_sip_stack -*-
"""
Where each leg goes: L{Route} values, the L{Router} that picks one per
called user, and the default route built from the configuration.

Routing order: a local user (registered with our registrar) goes to the
contact it registered; anyone else takes the default route, which is the
external line in external line mode and the outbound peer server otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from twisted.logger import Logger

from callback_tw.config import Config
from callback_tw.sip.leg import ILegListener, UnreachableLeg

__all__ = ["ILocator", "Route", "Router", "defaultRoute"]


@dataclass(frozen=True)
class Route:
    """
    Where and how one leg goes.

    @ivar target: (host, port) of the R-URI.
    @ivar callerId: the From user.
    @ivar via: a label for logs ("peer pss", "external line", "local user").
    @ivar credentials: (username, password) to answer 401/407 challenges to
        the INVITE (a provider's external line).
    @ivar outboundProxy: where requests are sent when it is not the R-URI's
        host (a provider's proxy).
    @ivar fromDomain: host part of the From URI (a provider's domain); our
        own address when None.
    """

    target: tuple[str, int]
    callerId: str
    via: str
    credentials: tuple[str, str] | None = None
    outboundProxy: tuple[str, int] | None = None
    fromDomain: str | None = None


class ILocator(Protocol):
    """Local users (the registrar): who is local, and where they are."""

    def isLocal(self, user: str) -> bool: ...

    def contactFor(self, user: str) -> tuple[str, int] | None: ...


class Router:
    """
    Decides where each leg goes, in this order: a local user (to the
    contact it registered; a local user who is not registered fails at once
    with 480); otherwise the default route — the external line in external
    line mode, the outbound peer server otherwise.

    @ivar sdpHost: the address this server puts in its SDP origin.
    """

    _log = Logger()

    def __init__(
        self,
        stack: Any,
        defaultRoute: Route,
        noAnswerTimeout: float,
        locator: ILocator | None = None,
        localCallerId: str | None = None,
    ) -> None:
        self._stack = stack
        self._default = defaultRoute
        self._noAnswerTimeout = noAnswerTimeout
        self._locator = locator
        self._localCallerId = localCallerId or defaultRoute.callerId

    @property
    def sdpHost(self) -> str:
        return self._stack.host

    def route(self, user: str) -> Route | None:
        """The route for C{user}; None for a local user not registered."""
        if self._locator is not None and self._locator.isLocal(user):
            contact = self._locator.contactFor(user)
            if contact is None:
                return None
            return Route(contact, self._localCallerId, "local user")
        return self._default

    def dial(
        self, user: str, offer: str, listener: ILegListener, name: str = ""
    ) -> Any:
        """Call C{user} by its route."""
        route = self.route(user)
        if route is None:
            return UnreachableLeg(
                listener, self._stack.reactor, 480, "Temporarily Unavailable", name
            )
        self._log.debug("{name}: {user} via {via}", name=name, user=user, via=route.via)
        return self._stack.dial(
            user, route, offer, listener, self._noAnswerTimeout, name
        )


def defaultRoute(config: Config) -> Route:
    """
    The route of every leg that is not to a local user.

    In external line mode every leg goes to the provider: R-URI at its
    domain, sent to its proxy, From the line's number (C{default_caller}
    only when the line has none), 401/407 answered with the line's
    credentials. Otherwise every leg goes to the outbound peer server with
    the default caller as From user (the spec: some providers reject a call
    with no caller number).
    """
    line = config.externalLine
    if config.callback.externalLineMode and line is not None:
        return Route(
            (line.registrarHost, line.registrarPort),
            line.number or config.callback.defaultCaller,
            "external line",
            credentials=(line.username, line.password),
            outboundProxy=line.sendTo,
            fromDomain=line.registrarHost,
        )
    outbound = config.outboundPeer
    return Route(
        (outbound.host, outbound.sipPort),
        config.callback.defaultCaller,
        f"peer {outbound.name}",
    )
