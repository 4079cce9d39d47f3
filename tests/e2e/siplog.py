# -*- test-case-name: tests.e2e.test_siplog -*-
"""
SIP messages as SIPp logged them: the parser of SIPp's C{-trace_msg} message
file and the small queries the end-to-end tests ask of it.

The end-to-end tests check the SIP on the wire from the far end's point of
view (what the phone received and sent), so they read SIPp's own log rather
than the server's trace.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

# RFC 3261 7.3.3 compact header names.
_COMPACT = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
}


@dataclass(frozen=True)
class SipMessage:
    """
    One SIP message as SIPp logged it.

    @ivar direction: C{"received"} (the server sent it to the phone) or
        C{"sent"} (the phone sent it to the server): SIPp's point of view.
    @ivar firstLine: the request line or status line.
    @ivar methodOrStatus: the request's method (C{"INVITE"}) or the
        response's status code as a string (C{"200"}).
    @ivar headers: lower-case full header names (compact forms expanded) to
        the list of their values, in order.
    @ivar body: the body, decoded as text.
    @ivar time: when SIPp logged it, seconds since the epoch.
    """

    direction: str
    firstLine: str
    methodOrStatus: str
    headers: Mapping[str, list[str]] = field(repr=False)
    body: str = field(repr=False)
    time: float

    @property
    def isRequest(self) -> bool:
        return not self.firstLine.startswith("SIP/2.0")

    @property
    def method(self) -> str | None:
        """
        The request method, or C{None} for a response.
        """
        return self.methodOrStatus if self.isRequest else None

    @property
    def status(self) -> int | None:
        """
        The status code, or C{None} for a request.
        """
        return None if self.isRequest else int(self.methodOrStatus)

    def header(self, name: str) -> str | None:
        """
        The first value of header C{name} (any case), or C{None}.
        """
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def callId(self) -> str:
        return self.header("call-id") or ""

    @property
    def cseqMethod(self) -> str:
        """
        The method in CSeq: for a response, the method it answers.
        """
        parts = (self.header("cseq") or "").split()
        return parts[1].upper() if len(parts) > 1 else ""

    @property
    def requestUser(self) -> str | None:
        """
        The user part of the Request-URI (C{answer1} in
        C{INVITE sip:answer1@127.0.0.1:5070 SIP/2.0}), or C{None}.
        """
        if not self.isRequest:
            return None
        match = re.match(r"\S+\s+sips?:([^@;>\s]+)@", self.firstLine)
        return match.group(1) if match else None

    def sdpLines(self, kind: str) -> list[str]:
        """
        The values of the SDP lines of type C{kind} (C{"m"}, C{"c"}, C{"o"}...).
        """
        prefix = kind + "="
        return [
            line[len(prefix) :].strip()
            for line in self.body.splitlines()
            if line.startswith(prefix)
        ]

    def mediaAddress(self) -> tuple[str, int] | None:
        """
        Where this SDP wants its audio: (c= address, audio m= port), or C{None}
        without an SDP audio stream.
        """
        connections = self.sdpLines("c")
        audio = [m for m in self.sdpLines("m") if m.startswith("audio ")]
        if not connections or not audio:
            return None
        return connections[0].split()[-1], int(audio[0].split()[1])

    def payloadTypes(self) -> list[int]:
        """
        The payload types of the first audio m= line, in order.
        """
        for m in self.sdpLines("m"):
            if m.startswith("audio "):
                return [int(pt) for pt in m.split()[3:]]
        return []

    def describe(self) -> str:
        """
        One line for an assertion message: time, direction and first line.
        """
        return f"{self.time:.3f} {self.direction:8} {self.firstLine} [{self.callId}]"


def parseSipMessage(
    text: str | bytes, direction: str = "received", when: float = 0.0
) -> SipMessage:
    """
    Parse one SIP message (headers, blank line, body).  Folded header lines
    are joined; a header line with commas is kept as one value.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text.lstrip("\r\n")
    head, _, body = _splitHead(text)
    lines = head.splitlines()
    firstLine = lines[0].strip() if lines else ""
    headers: dict[str, list[str]] = {}
    last: str | None = None
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and last is not None:
            headers[last][-1] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        if not colon:
            continue
        key = name.strip().lower()
        key = _COMPACT.get(key, key)
        headers.setdefault(key, []).append(value.strip())
        last = key
    length = headers.get("content-length")
    if length and length[0].strip().isdigit():
        raw = body.encode("utf-8", "replace")[: int(length[0])]
        body = raw.decode("utf-8", "replace")
    if firstLine.startswith("SIP/2.0"):
        parts = firstLine.split()
        methodOrStatus = parts[1] if len(parts) > 1 else ""
    else:
        methodOrStatus = firstLine.split(" ", 1)[0]
    return SipMessage(direction, firstLine, methodOrStatus, headers, body, when)


