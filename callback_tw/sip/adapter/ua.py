# -*- test-case-name: tests.test_sip_leg_routes,tests.test_sip_leg -*-
"""
sippy's user agent and INVITE event, with the gaps of sippy 2.5.0 that an
outgoing leg runs into filled.

L{callback_tw.sip.leg.Leg} uses only what this module offers
(L{DialogUA}, L{Invite}) and sippy's public events; every reach into the
UA's internals is here.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from sippy.CCEvents import CCEventTry
from sippy.MsgBody import MsgBody
from sippy.SipAddress import SipAddress
from sippy.SipConf import SipConf
from sippy.SipContact import SipContact
from sippy.SipHeader import SipHeader
from sippy.SipTransactionManager import TRYING
from sippy.SipURL import SipURL
from sippy.UA import UA
from sippy.UacStateCancelling import UacStateCancelling
from sippy.UacStateTrying import UacStateTrying
from sippy.UacStateUpdating import UacStateUpdating

from callback_tw.sip.adapter.headers import NamedHeader

__all__ = ["DialogUA", "Invite", "dialogFieldsOf", "hostPort", "ourContact"]


def hostPort(host: str, port: int | None) -> str:
    """C{"host:port"} (C{"[v6]:port"}); sippy's default port when None."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port or 5060}"


#: our Contact, one per caller (the user part), shared by every leg from
#: that caller: sippy writes our address and port into it as it sends.
_CONTACTS: weakref.WeakValueDictionary[str, SipContact] = weakref.WeakValueDictionary()


def ourContact(callerId: str) -> SipContact:
    """
    The Contact of a leg from C{callerId}: a held leg keeps one, and
    thousands of legs from one number need only one.  Checked against
    sippy 2.5.0: only C{UacStateIdle} writes into the UA's Contact (the
    user part, which is C{callerId} again); a request refers to it and
    writes our address when sent (C{SipURL.localStr}).
    """
    contact = _CONTACTS.get(callerId)
    if contact is None:
        contact = SipContact(
            address=SipAddress(
                url=SipURL(
                    username=callerId,
                    host=SipConf.my_address,
                    port=SipConf.my_port,
                )
            )
        )
        _CONTACTS[callerId] = contact
    return contact


