"""
Property-based tests (Hypothesis) for the IIF codec and the datagram signatures.

The table tests in L{tests.test_iif_message} pin the format's rules; these check that
no input outside those tables can make the codec misbehave: whatever an attacker
sends gets a valid command or a well-formed C{code=fail}, never an exception that
would reach the reactor, and no single changed byte survives a signature.
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from callback_tw.iif.message import (
    Cancel,
    MessageError,
    Request,
    formatAck,
    formatResponse,
    parseMessage,
)
from callback_tw.iif.signing import SignatureError, sign, verify

MAX_DURATION = 86400

# No example database: the suite must not write files into the worktree, and the
# machine is shared, so the example counts stay moderate and deadlines are off.
_SETTINGS = settings(
    database=None,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow],
)

_ID_CHARS = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in ";=")
_USER_CHARS = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+*#.-_"

callbackIds = st.text(_ID_CHARS, min_size=1, max_size=31)
users = st.text(_USER_CHARS, min_size=1, max_size=31)

requests = st.builds(
    Request,
    callbackId=callbackIds,
    user1=users,
    user2=users,
    duration=st.integers(0, MAX_DURATION),
    annId1=st.none() | st.from_regex(r"[0-9]{8}", fullmatch=True),
    annId2=st.none() | st.from_regex(r"[0-9]{8}", fullmatch=True),
    annDigit2=st.none() | st.from_regex(r"[0-9]{1,31}", fullmatch=True),
)

# Random bytes mostly fail at the first check (non-ASCII), so three more generators
# reach deep into the parser: commands built from real methods, names and values
# (valid and not), real commands with one byte changed, and pieces of commands glued
# together in any order.
_NAMES = st.sampled_from(
    ["id", "ID", "Id", "user1", "USER2", "user2", "duration", "ann_id1", "ann_id2"]
    + ["ann_digit2", "x", "pad", "1bad", "", "user 1"]
)
_PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F))
_VALUES = st.one_of(
    callbackIds,
    users,
    st.integers(0, 10**6).map(str),
    st.from_regex(r"[0-9]{8}", fullmatch=True),
    st.text(_PRINTABLE, max_size=40),
    st.just(""),
)
_PARAMS = st.builds(
    lambda name, equals, value: name + equals + value,
    _NAMES,
    st.sampled_from(["=", "=", "=", "", "=="]),
    _VALUES,
)
structured = st.builds(
    lambda method, colon, params, trailing, end: (
        method + colon + ";".join(params) + (";" if trailing else "")
    ).encode("ascii")
    + end,
    st.sampled_from(["REQUEST", "CANCEL", "request", "ACK", "", "REQUEST "]),
    st.sampled_from([":", ": ", ":   ", "", " :"]),
    st.lists(_PARAMS, max_size=9),
    st.booleans(),
    st.sampled_from([b"", b"\r\n", b"\n", b"\r", b"\n\n", b"\x00"]),
)

_FRAGMENTS = [
    b"REQUEST:",
    b"CANCEL:",
    b" ",
    b";",
    b"=",
    b"id=",
    b"user1=",
    b"user2=",
    b"duration=",
    b"ann_id1=",
    b"x=",
    b"1234",
    b"00080002",
    b"86401",
    b"+49*#",
    b"\r\n",
    b"\xff",
    b"ts=1780000000;",
    b"sig=",
]
commandLike = st.lists(st.sampled_from(_FRAGMENTS), max_size=30).map(b"".join)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """
    A valid REQUEST or CANCEL with one byte replaced, inserted or deleted.
    """
    request = draw(requests)
    data = bytearray(
        draw(
            st.sampled_from(
                [
                    _formatRequest(request, [], [False]),
                    b"CANCEL: id=%s;" % (request.callbackId.encode("ascii"),),
                ]
            )
        )
    )
    index = draw(st.integers(0, len(data) - 1))
    action = draw(st.sampled_from(["replace", "insert", "delete"]))
    if action == "delete":
        del data[index]
    else:
        value = draw(st.integers(0, 255))
        if action == "insert":
            data.insert(index, value)
        else:
            data[index] = value
    return bytes(data)


_ACK_FAIL = re.compile(rb"ACK: id=[!-:<>-~]{0,31};code=fail;")


def _formatRequest(request: Request, order: list[int], upper: list[bool]) -> bytes:
    """
    Write C{request} as an AS might: parameters in any order, names in any case.
    """
    params = [
        ("id", request.callbackId),
        ("user1", request.user1),
        ("user2", request.user2),
        ("duration", str(request.duration)),
        ("ann_id1", request.annId1),
        ("ann_id2", request.annId2),
        ("ann_digit2", request.annDigit2),
    ]
    present = [(n, v) for n, v in params if v is not None]
    ordered = [present[i % len(present)] for i in order]
    # Keep each parameter once, in the drawn order, then any left out.
    seen: list[tuple[str, str]] = []
    for p in ordered + present:
        if p not in seen:
            seen.append(p)
    text = ";".join(
        f"{n.upper() if upper[i % len(upper)] else n}={v}"
        for i, (n, v) in enumerate(seen)
    )
    return f"REQUEST: {text};".encode("ascii")


datagrams = st.one_of(st.binary(max_size=1100), commandLike, structured, mutated())


class CodecPropertyTests(SynchronousTestCase):
    """
    Any datagram gets a valid command or a well-formed refusal from the codec.
    """

    @_SETTINGS
    @given(datagrams)
    def test_anyBytes(self, data: bytes) -> None:
        """
        L{parseMessage} returns a L{Request} or a L{Cancel}, or raises
        L{MessageError}; no other exception escapes.
        """
        try:
            message = parseMessage(data, MAX_DURATION)
        except MessageError:
            return
        self.assertIsInstance(message, (Request, Cancel))

    @_SETTINGS
    @given(datagrams)
    def test_refusalIsWellFormedAck(self, data: bytes) -> None:
        """
        For any refused datagram, C{formatAck(e.callbackId, False)} is a well-formed
        C{ACK ... code=fail}: it never raises and its id cannot break the framing.
        """
        try:
            parseMessage(data, MAX_DURATION)
        except MessageError as e:
            self.assertRegex(formatAck(e.callbackId, False), _ACK_FAIL)
            self.assertIsInstance(e.reason, str)

    @_SETTINGS
    @given(datagrams)
    def test_acceptedIdsAnswerable(self, data: bytes) -> None:
        """
        Every accepted command's id can be written in an ACK and a RESPONSE.
        """
        try:
            message = parseMessage(data, MAX_DURATION)
        except MessageError:
            return
        self.assertEqual(
            formatAck(message.callbackId, True),
            b"ACK: id=%s;code=ok;" % (message.callbackId.encode("ascii"),),
        )
        self.assertTrue(formatResponse(message.callbackId, 0).startswith(b"RESPONSE: "))

    @_SETTINGS
    @given(
        requests,
        st.lists(st.integers(0, 6), max_size=7),
        st.lists(st.booleans(), min_size=1, max_size=7),
        st.sampled_from([b"", b"\r\n", b"\n"]),
    )
    def test_requestRoundTrip(
        self, request: Request, order: list[int], upper: list[bool], end: bytes
    ) -> None:
        """
        A valid REQUEST, written with parameters in any order and names in any case,
        parses back to the same L{Request}.
        """
        data = _formatRequest(request, order, upper) + end
        self.assertEqual(parseMessage(data, MAX_DURATION), request)

    @_SETTINGS
    @given(callbackIds)
    def test_cancelRoundTrip(self, callbackId: str) -> None:
        """
        A CANCEL with any valid id parses back to that id.
        """
        data = b"CANCEL: id=%s;" % (callbackId.encode("ascii"),)
        self.assertEqual(parseMessage(data, MAX_DURATION), Cancel(callbackId))


keys = st.binary(min_size=16, max_size=64)
times = st.integers(0, 10**11)


def _unsigned(datagram: bytes) -> bytes:
    """
    What L{verify} returns for C{sign(datagram, ...)}: the datagram without one
    trailing line end and with a final C{;}.
    """
    for end in (b"\r\n", b"\n", b"\r"):
        if datagram.endswith(end):
            datagram = datagram[: -len(end)]
            break
    return datagram if datagram.endswith(b";") else datagram + b";"


class SignaturePropertyTests(SynchronousTestCase):
    """
    Signatures round-trip for any datagram and key, and break on any change.
    """

    @_SETTINGS
    @given(datagrams, keys, times)
    def test_roundTrip(self, datagram: bytes, key: bytes, now: int) -> None:
        """
        What L{sign} produces, L{verify} accepts with the same key at the same time,
        returning the datagram as signed.
        """
        self.assertEqual(
            verify(sign(datagram, key, now), key, now, 0), _unsigned(datagram)
        )

    @_SETTINGS
    @given(datagrams, keys, times, st.data())
    def test_anySingleByteChangeFails(
        self, datagram: bytes, key: bytes, now: int, data: st.DataObject
    ) -> None:
        """
        Replacing any one byte of a signed datagram by any other value makes it fail
        verification.
        """
        signed = bytearray(sign(datagram, key, now))
        index = data.draw(st.integers(0, len(signed) - 1), label="index")
        value = data.draw(st.integers(0, 255), label="value")
        assume(value != signed[index])
        signed[index] = value
        self.assertRaises(SignatureError, verify, bytes(signed), key, now, 10)

    @_SETTINGS
    @given(datagrams, keys, keys, times)
    def test_otherKeyFails(
        self, datagram: bytes, key: bytes, other: bytes, now: int
    ) -> None:
        """
        A datagram signed with one key fails with any other key.
        """
        assume(key != other)
        self.assertRaises(
            SignatureError, verify, sign(datagram, key, now), other, now, 10
        )

    @_SETTINGS
    @given(datagrams, keys, times, st.floats(-1e6, 1e6))
    def test_anyBytesVerify(
        self, datagram: bytes, key: bytes, now: int, offset: float
    ) -> None:
        """
        L{verify} of arbitrary bytes returns bytes or raises L{SignatureError},
        never another exception.
        """
        try:
            result = verify(datagram, key, now + offset, 30)
        except SignatureError:
            return
        self.assertIsInstance(result, bytes)
