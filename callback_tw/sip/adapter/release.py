# -*- test-case-name: tests.test_sip_dialogs -*-
"""
A BYE or a CANCEL for a dialog this process never saw: after a restart,
built from the stored state of the dialog (L{callback_tw.sip.dialogs}) and
sent through sippy's transaction manager, so retransmissions, the ACK of
the INVITE's final response and the matching of responses are sippy's own.

Every reach into the transaction manager's internals for this is here.
Checked against sippy 2.5.0 (C{SipTransactionManager.newTransaction},
C{incomingResponse}, C{SipRequest.genCANCEL}, C{genACK}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sippy.SipAddress import SipAddress
from sippy.SipCallId import SipCallId
from sippy.SipFrom import SipFrom
from sippy.SipHeader import SipHeader
from sippy.SipReason import SipReason
from sippy.SipRequest import SipRequest
from sippy.SipRoute import SipRoute
from sippy.SipTo import SipTo
from sippy.SipTransactionManager import RINGING, SipTransaction
from sippy.SipURL import SipURL
from sippy.SipVia import SipVia
from sippy.Time.MonoTime import MonoTime

from callback_tw.sip.adapter.ua import hostPort

__all__ = ["abandon", "answeredFields", "sendBye", "sendCancel"]

#: C{(status, reason phrase, response)}: a final response, or sippy's own
#: 408 when the transaction timed out.
ResponseCallback = Callable[[int, str, Any], None]

_TIMERS = ("teA", "teB", "teC", "teD", "teE", "teF", "teG")


def _address(destination: str) -> tuple[str, int]:
    host, _, port = destination.rpartition(":")
    return host.strip("[]"), int(port)


def _header(cls: Any, text: str) -> Any:
    value = cls(text)
    value.parse()
    return value


def _party(cls: Any, uri: str, tag: str | None) -> Any:
    party = cls(address=SipAddress(url=SipURL(uri), hadbrace=True))
    if tag:
        party.setTag(tag)
    return party


def _reasonHeader(reason: tuple[int, str]) -> SipHeader:
    code, text = reason
    return SipHeader(
        name="reason", body=SipReason(protocol="SIP", cause=code, reason=text)
    )


def _finalOnly(callback: ResponseCallback) -> Callable[[Any, Any], None]:
    def onResponse(resp: Any, tr: Any) -> None:
        code, reason = resp.getSCode()
        if code >= 200:
            callback(code, reason, resp)

    return onResponse


def _ackAsSent(callback: ResponseCallback) -> Callable[[Any, Any], None]:
    """
    sippy builds the ACK of any final response from that response's
    Contact and Record-Route; the ACK of a failure belongs to the INVITE's
    transaction and repeats its Request-URI, with no Route (RFC 3261
    17.1.1.3). So a failure loses those headers before sippy reads them.
    """
    final = _finalOnly(callback)

    def onResponse(resp: Any, tr: Any) -> None:
        if resp.getSCode()[0] >= 300:
            resp.delHFs("contact")
            resp.delHFs("record-route")
        final(resp, tr)

    return onResponse


def sendBye(
    tm: Any,
    dialog: Any,
    reason: tuple[int, str],
    userAgent: str,
    onFinal: ResponseCallback,
) -> list[Any]:
    """
    Send a BYE in C{dialog} (a L{callback_tw.sip.dialogs.DialogState}):
    Request-URI the remote target, Route the route set, From/To with the
    stored tags, CSeq C{nextCSeq}, C{Reason: SIP;cause=...;text="..."}.

    @return: the transactions started, for L{abandon}.
    """
    req = SipRequest(
        method="BYE",
        ruri=SipURL(dialog.remoteTarget),
        to=_party(SipTo, dialog.remoteURI, dialog.remoteTag),
        fr0m=_party(SipFrom, dialog.localURI, dialog.localTag),
        cseq=dialog.nextCSeq,
        callid=SipCallId(dialog.callId),
        routes=[_header(SipRoute, route) for route in dialog.routeSet],
        target=(_address(dialog.destination), "udp"),
        user_agent=userAgent,
    )
    req.appendHeader(_reasonHeader(reason))
    return [tm.newTransaction(req, resp_cb=_finalOnly(onFinal), cb_ifver=2)]


def sendCancel(
    tm: Any,
    dialog: Any,
    reason: tuple[int, str],
    userAgent: str,
    onInviteFinal: ResponseCallback,
    onCancelFinal: ResponseCallback,
) -> list[Any]:
    """
    Send a CANCEL of the INVITE that started C{dialog}: same Call-ID, From
    tag, Request-URI, CSeq number and Via branch.

    The INVITE is put back into the transaction manager as a client
    transaction that already had a provisional response, without being
    sent again: its final response (487, or a 2xx that raced the CANCEL)
    then finds it, is ACKed by sippy as for any INVITE (same branch for a
    failure, RFC 3261 17.1.1.3; a new one for a 2xx) and is handed to
    C{onInviteFinal}.

    @return: the transactions started, for L{abandon}.
    """
    via = SipVia()
    via.params["branch"] = dialog.inviteBranch
    invite = SipRequest(
        method="INVITE",
        ruri=SipURL(dialog.remoteTarget),
        to=_party(SipTo, dialog.remoteURI, None),
        fr0m=_party(SipFrom, dialog.localURI, dialog.localTag),
        via=via,
        cseq=dialog.inviteCSeq,
        callid=SipCallId(dialog.callId),
        target=(_address(dialog.destination), "udp"),
        user_agent=userAgent,
    )
    inviteTransaction = _adoptInvite(tm, invite, _ackAsSent(onInviteFinal))
    cancel = invite.genCANCEL()
    cancel.appendHeader(_reasonHeader(reason))
    cancelTransaction = tm.newTransaction(
        cancel,
        resp_cb=_finalOnly(onCancelFinal),
        cb_ifver=2,
        userv=inviteTransaction.userv,
    )
    return [inviteTransaction, cancelTransaction]


def _adoptInvite(tm: Any, invite: Any, respCb: Any) -> Any:
    """
    Register C{invite} as a client transaction in the RINGING state without
    sending it: the fields are those C{newTransaction} sets, with no
    retransmission timer (the far end has had the INVITE long ago).
    """
    t = SipTransaction()
    t.rtime = MonoTime()
    t.compact = False
    t.method = "INVITE"
    t.cb_ifver = 2
    t.tid = invite.getTId(True, True)
    if t.tid in tm.tclient:
        raise ValueError(f"an INVITE transaction {t.tid} is already running")
    t.tout = 0.5
    t.fcode = None
    t.address = invite.getTarget()[0]
    t.userv = tm.l4r.getServer(t.address)
    t.data = invite.localStr(t.userv.getSIPaddr())
    t.expires = 300
    t.needack = True
    t.ack = invite.genACK()
    t.cancel = invite.genCANCEL()
    t.cancelPending = False
    t.resp_cb = respCb
    t.r408 = invite.genResponse(408, "Request Timeout")
    t.teA = t.teB = t.teC = None
    t.state = RINGING
    tm.tclient[t.tid] = t
    return t


def answeredFields(resp: Any, dialog: Any) -> dict[str, Any]:
    """
    What a 2xx to the INVITE of C{dialog} makes of it (RFC 3261 12.1.2):
    the remote tag, the Contact as remote target, the Record-Route reversed
    as route set, sent to the first route, else to the outbound proxy the
    INVITE went through, else to the target.  Fields for
    C{dataclasses.replace} of the L{callback_tw.sip.dialogs.DialogState}.
    """
    routes = [route.getCopy() for route in resp.getHFBodys("record-route")]
    routes.reverse()
    target = (
        resp.getHFBody("contact").getUrl().getCopy()
        if resp.countHFs("contact")
        else SipURL(dialog.remoteTarget)
    )
    if routes:
        host, port = routes[0].getAddr()
        destination = hostPort(host, port)
    elif dialog.viaProvider:
        destination = dialog.destination
    else:
        host, port = target.getAddr()
        destination = hostPort(host, port)
    return {
        "remoteTag": resp.getHFBody("to").getTag(),
        "remoteTarget": str(target),
        "routeSet": tuple(str(route) for route in routes),
        "nextCSeq": max(dialog.nextCSeq, dialog.inviteCSeq + 1),
        "destination": destination,
    }


def abandon(tm: Any, transactions: list[Any]) -> None:
    """
    Forget C{transactions} that are still running: their timers are
    cancelled and a late response to them is dropped by sippy as stray.
    """
    if tm.tclient is None:
        return
    for t in transactions:
        if t.tid is None:
            continue
        for name in _TIMERS:
            timer = getattr(t, name, None)
            if timer is not None:
                timer.cancel()
        tm.tclient.pop(t.tid, None)
        t.cleanup()
