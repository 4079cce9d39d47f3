# -*- test-case-name: tests.test_sip_leg_routes,tests.test_sip_leg -*-
"""
sippy's user agent and INVITE event, with the gaps of sippy 2.5.0 that an
outgoing leg runs into filled.

L{callback_tw.sip.leg.Leg} uses only what this module offers
(L{DialogUA}, L{Invite}) and sippy's public events; every reach into the
UA's internals is here.
"""

from __future__ import annotations

from typing import Any

from sippy.CCEvents import CCEventTry
from sippy.MsgBody import MsgBody
from sippy.SipHeader import SipHeader
from sippy.UA import UA
from sippy.UacStateCancelling import UacStateCancelling
from sippy.UacStateTrying import UacStateTrying
from sippy.UacStateUpdating import UacStateUpdating

__all__ = ["DialogUA", "Invite"]


class Invite(CCEventTry):
    """
    sippy's INVITE event, with the From host set once the UAC is built:
    sippy writes our own address there, a provider wants its domain.
    Checked against sippy 2.5.0 (C{onUacSetupComplete}, C{UA.lUri}).

    @ivar fromDomain: the host of the From URI; our address when None.
    """

    fromDomain: str | None = None

    def onUacSetupComplete(self, uac: Any) -> None:
        if self.fromDomain:
            uac.lUri.getUrl().host = self.fromDomain


class DialogUA(UA):
    """
    sippy's UA, whose in-dialog requests follow the dialog's route set.

    Two gaps in sippy 2.5.0 that matter behind a record-routing proxy
    (Kamailio, a provider's edge):

      - With C{outbound_proxy} set, sippy sends every request to that proxy
        and, when the 2xx carries a loose-routing Record-Route, writes the
        first route (stripped of its parameters) as the R-URI, strict-router
        style, with the Contact as the last Route.  Only a proxy that spots
        its own URI in the R-URI (RFC 3261 16.4) can route that; Kamailio
        then spirals the request through itself a second time.  RFC 3261
        12.2.1.1 wants the remote target as R-URI and the route set as
        Route, sent to the first route (8.1.2) — what sippy does without an
        outbound proxy.  So the 2xx that creates the dialog with a route set
        drops the outbound proxy.  Without a Record-Route the proxy stays:
        the provider relays in-dialog requests by R-URI.
      - The transaction manager builds the ACK of a 2xx from that response's
        own Record-Route; the 2xx of a re-INVITE has none (the route set is
        fixed when the dialog is created, 12.2.1.2), so the ACK would go
        straight to the Contact, around the provider.  So the dialog's
        Record-Route is put back into such a 2xx before the transaction
        manager reads it.

    Checked against sippy 2.5.0 (C{UA.recvResponse}, C{UA.recvRequest},
    C{UA.lSDP}, C{UA.outbound_proxy}).
    """

    #: the Record-Route of the 2xx that created the dialog, as received.
    _dialogRecordRoute: list[Any] = []

    def recvResponse(self, resp: Any, tr: Any) -> None:
        """Keep or restore the dialog's route set (see the class)."""
        code = resp.getSCode()[0]
        method = resp.getHFBody("cseq").getCSeqMethod()
        if 200 <= code < 300 and method == "INVITE":
            if isinstance(self.state, (UacStateTrying, UacStateCancelling)):
                recordRoute = resp.getHFBodys("record-route")
                self._dialogRecordRoute = [x.getCopy() for x in recordRoute]
                if self._dialogRecordRoute:
                    self.outbound_proxy = None
            elif isinstance(self.state, UacStateUpdating) and self._dialogRecordRoute:
                resp.delHFs("record-route")
                resp.appendHeaders(
                    [
                        SipHeader(name="record-route", body=x.getCopy())
                        for x in self._dialogRecordRoute
                    ]
                )
        super().recvResponse(resp, tr)

    def recvRequest(self, req: Any, sip_t: Any) -> Any:
        """
        Two fixes around sippy's handling of an in-dialog request:

          - sippy hangs a C{sendResponse} closure on each request it hands a
            UA; the closure refers to the request and to the UA, a reference
            cycle that keeps the whole dialog alive until a full garbage
            collection. It is only used while the request is handled, so it
            is dropped after.
          - a method the UA's state has no handler for (UPDATE, NOTIFY,
            MESSAGE, PRACK ...) gets no answer at all from sippy: the phone
            retransmits for 32 s and may then end the call. It gets
            C{501 Not Implemented} instead (RFC 3261 8.2.1).
        """
        try:
            result = super().recvRequest(req, sip_t)
        finally:
            req.__dict__.pop("sendResponse", None)
        if result is None and sip_t.data is None and req.getMethod() != "ACK":
            return (
                req.genResponse(501, "Not Implemented", server=self.local_ua),
                None,
                None,
            )
        return result

    def restoreLocalSdp(self, sdp: str) -> None:
        """
        Put back C{sdp}, the SDP the far end last agreed to from us, when
        sippy has forgotten it: after a failed re-INVITE sippy 2.5.0 sets
        C{lSDP} to None and then crashes on the next re-INVITE.
        """
        if self.lSDP is None:
            self.lSDP = MsgBody(sdp)
