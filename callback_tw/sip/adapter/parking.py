# -*- test-case-name: tests.test_sip_parking -*-
"""
A confirmed dialog kept without sippy's UA while nothing happens in it
(L{park}, L{ParkedDialog}), woken into a new UA when something does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sippy.MsgBody import DEFAULT_CTYPE, MsgBody
from sippy.SipAddress import SipAddress
from sippy.SipCallId import SipCallId
from sippy.SipFrom import SipFrom
from sippy.SipTo import SipTo
from sippy.SipURL import SipURL
from sippy.Time.MonoTime import MonoTime
from sippy.UaStateConnected import UaStateConnected

from callback_tw.sip.adapter.ua import DialogUA, dialogFieldsOf

__all__ = ["ParkedDialog", "park"]


def park(
    ua: DialogUA, localSdp: str | None = None, remoteSdp: str | None = None
) -> ParkedDialog | None:
    """
    Hand C{ua}'s dialog, idle and confirmed, over to a L{ParkedDialog}
    and leave C{ua}: a dialog that is up may be held for hours, by
    thousands, and sippy's UA with its header objects is several times the
    size of what the dialog needs (see L{ParkedDialog}).

    The parked dialog becomes sippy's consumer of the Call-ID in place of
    C{ua}, which must not be used any more (its state is gone, so that
    reference counting frees it at once).

    @param localSdp: the text of the SDP we last agreed, as the caller
        keeps it: the parked dialog refers to it instead of a copy.
    @param remoteSdp: the same for the far end's SDP.
    @return: the parked dialog, or None when the UA is not idle in a
        confirmed dialog (it is then left as it was).
    """
    parked = ParkedDialog.capture(ua, localSdp, remoteSdp)
    if parked is None:
        return None
    tm = ua.global_config["_sip_tm"]
    tm.unregConsumer(ua, parked.callId)
    tm.regConsumer(parked, parked.callId, compact=ua.compact_sip)
    ua.state = None
    ua.event_cb = None
    ua.dialogChanged = None
    return parked


#: UA attributes a L{ParkedDialog} does not keep as they are: rebuilt on
#: restore, given by the owner, or required empty.
_REBUILT = frozenset(
    {
        "global_config",
        "event_cb",
        "dialogChanged",
        "state",
        "lContact",
        "equeue",
        "reqs",
        "credit_times",
        "conn_cbs",
        "disc_cbs",
        "fail_cbs",
        "ring_cbs",
        "dead_cbs",
        "cId",
        "lUri",
        "rUri",
        "lSDP",
        "rSDP",
        "tr",
    }
)

#: a local address no real one equals, to compare headers written with
#: sippy's placeholders for our own address.
_PROBE_ADDRESS = (("192.0.2.255", 65535), "udp")

#: the attribute names of parked dialogs, one tuple per distinct set, so
#: that thousands of parked dialogs share it (bounded: a set of names is
#: made by a code path, not by a dialog).
_NAMES: dict[tuple[str, ...], tuple[str, ...]] = {}


class _Instant(tuple):
    """A sippy C{MonoTime} kept as its two clock readings (monot, realt)."""

    __slots__ = ()


class _EmptyList:
    """Stands for an empty list (the UA's route sets), rebuilt on restore."""


_EMPTY_LIST = _EmptyList()


def _compact(value: Any) -> Any:
    """
    C{value} as a parked dialog keeps it: a C{MonoTime} (an object with
    its own attributes) as a tuple of its readings, an empty list as one
    shared marker; anything else as it is.
    """
    if type(value) is MonoTime:
        return _Instant((value.monot, value.realt))
    if type(value) is list and not value:
        return _EMPTY_LIST
    return value


def _expand(value: Any) -> Any:
    """The UA attribute value that L{_compact} made C{value} of."""
    if type(value) is _Instant:
        return MonoTime(monot=value[0], realt=value[1])
    if value is _EMPTY_LIST:
        return []
    return value


def _localUri(username: Any, host: Any, name: Any, tag: str) -> Any:
    """Our From as sippy's C{UacStateIdle} builds it (host as given)."""
    url = SipURL(username=username)
    url.port = url.transport = None
    url.host = host
    uri = SipFrom(address=SipAddress(url=url, hadbrace=True, name=name))
    uri.setTag(tag)
    return uri


def _remoteUri(username: Any, host: Any, tag: str | None) -> Any:
    """The far end's To as sippy's C{UacStateIdle} builds it, with its tag."""
    url = SipURL(username=username, host=host, port=None)
    uri = SipTo(address=SipAddress(url=url, hadbrace=True))
    if tag is not None:
        uri.setTag(tag)
    return uri


def _sameHeader(kept: Any, rebuilt: Any) -> bool:
    """Whether two From/To headers are written the same, placeholders too."""
    return kept.localStr(_PROBE_ADDRESS) == rebuilt.localStr(_PROBE_ADDRESS)


def _sdpText(body: Any) -> tuple[bool, str | None]:
    """(whether C{body} can be kept as its text, that text)."""
    if body is None:
        return True, None
    if isinstance(body.content, str) and body.mtype is DEFAULT_CTYPE:
        return True, body.content
    return False, None


class ParkedDialog:
    """
    A confirmed dialog whose sippy UA has been let go (L{DialogUA.park}):
    only what sippy's UA held that cannot be rebuilt, kept compactly, and
    registered with sippy's transaction manager as the consumer of the
    Call-ID, so that an in-dialog request from the far end finds it.

    Such a request, or the owner (a BYE or re-INVITE to send), wakes the
    dialog: L{restore} fills a new L{DialogUA} with what was kept and puts
    it back in its place.  The UA's From and To are kept as their parts
    (sippy builds both from the user, the host and the tags: checked at
    parking, where a header that would not be rebuilt the same, byte for
    byte, keeps the UA from parking), the SDPs as their texts, the Call-ID
    as a string; every other attribute of the UA's dictionary by
    reference.  Checked against sippy 2.5.0 (C{UA.__init__},
    C{UacStateIdle.recvEvent}, C{UaStateConnected}, C{UA.isYours},
    C{SipTransactionManager.regConsumer}).

    @ivar callId: the dialog's Call-ID.
    @ivar owner: called, with no argument, when a request of the far end
        arrives for the dialog: must restore it and return the awake
        L{DialogUA}.  None once restored.
    """

    __slots__ = (
        "callId",
        "owner",
        "_names",
        "_values",
        "_local",
        "_remote",
        "_localSdp",
        "_remoteSdp",
    )

    def __init__(
        self,
        callId: str,
        names: tuple[str, ...],
        values: tuple[Any, ...],
        local: tuple[Any, Any, Any, str],
        remote: tuple[Any, Any, str | None],
        localSdp: str | None,
        remoteSdp: str | None,
    ) -> None:
        self.callId = callId
        self.owner: Callable[[], DialogUA] | None = None
        self._names = names
        self._values = values
        self._local = local
        self._remote = remote
        self._localSdp = localSdp
        self._remoteSdp = remoteSdp

    @classmethod
    def capture(
        cls, ua: DialogUA, localSdp: str | None, remoteSdp: str | None
    ) -> ParkedDialog | None:
        """
        What L{DialogUA.park} keeps of C{ua}; None when C{ua} is not idle
        in a confirmed dialog or holds something this class cannot keep.
        """
        if type(ua.state) is not UaStateConnected or ua.lUri is None:
            return None
        if ua.tr is not None or ua.pending_tr is not None:
            return None
        if ua.reqs or ua.equeue or ua.credit_times:
            return None
        if (ua.conn_cbs, ua.disc_cbs, ua.fail_cbs, ua.ring_cbs, ua.dead_cbs) != (
            (),
        ) * 5:
            return None
        state = ua.__dict__
        if any(name.endswith("_timer") and state[name] is not None for name in state):
            return None
        keptLocal, localText = _sdpText(ua.lSDP)
        keptRemote, remoteText = _sdpText(ua.rSDP)
        if not (keptLocal and keptRemote):
            return None
        lUrl, rUrl = ua.lUri.getUrl(), ua.rUri.getUrl()
        local = (lUrl.username, lUrl.host, ua.lUri.getUri().name, ua.lUri.getTag())
        remote = (rUrl.username, rUrl.host, ua.rUri.getTag())
        if not _sameHeader(ua.lUri, _localUri(*local)):
            return None
        if not _sameHeader(ua.rUri, _remoteUri(*remote)):
            return None
        names = tuple(name for name in state if name not in _REBUILT)
        names = _NAMES.setdefault(names, names) if len(_NAMES) < 64 else names
        return cls(
            str(ua.cId),
            names,
            tuple(_compact(state[name]) for name in names),
            local,
            remote,
            localSdp if localSdp == localText else localText,
            remoteSdp if remoteSdp == remoteText else remoteText,
        )

    def isYours(
        self,
        req: Any = None,
        call_id: str | None = None,
        from_tag: str | None = None,
        to_tag: str | None = None,
    ) -> Any:
        """
        sippy's transaction manager asking whether C{req} is in this
        dialog (as C{UA.isYours}): if it is, the dialog is woken and the
        awake UA is the answer, which then handles the request.
        """
        if req is not None:
            call_id = str(req.getHFBody("call-id"))
            from_tag = req.getHFBody("from").getTag()
            to_tag = req.getHFBody("to").getTag()
        if (call_id, from_tag, to_tag) != (
            self.callId,
            self._remote[2],
            self._local[3],
        ):
            return None
        if self.owner is None:
            return None
        return self.owner().isYours(req, call_id, from_tag, to_tag)

    def dialogFields(self) -> dict[str, Any] | None:
        """L{DialogUA.dialogFields} of the UA this dialog was parked from."""
        return dialogFieldsOf(_ParkedView(self))

    def restore(self, ua: DialogUA) -> DialogUA:
        """
        Wake the dialog into C{ua}, a L{DialogUA} just built as the first
        one was (same configuration, event callback, next hop, credentials
        and Contact); C{ua} replaces this object as sippy's consumer of the
        Call-ID.
        """
        kept = set(self._names)
        for name in [name for name in ua.__dict__ if name not in kept]:
            # Set by the constructor or the owner, but the class's value
            # when the dialog was parked (the UA drops such attributes).
            if name not in _REBUILT and hasattr(type(ua), name):
                delattr(ua, name)
        for name, value in zip(self._names, self._values, strict=True):
            setattr(ua, name, _expand(value))
        ua.cId = SipCallId(self.callId)
        ua.lUri = _localUri(*self._local)
        ua.rUri = _remoteUri(*self._remote)
        ua.lSDP = None if self._localSdp is None else MsgBody(self._localSdp)
        ua.rSDP = None if self._remoteSdp is None else MsgBody(self._remoteSdp)
        ua.state = UaStateConnected(ua)
        tm = ua.global_config["_sip_tm"]
        tm.unregConsumer(self, self.callId)
        tm.regConsumer(ua, self.callId, compact=ua.compact_sip)
        self.owner = None
        return ua


class _ParkedView:
    """A L{ParkedDialog} read as the UA it was parked from (L{_dialogFields})."""

    def __init__(self, parked: ParkedDialog) -> None:
        self.__dict__.update(
            (name, _expand(value))
            for name, value in zip(parked._names, parked._values, strict=True)
        )
        self.cId = parked.callId
        self.lUri = _localUri(*parked._local)
        self.rUri = _remoteUri(*parked._remote)

    def __getattr__(self, name: str) -> Any:
        return getattr(DialogUA, name)
