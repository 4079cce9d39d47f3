# -*- test-case-name: tests.test_sip_stack -*-
"""
Where each leg goes: L{Route} values, the L{Router} that picks one per
called user, and the default route built from the configuration.

Routing order: a local user (registered with our registrar) goes to the
contact it registered; anyone else takes the default route, which is the
external line in external line mode and the outbound peer server otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

from twisted.logger import Logger

from callback_tw.config import Config
from callback_tw.sip.leg import ILegListener, UnreachableLeg

__all__ = ["CallerIds", "ILocator", "Route", "Router", "callerIds", "defaultRoute"]


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
    @ivar keepsFrom: the From user stays C{callerId} even when the leg
        shows a caller (a provider's line: most refuse any other number);
        the caller then goes only into C{P-Asserted-Identity}.
    @ivar assertedIdentity: the user of a C{P-Asserted-Identity} header
        (RFC 3325) of the INVITE, at the From URI's host; none when None.
    """

    target: tuple[str, int]
    callerId: str
    via: str
    credentials: tuple[str, str] | None = None
    outboundProxy: tuple[str, int] | None = None
    fromDomain: str | None = None
    keepsFrom: bool = False
    assertedIdentity: str | None = None


@dataclass(frozen=True)
class CallerIds:
    """
    What a leg shows when its callback names a caller for it (user2's leg,
    with user1 as the caller).

    @ivar showCaller: the caller becomes the From user (C{[callback]
        user2_caller = user1}), except on a route that L{Route.keepsFrom};
        when False the caller is ignored and the leg keeps its route's.
    @ivar assertIdentity: the caller is also asserted in
        C{P-Asserted-Identity} (C{[callback] assert_identity}).
    """

    showCaller: bool = False
    assertIdentity: bool = False

    def apply(self, route: Route, caller: str | None) -> Route:
        """C{route} as a leg that shows C{caller} takes it."""
        if not caller or not self.showCaller:
            return route
        return replace(
            route,
            callerId=route.callerId if route.keepsFrom else caller,
            assertedIdentity=caller if self.assertIdentity else None,
        )


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
        callerIds: CallerIds = CallerIds(),
    ) -> None:
        """
        @param callerIds: what a leg shows when its owner names a caller.
        """
        self._stack = stack
        self._default = defaultRoute
        self._noAnswerTimeout = noAnswerTimeout
        self._locator = locator
        self._localCallerId = localCallerId or defaultRoute.callerId
        self._callerIds = callerIds

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
        self,
        user: str,
        offer: str,
        listener: ILegListener,
        name: str = "",
        caller: str | None = None,
    ) -> Any:
        """
        Call C{user} by its route.

        @param caller: the number this leg may show (user1's, for user2's
            leg); L{CallerIds} decides whether and how it does.
        """
        route = self.route(user)
        if route is None:
            return UnreachableLeg(
                listener, self._stack.reactor, 480, "Temporarily Unavailable", name
            )
        route = self._callerIds.apply(route, caller)
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
    with no caller number).  A leg that shows a caller (L{CallerIds})
    keeps the line's number as From user unless C{[external_line]
    from_user = caller}.
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
            keepsFrom=line.fromUser != "caller",
        )
    outbound = config.outboundPeer
    return Route(
        (outbound.host, outbound.sipPort),
        config.callback.defaultCaller,
        f"peer {outbound.name}",
    )


def callerIds(config: Config) -> CallerIds:
    """What user2's leg shows, from C{[callback] user2_caller, assert_identity}."""
    callback = config.callback
    return CallerIds(
        showCaller=callback.user2Caller == "user1",
        assertIdentity=callback.assertIdentity,
    )
