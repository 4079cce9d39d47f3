# -*- test-case-name: tests.test_iif_message -*-
"""
The inner interface (IIF) wire format: one text message per UDP datagram.

An application server (AS) sends C{REQUEST: id=1234;user1=100;user2=101;duration=3600;}
(or our extension C{CANCEL: id=1234;}); we answer C{ACK: id=1234;code=ok;} and, when the
callback is over, C{RESPONSE: id=1234;real_duration=180;}.

This module is a pure codec for both sides: the server parses commands and formats
replies; an AS (L{callback_tw.client}) formats commands and parses replies. Bytes in,
frozen dataclasses or L{MessageError} out, and bytes back. It does no I/O, keeps no
state and imports nothing of ours but the shared user syntax, so every rule of the
format can be tested as a table of datagrams.

Parsing is strict on purpose: an AS that sends something we do not understand must
get C{code=fail} at once rather than a callback that does something it did not mean.
The only leniencies are those the spec's own examples need (spaces after the colon, an
optional trailing C{;}, a trailing line end, parameter names in any case) and unknown
parameters, which are ignored so that a newer AS keeps working.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from callback_tw.syntax import isSipUser

__all__ = [
    "MAX_DATAGRAM_SIZE",
    "Ack",
    "Response",
    "formatCancel",
    "formatRequest",
    "parseServerReply",
    "Cancel",
    "MessageError",
    "Request",
    "formatAck",
    "formatResponse",
    "RESPONSE_DETAILS",
    "parseMessage",
    "stripLineEnd",
]

#: Longest datagram accepted, in bytes (line end included). Real requests are < 200.
MAX_DATAGRAM_SIZE = 1024

# id: 1-31 printable ASCII characters except ";" (0x3b) and "=" (0x3d).
_ID = re.compile(r"[!-:<>-~]{1,31}")
_DURATION = re.compile(r"[0-9]+")
_ANN_ID = re.compile(r"[0-9]{8}")
_ANN_DIGITS = re.compile(r"[0-9]{1,31}")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

_METHODS = ("REQUEST", "CANCEL")
# The server's replies, as L{formatAck} and L{formatResponse} write them.
_ACK = re.compile(rb"ACK: id=([!-:<>-~]{1,31});code=(ok|fail);")
_RESPONSE = re.compile(
    rb"RESPONSE: id=([!-:<>-~]{1,31});real_duration=(0|[1-9]\d{0,8});"
    rb"((?:cause=[a-z0-9_]*;answer1=\d*;answer2=\d*;joined=\d*;ended=\d*;"
    rb"status1=\d*;status2=\d*;)?)"
)
#: The parameters a C{response_details} RESPONSE adds, in order (docs/iif.md).
RESPONSE_DETAILS = (
    "cause",
    "answer1",
    "answer2",
    "joined",
    "ended",
    "status1",
    "status2",
)
_DETAIL_VALUE = re.compile(r"[a-z0-9_]*")
_SIGNATURE = re.compile(rb"ts=(\d{1,12});sig=([0-9a-f]{64});")


@dataclass(frozen=True)
class Request:
    """
    A valid C{REQUEST}: call user1, then user2, join them for at most C{duration} s.

    Two requests compare equal when every parameter the AS gave is the same; that is
    what makes a repeated datagram recognisable as a duplicate.

    @ivar callbackId: the AS's identity of the callback (C{id}), echoed in ACK/RESPONSE.
    @ivar user1: the first called party.
    @ivar user2: the second called party.
    @ivar duration: seconds the call may last, counted from user1's answer; 0 means no
        limit other than the server's cap.
    @ivar annId1: 8-digit announcement id played to user1, or L{None}.
    @ivar annId2: 8-digit announcement id played to user2, or L{None}.
    @ivar annDigit2: digits announced to user2, or L{None}.
    @ivar ignored: names (as sent) of unknown parameters, so the caller can log them;
        not part of equality.
    """

    callbackId: str
    user1: str
    user2: str
    duration: int
    annId1: str | None = None
    annId2: str | None = None
    annDigit2: str | None = None
    ignored: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Cancel:
    """
    A valid C{CANCEL} (our extension): release the callback C{callbackId}.

    @ivar callbackId: the id of the callback to release.
    @ivar ignored: names (as sent) of parameters other than C{id}; not part of equality.
    """

    callbackId: str
    ignored: tuple[str, ...] = field(default=(), compare=False)


class MessageError(ValueError):
    """
    A datagram that is not a valid IIF command.

    @ivar callbackId: the datagram's id when one valid, unambiguous id could be read
        from it (so the ACK C{code=fail} can name it), else C{""}.
    @ivar reason: why the datagram was refused, for the log.
    """

    def __init__(self, callbackId: str, reason: str) -> None:
        super().__init__(reason)
        self.callbackId = callbackId
        self.reason = reason


class _Invalid(Exception):
    """
    Raised inside the parser; L{parseMessage} turns it into L{MessageError} with the id.
    """


def parseMessage(data: bytes, maxDuration: int) -> Request | Cancel:
    """
    Decode one datagram from an AS.

    @param data: the datagram's bytes.
    @param maxDuration: the largest C{duration} accepted (the server's C{max_duration}).
    @return: a L{Request} or a L{Cancel}.
    @raise MessageError: for anything else; its C{callbackId} is the id if one valid id
        could be read, so the AS learns which of its commands failed.
    """
    try:
        return _parse(data, maxDuration)
    except _Invalid as e:
        raise MessageError(_readId(data), str(e)) from None


def formatAck(callbackId: str, ok: bool) -> bytes:
    """
    Encode C{ACK: id=<callbackId>;code=ok|fail;}.

    @param callbackId: the command's id, or C{""} when none could be read.
    @param ok: whether the command was accepted.
    @raise ValueError: if C{callbackId} could not have come from a valid command (it
        would break the message's framing).
    """
    if callbackId and not _ID.fullmatch(callbackId):
        raise ValueError(f"invalid callback id {callbackId!r}")
    return b"ACK: id=%s;code=%s;" % (
        callbackId.encode("ascii"),
        b"ok" if ok else b"fail",
    )


def formatResponse(
    callbackId: str,
    realDuration: int,
    details: Sequence[tuple[str, str]] = (),
) -> bytes:
    """
    Encode C{RESPONSE: id=<callbackId>;real_duration=<realDuration>;}, then
    the C{details} if any (a peer with C{response_details}).

    @param callbackId: the callback's id.
    @param realDuration: talk time in whole seconds (>= 0).
    @param details: C{(name, value)} for every name of L{RESPONSE_DETAILS},
        in that order; a value is lower-case letters, digits and C{_}, or
        empty.
    @raise ValueError: for an invalid id, a negative or non-integer
        duration, or details that are not the documented ones.
    """
    if not _ID.fullmatch(callbackId):
        raise ValueError(f"invalid callback id {callbackId!r}")
    if isinstance(realDuration, bool) or not isinstance(realDuration, int):
        raise ValueError(f"real_duration must be an int, not {realDuration!r}")
    if realDuration < 0:
        raise ValueError(f"real_duration must be >= 0, not {realDuration}")
    if details and tuple(name for name, _ in details) != RESPONSE_DETAILS:
        raise ValueError(f"details must be {RESPONSE_DETAILS}, not {details!r}")
    tail = ""
    for name, value in details:
        if not _DETAIL_VALUE.fullmatch(value):
            raise ValueError(f"invalid {name} {value!r}")
        tail += f"{name}={value};"
    return b"RESPONSE: id=%s;real_duration=%d;%s" % (
        callbackId.encode("ascii"),
        realDuration,
        tail.encode("ascii"),
    )


# -- the AS side: commands out, replies in


@dataclass(frozen=True)
class Ack:
    """C{ACK: id=..;code=ok|fail;}."""

    callbackId: str
    ok: bool


@dataclass(frozen=True)
class Response:
    """
    C{RESPONSE: id=..;real_duration=..;}.

    @ivar details: the C{response_details} parameters (L{RESPONSE_DETAILS})
        by name, empty when the server sent none; an absent moment or status
        is an empty string.
    """

    callbackId: str
    realDuration: int
    details: dict[str, str] = field(default_factory=dict, compare=False)


def formatRequest(
    callbackId: str,
    user1: str,
    user2: str,
    duration: int,
    annId1: str | None = None,
    annId2: str | None = None,
    annDigit2: str | None = None,
) -> bytes:
    """
    Encode a REQUEST in the form the IIF document gives.

    Only framing is checked here (no C{;}, C{=} or space in a value, a whole
    C{duration}); the server judges everything else and answers C{code=fail}.

    @raise ValueError: for a value that would break the datagram's framing.
    """
    if isinstance(duration, bool) or not isinstance(duration, int) or duration < 0:
        raise ValueError(f"duration must be an int >= 0, not {duration!r}")
    params = dict(id=callbackId, user1=user1, user2=user2, duration=str(duration))
    params.update(ann_id1=annId1, ann_id2=annId2, ann_digit2=annDigit2)
    text = "REQUEST: "
    for name, value in params.items():
        if value is None:
            continue
        if not _ID.fullmatch(value):
            raise ValueError(f"invalid {name} {value!r}")
        text += f"{name}={value};"
    return text.encode("ascii")


def formatCancel(callbackId: str) -> bytes:
    """
    Encode C{CANCEL: id=..;}.

    @raise ValueError: for an id that would break the datagram's framing.
    """
    if not _ID.fullmatch(callbackId):
        raise ValueError(f"invalid id {callbackId!r}")
    return b"CANCEL: id=%s;" % callbackId.encode("ascii")


def parseServerReply(data: bytes) -> Ack | Response:
    """
    Decode an ACK or a RESPONSE exactly as the server writes it (the AS side
    of the codec); a trailing C{ts=..;sig=..;} is allowed and not checked
    here (L{callback_tw.iif.signing.verify} checks it).

    @raise ValueError: for anything else.
    """
    for pattern in (_ACK, _RESPONSE):
        match = pattern.match(data)
        if match is not None:
            break
    else:
        raise ValueError("not an ACK or a RESPONSE")
    tail = data[match.end() :]
    if tail and _SIGNATURE.fullmatch(tail) is None:
        raise ValueError("unexpected bytes after the reply")
    callbackId = match.group(1).decode("ascii")
    if pattern is _ACK:
        return Ack(callbackId, match.group(2) == b"ok")
    details = {}
    for parameter in match.group(3).decode("ascii").split(";")[:-1]:
        name, _, value = parameter.partition("=")
        details[name] = value
    return Response(callbackId, int(match.group(2)), details)


def stripLineEnd(data: bytes) -> bytes:
    """
    Remove one trailing line end (CRLF, LF or CR), which many AS implementations send.
    """
    if data.endswith(b"\r\n"):
        return data[:-2]
    if data.endswith((b"\n", b"\r")):
        return data[:-1]
    return data


def _parse(data: bytes, maxDuration: int) -> Request | Cancel:
    if len(data) > MAX_DATAGRAM_SIZE:
        raise _Invalid(
            f"datagram of {len(data)} bytes exceeds {MAX_DATAGRAM_SIZE} bytes"
        )
    try:
        text = stripLineEnd(data).decode("ascii")
    except UnicodeDecodeError:
        raise _Invalid("datagram contains bytes that are not ASCII") from None
    if _CONTROL.search(text):
        raise _Invalid("datagram contains a control character")

    method, colon, rest = text.partition(":")
    if not colon:
        raise _Invalid("no ':' after the method")
    if method not in _METHODS:
        if method.upper() in _METHODS:
            raise _Invalid(f"method {method!r} must be uppercase")
        raise _Invalid(f"unknown method {method!r}")

    params, ignored = _parseParameters(rest.lstrip(" "))

    callbackId = params.pop("id", None)
    if callbackId is None:
        raise _Invalid("missing parameter 'id'")
    if not _ID.fullmatch(callbackId):
        raise _Invalid(
            "invalid id: 1-31 characters without ';', '=', spaces or control characters"
        )

    if method == "CANCEL":
        return Cancel(callbackId, ignored=ignored + tuple(params))
    return _request(callbackId, params, ignored, maxDuration)


def _request(
    callbackId: str,
    params: dict[str, str],
    ignored: tuple[str, ...],
    maxDuration: int,
) -> Request:
    """The REQUEST's own parameters, each checked against its rule."""
    for name in ("user1", "user2", "duration"):
        if name not in params:
            raise _Invalid(f"missing parameter {name!r}")
    for name in ("user1", "user2"):
        if not isSipUser(params[name]):
            raise _Invalid(
                f"invalid {name}: 1-31 characters from digits, letters and '+*#.-_'"
            )
    if not _DURATION.fullmatch(params["duration"]):
        raise _Invalid("invalid duration: not a decimal integer >= 0")
    duration = int(params["duration"])
    if duration > maxDuration:
        raise _Invalid(f"duration {duration} exceeds max_duration {maxDuration}")
    for name in ("ann_id1", "ann_id2"):
        if name in params and not _ANN_ID.fullmatch(params[name]):
            raise _Invalid(f"invalid {name}: not exactly 8 digits")
    if "ann_digit2" in params and not _ANN_DIGITS.fullmatch(params["ann_digit2"]):
        raise _Invalid("invalid ann_digit2: not 1-31 digits")

    return Request(
        callbackId=callbackId,
        user1=params["user1"],
        user2=params["user2"],
        duration=duration,
        annId1=params.get("ann_id1"),
        annId2=params.get("ann_id2"),
        annDigit2=params.get("ann_digit2"),
        ignored=ignored,
    )


_KNOWN = frozenset(
    ["id", "user1", "user2", "duration", "ann_id1", "ann_id2", "ann_digit2"]
)


def _parseParameters(text: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """
    Split C{name=value;name=value[;]} into a dict keyed by lowercase name.

    @return: the known parameters and the names (as sent) of the unknown ones.
    """
    if text.endswith(";"):
        text = text[:-1]
    params: dict[str, str] = {}
    ignored: list[str] = []
    seen: set[str] = set()
    if not text:
        return params, ()
    for part in text.split(";"):
        if not part:
            raise _Invalid("empty parameter")
        name, equals, value = part.partition("=")
        if not equals:
            raise _Invalid(f"parameter {part!r} has no '='")
        if not _NAME.fullmatch(name):
            raise _Invalid(f"invalid parameter name {name!r}")
        key = name.lower()
        if key in seen:
            raise _Invalid(f"repeated parameter {key!r}")
        seen.add(key)
        if key in _KNOWN:
            params[key] = value
        else:
            ignored.append(name)
    return params, tuple(ignored)


def _readId(data: bytes) -> str:
    """
    Find the id of an invalid datagram, leniently, so its ACK C{code=fail} can name it.

    Only an unambiguous (exactly one C{id} parameter) and valid id is returned; anything
    else gives C{""}, so we never echo bytes that could break the ACK's framing.
    """
    text = data.decode("latin-1")
    _, colon, rest = text.partition(":")
    if not colon:
        rest = text
    found = []
    for part in rest.split(";"):
        name, equals, value = part.partition("=")
        if equals and name.strip(" \t\r\n").lower() == "id":
            found.append(value.rstrip("\r\n"))
    if len(found) == 1 and _ID.fullmatch(found[0]):
        return found[0]
    return ""
