# -*- test-case-name: tests.test_sip_adapter -*-
"""
sippy's transaction manager on the reactor's UDP transport, with what sippy
2.5.0 gets wrong there put right, and the few facts the stack needs from it
behind methods of our own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sippy.SipTransactionManager import SipTransactionManager
from sippy.Time.Timeout import Timeout
from sippy.Udp_server import Udp_server_opts

from callback_tw.sip.adapter.errors import routeSippyErrors
from callback_tw.sip.adapter.trace import SipTraceLogger
from callback_tw.sip.adapter.transport import ReactorUdpServer

__all__ = ["ReactorTransactionManager", "startTransactionManager"]


class ReactorTransactionManager(SipTransactionManager):
    """
    sippy's transaction manager on L{ReactorUdpServer}.

    Each override below says what it fixes; all were checked against sippy
    2.5.0.
    """

    #: sippy's hook for the UDP server class: ours runs on the reactor.
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
        self.transmitData(t.userv, t.data, t.address)
        inviteClient = t.method == "INVITE" and self.tclient.get(t.tid) is t
        t.tout = t.tout * 2 if inviteClient else min(t.tout * 2, self.T2)
        t.teA = Timeout(self.timerA, t.tout, 1, t)

    def newTransaction(self, msg: Any, *args: Any, **kwargs: Any) -> Any:
        """
        Send a request. A Contact with "transport=UDP" (SIPp, many phones)
        becomes the in-dialog target; sippy compares the transport
        case-sensitively and raises on every re-INVITE and BYE, so it is
        lower-cased first.
        """
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

    @property
    def pendingClientTransactions(self) -> int:
        """Requests we sent that still wait for their final answer."""
        return 0 if self.tclient is None else len(self.tclient)


def startTransactionManager(
    reactor: Any,
    address: str,
    port: int,
    advertisedAddress: str,
    trace: bool,
    requestHandler: Callable[[Any, Any], Any],
) -> ReactorTransactionManager:
    """
    Bind the SIP port and start a transaction manager on C{reactor}.

    sippy reads its settings from a "global configuration" dictionary that
    its UAs share with the transaction manager; the keys used here are the
    ones sippy 2.5.0 reads, plus C{_reactor} and C{_sip_advertised} for
    L{ReactorUdpServer}. The dictionary is the manager's C{global_config}.

    @param advertisedAddress: the address put in Via, Contact and SDP.
    @param trace: log every SIP message.
    @param requestHandler: sippy's C{req_cb}: called with (request,
        transaction) for a request outside any dialog of ours.
    """
    globalConfig: dict[str, Any] = {
        "_sip_address": address,
        "_sip_port": port,
        "_sip_logger": SipTraceLogger(trace),
        "_reactor": reactor,
        "_sip_advertised": advertisedAddress,
    }
    tm = ReactorTransactionManager(globalConfig, requestHandler)
    globalConfig["_sip_tm"] = tm
    routeSippyErrors()
    return tm