def _splitHead(text: str) -> tuple[str, str, str]:
    match = re.search(r"\r?\n\r?\n", text)
    if match is None:
        return text, "", ""
    return text[: match.start()], match.group(0), text[match.end() :]


# One entry of SIPp's -trace_msg file:
#   ----------------------------------------------- 2026-11-27 04:00:36.897641
#   UDP message received [515] bytes :
#   <blank>
#   <the message>
_ENTRY = re.compile(
    r"^-{20,} (\d{4}-\d\d-\d\d[ \t]\d\d:\d\d:\d\d\.\d+)[^\n]*\n"
    r"(?:UDP|TCP|TLS|SCTP) message (received \[\d+\] bytes :|sent \(\d+ bytes\):)\n",
    re.M,
)
# SIPp logs a message it did not expect a second time, in the same entry.
_UNEXPECTED = re.compile(
    r"\n(?:Unexpected|Retransmission of) [A-Z]+ message received:\n", re.I
)


def parseMessageLog(text: str) -> list[SipMessage]:
    """
    Parse SIPp's C{-trace_msg} message file into L{SipMessage}s, in log order.

    Entries other than "message received"/"message sent" are skipped; a
    message that SIPp also logged as unexpected is returned once.
    """
    messages = []
    entries = list(_ENTRY.finditer(text))
    for index, entry in enumerate(entries):
        end = entries[index + 1].start() if index + 1 < len(entries) else len(text)
        chunk = text[entry.end() : end]
        chunk = re.split(r"\n-{20,} \d{4}-", chunk, maxsplit=1)[0]
        chunk = _UNEXPECTED.split(chunk, maxsplit=1)[0]
        stamp = entry.group(1).replace("\t", " ")
        when = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()
        direction = "received" if entry.group(2).startswith("received") else "sent"
        message = parseSipMessage(chunk, direction, when)
        if message.firstLine:
            messages.append(message)
    return messages


def groupByCallId(messages: Iterable[SipMessage]) -> dict[str, list[SipMessage]]:
    """
    The messages of each Call-ID, in order of first appearance.
    """
    calls: dict[str, list[SipMessage]] = {}
    for message in messages:
        calls.setdefault(message.callId, []).append(message)
    return calls


def requestsOf(
    messages: Iterable[SipMessage], method: str, direction: str | None = None
) -> list[SipMessage]:
    """
    The requests with C{method}, optionally only in one C{direction}.
    """
    return [
        m
        for m in messages
        if m.isRequest
        and m.method == method
        and (direction is None or m.direction == direction)
    ]


def responsesOf(
    messages: Iterable[SipMessage],
    cseqMethod: str,
    status: int | None = None,
    direction: str | None = None,
) -> list[SipMessage]:
    """
    The responses to C{cseqMethod} requests, optionally with one C{status}
    and in one C{direction}.
    """
    return [
        m
        for m in messages
        if not m.isRequest
        and m.cseqMethod == cseqMethod
        and (status is None or m.status == status)
        and (direction is None or m.direction == direction)
    ]


def distinct(messages: Iterable[SipMessage]) -> list[SipMessage]:
    """
    The messages without retransmissions: a repeat of an earlier message
    with the same direction, first line, Call-ID, CSeq and Via is dropped.
    """
    seen = set()
    result = []
    for m in messages:
        key = (m.direction, m.firstLine, m.callId, m.header("cseq"), m.header("via"))
        if key not in seen:
            seen.add(key)
            result.append(m)
    return result


def describeMessages(messages: Iterable[SipMessage]) -> str:
    return "\n".join(m.describe() for m in messages)
