# -*- test-case-name: tests.test_sip_stack -*-
"""
The SIP stack as a Twisted service: sippy's transaction manager on the
reactor (L{callback_tw.sip.adapter}), the factory of outgoing legs, and the
policy for requests nobody asked for. Where a leg goes is decided by
L{callback_tw.sip.routing}.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sippy.SipConf import SipConf
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks, succeed
from twisted.internet.task import deferLater
from twisted.logger import Logger

from callback_tw.ratelimit import LogLimiter
from callback_tw.sip import adapter
from callback_tw.sip.guard import SourceLimiter, isScanner, printable
from callback_tw.sip.leg import USER_AGENT, ILegListener, Leg

if TYPE_CHECKING:
    from callback_tw.sip.routing import Route


class SipStack(Service):
    """
    The SIP side of the server.

    @ivar port: the bound SIP UDP port, once started.
    @ivar host: the address put in Via, Contact and SDP.
    """

    _log = Logger()

    def __init__(
        self,
        address: str,
        port: int,
        advertisedAddress: str = "",
        trace: bool = False,
        reactor: Any = None,
        registrar: Any = None,
        maxRequestsPerSource: int = 50,
        blockTime: float = 60.0,
    ) -> None:
        """
        @param registrar: answers REGISTER for local users
            (L{callback_tw.sip.registrar.Registrar}); None: REGISTER gets
            403 like anything else nobody asked for.
        @param maxRequestsPerSource: requests outside our dialogs per second
            from one address before it is ignored (0: no limit).
        @param blockTime: seconds such an address is then ignored.
        """
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        self._reactor = reactor
        self._address = address
        self._requestedPort = port
        self.host = advertisedAddress or address
        self._trace = trace
        self._tm: adapter.ReactorTransactionManager | None = None
        self.port: int | None = None
        self.registrar = registrar
        #: the per-source limit on requests outside our dialogs.
        self.guard = SourceLimiter(maxRequestsPerSource, blockTime, reactor)
        self._refusals = LogLimiter(reactor)

    @property
    def reactor(self) -> Any:
        return self._reactor

    def startService(self) -> None:
        """Bind the SIP port and start sippy's transaction manager."""
        adapter.useReactor(self._reactor)
        SipConf.my_uaname = USER_AGENT
        self._tm = adapter.startTransactionManager(
            self._reactor,
            self._address,
            self._requestedPort,
            self.host,
            self._trace,
            self._incomingRequest,
            self.guard,
        )
        self.port = self._tm.servers()[0].port
        self._log.info(
            "SIP on udp {address}:{port} (advertised as {host})",
            address=self._address,
            port=self.port,
            host=self.host,
        )
        Service.startService(self)

    def stopService(self) -> Deferred:
        """
        Tear sippy down in the order that leaves nothing running: every
        sippy timer (transaction and UA timers that sippy itself would leave
        armed), then the transaction manager, then the UDP port.
        """
        Service.stopService(self)
        tm, self._tm = self._tm, None
        if tm is None:
            return succeed(None)
        servers = tm.servers()
        cancelled = adapter.ED2.cancelAll()
        tm.shutdown()
        self._log.info("SIP stopped ({n} sippy timers cancelled)", n=cancelled)
        stopped = [s.stopped for s in servers if s.stopped is not None]
        return DeferredList(stopped, consumeErrors=True).addCallback(lambda _: None)

    @property
    def pendingTransactions(self) -> int:
        """Our requests (INVITE, BYE, CANCEL...) still waiting for a final answer."""
        return 0 if self._tm is None else self._tm.pendingClientTransactions

    @inlineCallbacks
    def settle(self, timeout: float, interval: float = 0.05) -> Any:
        """
        Wait until every request we sent has its final answer, at most
        C{timeout} seconds: at shutdown the BYEs and CANCELs just sent are
        retransmitted until answered, instead of dying with the process.

        @return: a Deferred firing True when settled, False on timeout.
        """
        deadline = self._reactor.seconds() + timeout
        while self.pendingTransactions:
            if self._reactor.seconds() >= deadline:
                return False
            yield deferLater(self._reactor, interval, lambda: None)
        return True

    def dial(
        self,
        user: str,
        route: Route,
        offer: str,
        listener: ILegListener,
        noAnswerTimeout: float,
        name: str = "",
    ) -> Leg:
        """Place an outgoing leg to C{user} by C{route}; it is already dialling."""
        if self._tm is None:
            raise RuntimeError("the SIP stack is not running")
        leg = Leg(
            self._tm.global_config,
            user,
            route,
            offer,
            listener,
            self._reactor,
            noAnswerTimeout,
            name,
        )
        leg.dial()
        return leg

    @property
    def transactionManager(self) -> Any:
        """sippy's transaction manager, while running (for REGISTER clients)."""
        return self._tm

    def _incomingRequest(self, req: Any, transaction: Any) -> Any:
        """
        A request that belongs to none of our dialogs; what to answer it,
        as sippy's C{(response, cancel callback, no-ACK callback)} or None
        for no answer. The transaction manager sends the answer once,
        statelessly, to the request's real source.

        This server places calls; it does not take them. A known scanner
        (L{isScanner}) gets nothing; OPTIONS (a provider's keep-alive) gets
        200; a request for a dialog we do not know 481; anything else 403,
        and never starts a call. Lines about refusals are rate-limited per
        source.
        """
        method = req.getMethod()
        source = req.getSource()
        if req.countHFs("user-agent") and isScanner(str(req.getHFBody("user-agent"))):
            self._refused(method, source, "scanner, no answer")
            return None
        if method == "REGISTER" and self.registrar is not None:
            return (self.registrar.handleRegister(req), None, None)
        if method == "OPTIONS":
            return (req.genResponse(200, "OK"), None, None)
        if req.getHFBody("to").getTag() is not None:
            self._refused(method, source, "for an unknown dialog: 481")
            return (req.genResponse(481, "Call/Transaction Does Not Exist"), None, None)
        self._refused(method, source, "refused: 403")
        return (req.genResponse(403, "Forbidden"), None, None)

    def _refused(self, method: str, source: tuple[str, int], what: str) -> None:
        dropped = self._refusals.allow(source[0])
        if dropped is None:
            return
        self._log.info(
            "{method} from {host}:{port} {what}{dropped}",
            method=printable(method, 20),
            host=source[0],
            port=source[1],
            what=what,
            dropped=f" (+{dropped} not logged)" if dropped else "",
        )