class Invite(CCEventTry):
    """
    sippy's INVITE event, with the From host set once the UAC is built:
    sippy writes our own address there, a provider wants its domain.  An
    asserted identity is written at that same host, which is only known
    then.  Checked against sippy 2.5.0 (C{onUacSetupComplete}, called
    before C{getExtraHeaders}, C{UA.lUri}; a 401/407 retry repeats the
    extra headers).

    @ivar fromDomain: the host of the From URI; our address when None.
    @ivar assertedIdentity: the user of a C{P-Asserted-Identity} header
        (RFC 3325) at the From URI's host; none when None.
    """

    fromDomain: str | None = None
    assertedIdentity: str | None = None

    def onUacSetupComplete(self, uac: Any) -> None:
        if self.fromDomain:
            uac.lUri.getUrl().host = self.fromDomain
        if self.assertedIdentity:
            url = uac.lUri.getUrl().getCopy()
            url.username = self.assertedIdentity
            header = SipHeader(body=NamedHeader("P-Asserted-Identity", f"<{url}>"))
            self.extra_headers = (*(self.extra_headers or ()), header)


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
      - Without a route set, the transaction manager still sends the ACK
        of a 2xx to the 2xx's Contact, around the provider that relays every
        other in-dialog request: L{_ackThroughProxy} sends it to the proxy.

    It also reports its dialog as plain values (L{dialogFields}) and tells
    L{dialogChanged} when they may have moved, for crash recovery.

    Checked against sippy 2.5.0 (C{UA.recvResponse}, C{UA.recvRequest},
    C{UA.lSDP}, C{UA.outbound_proxy}, C{UA.newUacTransaction},
    C{UA.newTransaction}, C{UA.cleanup} called by C{UaStateDead}).
    """

    #: the Record-Route of the 2xx that created the dialog, as received.
    _dialogRecordRoute: list[Any] = []

    #: called (from inside sippy) after anything that may change
    #: L{dialogFields}: a request sent, a response or a request received.
    dialogChanged: Callable[[], None] | None = None

    #: the CSeq number and Via branch of the INVITE that a CANCEL would
    #: repeat: the last one sent before the answer (a 401/407 retry is a
    #: new INVITE transaction).
    _inviteCSeq: int | None = None
    _inviteBranch: str | None = None

    #: the To tag of the first tagged provisional response: sippy records
    #: the remote tag only from the 2xx.
    _earlyRemoteTag: str | None = None

    def newUacTransaction(self, req: Any, **kwargs: Any) -> None:
        """Note the INVITE a CANCEL would repeat, and that the dialog moved."""
        super().newUacTransaction(req, **kwargs)
        if req.getMethod() == "INVITE" and self.connect_ts is None:
            self._inviteCSeq = req.getHFBody("cseq").getCSeqNum()
            self._inviteBranch = req.getHFBody("via").getBranch()
        self._notifyChanged()

    def newTransaction(self, req: Any, *args: Any, **kwargs: Any) -> Any:
        """An in-dialog request (BYE, CANCEL...) moves our CSeq: say so."""
        tr = super().newTransaction(req, *args, **kwargs)
        self._notifyChanged()
        return tr

    def cleanup(self) -> None:
        """
        The UA is dead (sippy calls this from C{UaStateDead}, where it drops
        C{event_cb}): drop L{dialogChanged} too, which would otherwise keep
        the leg and the UA in a reference cycle.
        """
        self.dialogChanged = None
        super().cleanup()

    def _notifyChanged(self) -> None:
        if self.dialogChanged is not None:
            self.dialogChanged()

    def dialogFields(self) -> dict[str, Any] | None:
        """
        What a BYE or a CANCEL of this dialog needs, read from sippy's UA:
        the keyword arguments of L{callback_tw.sip.dialogs.DialogState}
        except C{viaProvider} and C{state}; None before the INVITE is sent.
        See L{dialogFieldsOf}.
        """
        return dialogFieldsOf(self)

    def recvResponse(self, resp: Any, tr: Any) -> None:
        """
        Keep or restore the dialog's route set (see the class), note the
        first remote tag, and tell L{dialogChanged}.
        """
        try:
            self._recvResponse(resp, tr)
        finally:
            self._notifyChanged()

    def _recvResponse(self, resp: Any, tr: Any) -> None:
        code = resp.getSCode()[0]
        method = resp.getHFBody("cseq").getCSeqMethod()
        if code < 200 and method == "INVITE" and self._earlyRemoteTag is None:
            self._earlyRemoteTag = resp.getHFBody("to").getTag()
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
        if 200 <= code < 300 and method == "INVITE":
            self._ackThroughProxy(resp, tr)
        if code >= 200 and tr is self.tr:
            self._settle()

    def _settle(self) -> None:
        """
        Drop what sippy keeps of a finished INVITE transaction and give the
        UA a dictionary sized for what it still holds: a dialog that is
        up may be held for hours, and thousands of them at once.

          - C{tr}: the last client transaction (the INVITE or re-INVITE,
            with the text sent) is kept for the life of the dialog; once
            it has its final response nothing reads it again.
          - C{reqs}: the INVITEs awaiting a final response (for a 401/407
            retry); emptied by then, but a dictionary never shrinks.
          - instance attributes that are the very object the class holds
            (the C{None}s and C{False}s sippy's constructor writes) are
            removed: reading them gives the same object.  The UA has more
            than 42 attributes, which puts its dictionary in a table twice
            the size needed once these are gone.

        Checked against sippy 2.5.0 (C{UA.__init__}, C{UA.genRequest},
        C{UA.recvResponse}, C{UacStateTrying}, C{UacStateUpdating} and
        C{UaStateDead}, the only readers of C{tr}).
        """
        self.tr = None
        if not self.reqs:
            self.reqs = {}
        cls = type(self)
        state = self.__dict__
        kept = {
            name: value
            for name, value in state.items()
            if getattr(cls, name, _MISSING) is not value
        }
        if len(kept) < len(state):
            self.__dict__ = kept

    def _ackThroughProxy(self, resp: Any, tr: Any) -> None:
        """
        Make the transaction manager send the ACK of this 2xx to the
        outbound proxy when the dialog kept it (no route set).

        The manager, which builds the ACK after this UA has read the 2xx,
        sends it to the address of the 2xx's Contact, and to the INVITE's
        own destination only when the 2xx has neither Contact nor
        Record-Route.  So the remote target (already read by sippy's state)
        becomes the ACK's Request-URI here, and the 2xx loses those headers
        before the manager reads them: the ACK then goes, like every other
        in-dialog request, to the proxy.  Checked against sippy 2.5.0
        (C{SipTransactionManager.incomingResponse}).
        """
        if self.outbound_proxy is None or tr is None or not tr.needack:
            return
        if resp.countHFs("contact"):
            tr.ack.setRURI(resp.getHFBody("contact").getUrl().getCopy())
        elif self.rTarget is not None:
            tr.ack.setRURI(self.rTarget.getCopy())
        resp.delHFs("contact")
        resp.delHFs("record-route")

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
            self._notifyChanged()
        if result is None and sip_t.data is None and req.getMethod() != "ACK":
            return (
                req.genResponse(501, "Not Implemented", server=self.local_ua),
                None,
                None,
            )
        return result

    def recvEvent(self, event: Any) -> None:
        """
        Stop a re-INVITE of ours that is still unanswered when the dialog
        is ended from this side.

        sippy's C{UacStateUpdating} sends the BYE and asks the transaction
        manager to CANCEL the re-INVITE; without a provisional response
        there is nothing to CANCEL yet (RFC 3261 9.1), so the manager only
        notes it and keeps retransmitting the re-INVITE for 32 s, after the
        BYE, to a far end that has forgotten the dialog.  Such a
        transaction is dropped here: its timers stop and a late answer to
        it is a stray response.  One that had a provisional response is
        not retransmitted any more and gets its CANCEL from sippy.
        Checked against sippy 2.5.0 (C{UacStateUpdating.recvEvent},
        C{SipTransactionManager.cancelTransaction}, C{timerA}).
        """
        pending = self.tr if isinstance(self.state, UacStateUpdating) else None
        super().recvEvent(event)
        if pending is not None and not isinstance(self.state, UacStateUpdating):
            _dropUnanswered(self.global_config["_sip_tm"], pending)

    def restoreLocalSdp(self, sdp: str) -> None:
        """
        Put back C{sdp}, the SDP the far end last agreed to from us, when
        sippy has forgotten it: after a failed re-INVITE sippy 2.5.0 sets
        C{lSDP} to None and then crashes on the next re-INVITE.
        """
        if self.lSDP is None:
            self.lSDP = MsgBody(sdp)


_MISSING = object()


def dialogFieldsOf(ua: Any) -> dict[str, Any] | None:
    """
    L{DialogUA.dialogFields} of C{ua}: a L{DialogUA}, or anything that
    reads as one (a parked dialog, L{callback_tw.sip.adapter.parking}).

    C{remoteTarget} and C{routeSet} are the Request-URI and Route set
    sippy itself would send next: the INVITE's Request-URI until the 2xx
    (what a CANCEL repeats), then the Contact and the Record-Route of the
    2xx.  C{destination} is where sippy sends them: the outbound proxy if
    it is kept, else the first route or the target.  Checked against sippy
    2.5.0 (C{UA.genRequest}, C{UacStateIdle.recvEvent},
    C{UacStateTrying.updateRoutes}).
    """
    if ua.cId is None or ua.lUri is None or ua._inviteCSeq is None:
        return None
    if ua.outbound_proxy is not None:
        host, port = ua.outbound_proxy
    else:
        host, port = ua.rAddr[0]
    remoteTag = ua.rUri.getTag() if ua.rUri is not None else None
    return {
        "callId": str(ua.cId),
        "localTag": ua.lUri.getTag(),
        "remoteTag": remoteTag or ua._earlyRemoteTag,
        "localURI": str(ua.lUri.getUrl()),
        "remoteURI": str(ua.rUri.getUrl()),
        "remoteTarget": None if ua.rTarget is None else str(ua.rTarget),
        "routeSet": tuple(str(route) for route in ua.routes or ()),
        "nextCSeq": ua.lCSeq,
        "inviteBranch": ua._inviteBranch,
        "inviteCSeq": ua._inviteCSeq,
        "destination": hostPort(host, port),
    }


def _dropUnanswered(tm: Any, tr: Any) -> None:
    """
    Forget client transaction C{tr} if it has had no response at all: its
    retransmission (A) and timeout (B) timers stop and the manager no
    longer knows it.  Checked against sippy 2.5.0 (C{SipTransaction},
    C{SipTransactionManager.tclient}).
    """
    if tr.state != TRYING or tm.tclient is None or tm.tclient.get(tr.tid) is not tr:
        return
    for timer in (tr.teA, tr.teB):
        if timer is not None:
            timer.cancel()
    tr.teA = tr.teB = None
    del tm.tclient[tr.tid]
    tr.cleanup()
