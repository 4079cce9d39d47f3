# -*- test-case-name: tests.test_store -*-
"""
What the store holds, as plain values: one L{CallbackRecord} per callback and
one L{LegDialog} per leg.  Column names are the attribute names in
snake_case; L{CALLBACK_COLUMNS} and L{LEG_COLUMNS} are the single list of
them that the SQL, the CDR tool and the updates derive from.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = [
    "CALLBACK_COLUMNS",
    "LEG_COLUMNS",
    "UPDATABLE",
    "Accepted",
    "CallbackRecord",
    "LegDialog",
    "NewCallback",
    "callbackFromRow",
    "endWord",
    "legFromRow",
    "legToRow",
]


#: The attributes that make two REQUESTs the same one (who asked, and every
#: REQUEST parameter), shared by L{NewCallback} and L{CallbackRecord}.
_REQUEST_ATTRIBUTES = (
    "peer",
    "user1",
    "user2",
    "duration",
    "annId1",
    "annId2",
    "annDigit2",
)


def _requestParameters(value: Any) -> tuple[Any, ...]:
    return tuple(getattr(value, name) for name in _REQUEST_ATTRIBUTES)


@dataclass(frozen=True)
class NewCallback:
    """
    The REQUEST parameters of a callback being accepted, and who asked.

    @ivar id: the AS's callback id.
    @ivar peer: the peer's configured name.
    @ivar peerAddress: where the RESPONSE goes, C{"host:port"}.
    @ivar user1: the first called party.
    @ivar user2: the second called party.
    @ivar duration: the requested duration in seconds, as the AS sent it.
    @ivar annId1: announcement for user1, or L{None}.
    @ivar annId2: announcement for user2, or L{None}.
    @ivar annDigit2: digits announced to user2, or L{None}.
    """

    id: str
    peer: str
    peerAddress: str
    user1: str
    user2: str
    duration: int
    annId1: str | None = None
    annId2: str | None = None
    annDigit2: str | None = None

    def requestParameters(self) -> tuple[Any, ...]:
        """What must match for a repeated REQUEST to be the same one."""
        return _requestParameters(self)


@dataclass(frozen=True)
class CallbackRecord:
    """
    One callback as stored.  Times are POSIX seconds (float) or L{None} when
    that moment has not happened.

    @ivar serverId: the server that owns the callback (runs it, recovers it,
        sends its RESPONSE).
    @ivar state: the callback's state when last written ("calling1",
        "joined", "ended"...).
    @ivar endCause: why it ended ("user1 busy (486 Busy Here)", "timer",
        "recovered"...), L{None} while it runs.
    @ivar leg1Status: the final SIP status of user1's INVITE (or the BYE's
        cause), L{None} if none yet; C{leg1Reason} its reason phrase.
    @ivar realDuration: whole seconds of conversation reported to the AS.
    @ivar responseSentAt: when the RESPONSE went to the AS.
    """

    id: str
    serverId: str
    peer: str
    peerAddress: str
    user1: str
    user2: str
    duration: int
    annId1: str | None
    annId2: str | None
    annDigit2: str | None
    state: str
    acceptedAt: float
    answered1At: float | None = None
    called2At: float | None = None
    answered2At: float | None = None
    joinedAt: float | None = None
    endedAt: float | None = None
    checkpointAt: float | None = None
    endCause: str | None = None
    leg1Status: int | None = None
    leg1Reason: str | None = None
    leg2Status: int | None = None
    leg2Reason: str | None = None
    realDuration: int | None = None
    responseSentAt: float | None = None

    @property
    def ended(self) -> bool:
        """True once the callback has ended (its real_duration is final)."""
        return self.endedAt is not None

    def requestParameters(self) -> tuple[Any, ...]:
        """The same tuple as L{NewCallback.requestParameters}."""
        return _requestParameters(self)

    def recoveredDuration(self) -> int:
        """
        The real_duration of a callback that was running when its server
        died, as if it ended at its checkpoint: the talk time from the join
        to C{checkpointAt}, rounded to the nearest second (halves up) as
        L{callback_tw.callback.call} does; 0 if the parties were never
        joined.  Recovery first brings C{checkpointAt} up to the server's
        last heartbeat (L{callback_tw.store.Store.settleCheckpoints}), so
        this is the talk time up to max(checkpoint_at, alive_at).
        """
        if self.joinedAt is None:
            return 0
        last = max(self.checkpointAt or self.joinedAt, self.joinedAt)
        return math.floor(last - self.joinedAt + 0.5)

    def sameRequest(self, request: NewCallback) -> bool:
        """True if C{request} repeats the REQUEST this callback came from."""
        return self.requestParameters() == request.requestParameters()

    def asDict(self) -> dict[str, Any]:
        """The record keyed by column name (for CSV/JSON export)."""
        return {_snake(k): v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class LegDialog:
    """
    What a BYE or a CANCEL for one leg needs after a restart.

    @ivar callbackId: the callback the leg belongs to.
    @ivar leg: 1 (user1) or 2 (user2).
    @ivar callId: the dialog's Call-ID.
    @ivar localTag: our From tag.
    @ivar remoteTag: the far end's To tag, L{None} before a tagged response.
    @ivar localURI: our From URI; C{remoteURI} the To URI.
    @ivar remoteTarget: the far end's Contact (the BYE's Request-URI), L{None}
        before a response with one.
    @ivar routeSet: the dialog's route set, in the order to use.
    @ivar nextCSeq: the CSeq number of our next in-dialog request.
    @ivar inviteBranch: the Via branch of our INVITE (a CANCEL repeats it).
    @ivar inviteCSeq: the INVITE's CSeq number (a CANCEL repeats it).
    @ivar destination: C{"host:port"} the requests are sent to.
    @ivar viaProvider: True when the leg goes through the external line's
        provider (its outbound proxy), so a BYE does too.
    @ivar state: "trying", "ringing", "answered", "ended".
    """

    callbackId: str
    leg: int
    callId: str
    localTag: str
    remoteTag: str | None
    localURI: str
    remoteURI: str
    remoteTarget: str | None
    routeSet: tuple[str, ...]
    nextCSeq: int
    inviteBranch: str
    inviteCSeq: int
    destination: str
    viaProvider: bool
    state: str

    def asDict(self) -> dict[str, Any]:
        """The dialog keyed by column name, the route set as a list."""
        row = {_snake(k): v for k, v in asdict(self).items()}
        row["route_set"] = list(self.routeSet)
        return row


@dataclass(frozen=True)
class Accepted:
    """
    The outcome of L{callback_tw.store.Store.accept}.

    @ivar record: the callback's row as committed: ours if C{created}, or the
        row that was there already (perhaps another server's).
    @ivar created: True if this call inserted the row, so this server owns a
        new callback and may send C{ACK code=ok} and dial.
    """

    record: CallbackRecord
    created: bool


#: The end causes a callback writes (L{callback_tw.callback.call}), by the
#: start of their text, as one word for programs (the RESPONSE's C{cause}).
#: The first match wins: the longer starts come first.
_END_WORDS = (
    ("duration limit", "duration"),
    ("user1 hung up", "user1_hangup"),
    ("user2 hung up", "user2_hangup"),
    ("user1 and user2 share no codec", "join_failed"),
    ("user1 ", "user1_failed"),
    ("user2 ", "user2_failed"),
    ("cannot call user2", "user2_failed"),
    ("join failed", "join_failed"),
    ("unusable SDP", "join_failed"),
    ("cancelled by the application server", "cancelled"),
    ("server shutting down", "shutdown"),
    ("recovered", "recovered"),
)


def endWord(cause: str | None) -> str:
    """
    One word for an end cause: C{duration}, C{user1_hangup},
    C{user2_hangup}, C{user1_failed}, C{user2_failed}, C{join_failed},
    C{cancelled}, C{shutdown}, C{recovered}; C{error} for anything else,
    empty when the callback has not ended.
    """
    if cause is None:
        return ""
    for start, word in _END_WORDS:
        if cause.startswith(start):
            return word
    return "error"


def _snake(name: str) -> str:
    """C{localURI} -> C{local_uri}, C{nextCSeq} -> C{next_cseq}."""
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()


CALLBACK_ATTRIBUTES = tuple(f.name for f in fields(CallbackRecord))
CALLBACK_COLUMNS = tuple(_snake(name) for name in CALLBACK_ATTRIBUTES)
LEG_ATTRIBUTES = tuple(f.name for f in fields(LegDialog))
LEG_COLUMNS = tuple(_snake(name) for name in LEG_ATTRIBUTES)

# What Store.update may change: everything a running callback learns, never
# its identity, its owner or its REQUEST parameters.
UPDATABLE = {
    name: _snake(name)
    for name in CALLBACK_ATTRIBUTES[CALLBACK_ATTRIBUTES.index("state") :]
    if name != "acceptedAt"
}


def callbackFromRow(row: tuple[Any, ...]) -> CallbackRecord:
    """Build a record from a row selected with L{CALLBACK_COLUMNS}."""
    return CallbackRecord(*row)


def legFromRow(row: tuple[Any, ...]) -> LegDialog:
    """Build a dialog from a row selected with L{LEG_COLUMNS}."""
    values = dict(zip(LEG_ATTRIBUTES, row, strict=True))
    values["routeSet"] = tuple(json.loads(values["routeSet"] or "[]"))
    values["viaProvider"] = bool(values["viaProvider"])
    return LegDialog(**values)


def legToRow(dialog: LegDialog) -> tuple[Any, ...]:
    """The values to store for C{dialog}, in L{LEG_COLUMNS} order."""
    values = []
    for name in LEG_ATTRIBUTES:
        value = getattr(dialog, name)
        if name == "routeSet":
            value = json.dumps(list(value))
        elif name == "viaProvider":
            value = int(value)
        values.append(value)
    return tuple(values)
