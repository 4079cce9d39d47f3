# -*- test-case-name: tests.test_iif_signing -*-
"""
Signed IIF datagrams: HMAC-SHA256 over the datagram, with a timestamp.

UDP source addresses are not authentication: anyone who can send a packet with an
AS's address can make us dial. A peer with a key therefore signs each datagram by
appending two parameters at its end::

    REQUEST: id=1234;user1=100;user2=101;duration=3600;ts=1780000000;sig=<64 hex>;

C{sig} is the lowercase hex HMAC-SHA256, keyed with the peer's key, of the exact bytes
before C{sig=} (so it covers C{ts=...;}). C{ts} is the sender's clock in whole Unix
seconds; the receiver accepts it within C{window} seconds of its own clock, which bounds
how long a captured datagram can be replayed (a replay inside the window is the same
id, which the protocol answers idempotently). The same scheme signs our ACK and
RESPONSE, so the AS can check them. docs/signing.md has a worked example.

This module is pure like L{callback_tw.iif.message}: bytes and a clock value in, bytes
or a L{SignatureError} out. The signature is checked before anything of the datagram
is interpreted (C{ts} included), so unauthenticated bytes never steer a decision
beyond "unsigned" or "bad signature".
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re

from callback_tw.iif.message import stripLineEnd

__all__ = [
    "MIN_KEY_SIZE",
    "BadSignatureError",
    "FutureTimestampError",
    "MalformedTimestampError",
    "SignatureError",
    "StaleTimestampError",
    "TimestampWindowError",
    "UnsignedError",
    "loadKey",
    "sign",
    "verify",
]

#: Shortest key accepted, in bytes.
MIN_KEY_SIZE = 16

_SIG_PREFIX = b";sig="
_SIG_HEX = re.compile(rb"[0-9a-f]{64};")
# The timestamp parameter just before sig=; its value is checked separately so a
# malformed value gets its own error.
_TS_PARAM = re.compile(rb";ts=([^;]*);\Z")
_TS_VALUE = re.compile(rb"[0-9]{1,12}")


class SignatureError(ValueError):
    """
    A datagram from a keyed peer that must not be acted upon.

    @cvar kind: a short fixed name for counting and logging (C{"unsigned"}, ...).
    @ivar reason: why it was refused, for the log; it never quotes the datagram.
    """

    kind = "signature"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnsignedError(SignatureError):
    """
    The datagram carries no C{sig=} parameter at its end.
    """

    kind = "unsigned"


class BadSignatureError(SignatureError):
    """
    The C{sig} value is malformed or is not the HMAC of the datagram under the key.
    """

    kind = "bad-signature"


class MalformedTimestampError(SignatureError):
    """
    The signature is right but C{ts} is missing or is not whole Unix seconds.
    """

    kind = "malformed-ts"


class TimestampWindowError(SignatureError):
    """
    The signature is right but C{ts} is too far from our clock.

    @ivar skew: our clock minus C{ts}, in seconds: positive when the datagram is
        stale, negative when it comes from the future.
    """

    def __init__(self, reason: str, skew: float) -> None:
        super().__init__(reason)
        self.skew = skew


class StaleTimestampError(TimestampWindowError):
    """
    C{ts} is more than the window behind our clock: a late or replayed datagram.
    """

    kind = "stale-ts"


class FutureTimestampError(TimestampWindowError):
    """
    C{ts} is more than the window ahead of our clock: a sender's clock is wrong.
    """

    kind = "future-ts"


def _mac(data: bytes, key: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).hexdigest().encode("ascii")


def sign(datagram: bytes, key: bytes, now: float) -> bytes:
    """
    Append C{ts=<now>;sig=<hex>;} to an IIF datagram (command or reply).

    @param datagram: the datagram as it would be sent unsigned; one trailing line end
        is removed and a missing final C{;} is added, so the signature parameters are
        always the last ones.
    @param key: the peer's key.
    @param now: the current Unix time; it is sent in whole seconds.
    @return: the signed datagram.
    @raise ValueError: for a negative C{now}, which no receiver would accept.
    """
    if now < 0:
        raise ValueError(f"now must be >= 0, not {now}")
    body = stripLineEnd(datagram)
    if not body.endswith(b";"):
        body += b";"
    signed = body + b"ts=%d;" % (int(now),)
    return signed + b"sig=" + _mac(signed, key) + b";"


def verify(datagram: bytes, key: bytes, now: float, window: float) -> bytes:
    """
    Check a signed datagram and return it without its C{ts} and C{sig} parameters.

    @param datagram: the datagram as received (one trailing line end is allowed).
    @param key: the peer's key.
    @param now: our current Unix time.
    @param window: the largest accepted C{|now - ts|}, in seconds.
    @return: the datagram up to and including the C{;} before C{ts=}, which is what
        the IIF codec then parses.
    @raise UnsignedError: no C{;sig=} parameter.
    @raise BadSignatureError: C{sig} is not 64 lowercase hex digits followed by the
        final C{;}, or it does not match.
    @raise MalformedTimestampError: the signed bytes do not end with C{;ts=<digits>;}.
    @raise StaleTimestampError: C{ts} is more than C{window} seconds before C{now}.
    @raise FutureTimestampError: C{ts} is more than C{window} seconds after C{now}.
    """
    body = stripLineEnd(datagram)
    head, found, tail = body.rpartition(_SIG_PREFIX)
    if not found:
        raise UnsignedError("no sig parameter at the end of the datagram")
    if not _SIG_HEX.fullmatch(tail):
        raise BadSignatureError(
            "sig must be 64 lowercase hex digits and the last parameter"
        )
    signed = head + b";"
    if not hmac.compare_digest(_mac(signed, key), tail[:-1]):
        raise BadSignatureError("sig does not match the datagram and the key")
    match = _TS_PARAM.search(signed)
    if match is None:
        raise MalformedTimestampError("no ts parameter just before sig")
    if not _TS_VALUE.fullmatch(match.group(1)):
        raise MalformedTimestampError("ts is not whole Unix seconds (1-12 digits)")
    skew = now - int(match.group(1))
    if skew > window:
        raise StaleTimestampError(
            f"ts is stale: {skew:.0f} s old, window {window:g} s", skew
        )
    if -skew > window:
        raise FutureTimestampError(
            f"ts is in the future: {-skew:.0f} s ahead, window {window:g} s", skew
        )
    return signed[: match.start() + 1]


def loadKey(spec: str, baseDir: str | os.PathLike[str] | None) -> bytes:
    """
    Read a peer's key from its configuration value.

    @param spec: C{file:<path>} to read the key from a file (one trailing line end is
        removed, so C{echo secret > as1.key} works), or else the secret itself, used
        as its UTF-8 bytes.
    @param baseDir: the directory a relative C{file:} path is relative to (the
        configuration file's directory), or L{None} for the working directory.
    @return: the key's bytes, at least L{MIN_KEY_SIZE} long.
    @raise ValueError: with a one-line message that never contains the secret.
    """
    if spec.startswith("file:"):
        path = spec[len("file:") :]
        if not path:
            raise ValueError("key file: no path after 'file:'")
        if baseDir is not None:
            path = os.path.join(baseDir, path)
        try:
            with open(path, "rb") as f:
                key = stripLineEnd(f.read(4096 + 1))
        except OSError as e:
            raise ValueError(f"key file {path}: {e.strerror or e}") from None
        where = f"key file {path}"
        if len(key) > 4096:
            raise ValueError(f"{where}: longer than 4096 bytes, not a key file")
    else:
        key = spec.encode("utf-8")
        where = "inline key"
    if len(key) < MIN_KEY_SIZE:
        raise ValueError(
            f"{where}: {len(key)} bytes, at least {MIN_KEY_SIZE} are needed"
        )
    return key
