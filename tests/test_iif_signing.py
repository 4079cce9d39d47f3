"""
Tests for L{callback_tw.iif.signing}: signed IIF datagrams and peer keys.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re

from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from callback_tw.iif.message import Cancel, Request, parseMessage
from callback_tw.iif.signing import (
    BadSignatureError,
    FutureTimestampError,
    MalformedTimestampError,
    SignatureError,
    StaleTimestampError,
    UnsignedError,
    loadKey,
    sign,
    verify,
)

KEY = b"0123456789abcdef-test-key"
NOW = 1_780_000_000
WINDOW = 30

_REQUEST = b"REQUEST: id=1234;user1=100;user2=101;duration=3600;"


def _signRaw(signed: bytes, key: bytes = KEY) -> bytes:
    """
    Sign C{signed} (everything before C{sig=}) by hand, as an AS would, without
    L{sign}'s normalisation; used to build datagrams with a correct signature but a
    bad C{ts}.
    """
    mac = hmac.new(key, signed, hashlib.sha256).hexdigest().encode("ascii")
    return signed + b"sig=" + mac + b";"


class SignTests(SynchronousTestCase):
    """
    L{sign} appends C{ts} and C{sig} as issue 9 specifies.
    """

    def test_format(self) -> None:
        """
        The datagram gets C{ts=<whole seconds>;sig=<64 lowercase hex>;} at its end,
        and C{sig} is the HMAC-SHA256 of every byte before C{sig=}.
        """
        signed = sign(_REQUEST, KEY, NOW + 0.9)
        match = re.fullmatch(
            re.escape(_REQUEST) + rb"ts=1780000000;sig=([0-9a-f]{64});", signed
        )
        self.assertIsNotNone(match)
        expected = hmac.new(
            KEY, _REQUEST + b"ts=1780000000;", hashlib.sha256
        ).hexdigest()
        self.assertEqual(match.group(1).decode("ascii"), expected)

    def test_addsMissingSemicolon(self) -> None:
        """
        A datagram without a final C{;} gets one before C{ts=}, so C{ts} stays a
        parameter of its own.
        """
        signed = sign(_REQUEST[:-1], KEY, NOW)
        self.assertTrue(signed.startswith(_REQUEST + b"ts=1780000000;sig="))

    def test_dropsLineEnd(self) -> None:
        """
        A trailing line end is removed, so C{sig} stays the last parameter.
        """
        for end in (b"\r\n", b"\n", b"\r"):
            self.assertEqual(sign(_REQUEST + end, KEY, NOW), sign(_REQUEST, KEY, NOW))

    def test_everyMessageKind(self) -> None:
        """
        REQUEST, CANCEL, ACK and RESPONSE all sign and verify back to themselves.
        """
        for datagram in (
            _REQUEST,
            b"CANCEL: id=1234;",
            b"ACK: id=1234;code=ok;",
            b"ACK: id=;code=fail;",
            b"RESPONSE: id=1234;real_duration=180;",
        ):
            self.assertEqual(verify(sign(datagram, KEY, NOW), KEY, NOW, 0), datagram)

    def test_negativeTime(self) -> None:
        """
        A clock before 1970 is a bug of the caller, not a C{ts} to send.
        """
        self.assertRaises(ValueError, sign, _REQUEST, KEY, -1)

    def test_keyMatters(self) -> None:
        """
        Two keys give two signatures for the same datagram and time.
        """
        self.assertNotEqual(sign(_REQUEST, KEY, NOW), sign(_REQUEST, KEY + b"x", NOW))


class VerifyTests(SynchronousTestCase):
    """
    L{verify} accepts exactly the datagrams signed with the key within the window,
    and says why it refuses the others.
    """

    def assertRefused(self, error: type[SignatureError], datagram: bytes) -> str:
        """
        Assert that L{verify} raises C{error} for C{datagram} at L{NOW}.

        @return: the error's reason.
        """
        e = self.assertRaises(error, verify, datagram, KEY, NOW, WINDOW)
        self.assertIsInstance(e, SignatureError)
        return e.reason

    def test_valid(self) -> None:
        """
        A signed REQUEST verifies to the unsigned command, which the codec parses.
        """
        command = verify(sign(_REQUEST, KEY, NOW), KEY, NOW, WINDOW)
        self.assertEqual(command, _REQUEST)
        self.assertEqual(
            parseMessage(command, 86400), Request("1234", "100", "101", 3600)
        )

    def test_validCancel(self) -> None:
        """
        A signed CANCEL verifies and parses as a L{Cancel}.
        """
        command = verify(sign(b"CANCEL: id=77", KEY, NOW), KEY, NOW, WINDOW)
        self.assertEqual(parseMessage(command, 86400), Cancel("77"))

    def test_trailingLineEnd(self) -> None:
        """
        One line end after the final C{;} is accepted, as the codec accepts it.
        """
        for end in (b"\r\n", b"\n", b"\r"):
            signed = sign(_REQUEST, KEY, NOW) + end
            self.assertEqual(verify(signed, KEY, NOW, WINDOW), _REQUEST)

    def test_windowEdges(self) -> None:
        """
        C{ts} exactly C{window} seconds behind or ahead is accepted; one more second
        is refused as stale or future, with the skew.
        """
        self.assertEqual(
            verify(sign(_REQUEST, KEY, NOW - WINDOW), KEY, NOW, WINDOW), _REQUEST
        )
        self.assertEqual(
            verify(sign(_REQUEST, KEY, NOW + WINDOW), KEY, NOW, WINDOW), _REQUEST
        )
        stale = self.assertRaises(
            StaleTimestampError,
            verify,
            sign(_REQUEST, KEY, NOW - WINDOW - 1),
            KEY,
            NOW,
            WINDOW,
        )
        self.assertEqual((stale.kind, stale.skew), ("stale-ts", WINDOW + 1))
        future = self.assertRaises(
            FutureTimestampError,
            verify,
            sign(_REQUEST, KEY, NOW + WINDOW + 1),
            KEY,
            NOW,
            WINDOW,
        )
        self.assertEqual((future.kind, future.skew), ("future-ts", -WINDOW - 1))

    def test_stale(self) -> None:
        """
        A datagram signed an hour ago (a replay) is refused as stale.
        """
        reason = self.assertRefused(
            StaleTimestampError, sign(_REQUEST, KEY, NOW - 3600)
        )
        self.assertEqual(reason, "ts is stale: 3600 s old, window 30 s")

    def test_future(self) -> None:
        """
        A datagram from a clock an hour ahead is refused as from the future.
        """
        reason = self.assertRefused(
            FutureTimestampError, sign(_REQUEST, KEY, NOW + 3600)
        )
        self.assertEqual(reason, "ts is in the future: 3600 s ahead, window 30 s")

    def test_unsigned(self) -> None:
        """
        A datagram without C{sig} is refused as unsigned, with or without C{ts}.
        """
        self.assertRefused(UnsignedError, _REQUEST)
        self.assertRefused(UnsignedError, _REQUEST + b"ts=1780000000;")
        self.assertRefused(UnsignedError, b"")
        self.assertEqual(UnsignedError.kind, "unsigned")

    def test_upperCaseSigNameIsUnsigned(self) -> None:
        """
        The parameter name is C{sig} in lowercase; C{SIG=} is not a signature.
        """
        signed = sign(_REQUEST, KEY, NOW).replace(b";sig=", b";SIG=")
        self.assertRefused(UnsignedError, signed)

    def test_wrongKey(self) -> None:
        """
        A datagram signed with another key is refused as badly signed.
        """
        reason = self.assertRefused(
            BadSignatureError, sign(_REQUEST, b"another-key-of-16-bytes", NOW)
        )
        self.assertEqual(reason, "sig does not match the datagram and the key")

    def test_tamperedCommand(self) -> None:
        """
        Changing a user in a signed REQUEST breaks the signature.
        """
        signed = sign(_REQUEST, KEY, NOW).replace(b"user2=101", b"user2=109")
        self.assertRefused(BadSignatureError, signed)

    def test_tamperedTimestamp(self) -> None:
        """
        Moving C{ts} forward to replay an old datagram breaks the signature.
        """
        signed = sign(_REQUEST, KEY, NOW - 3600)
        self.assertRefused(
            BadSignatureError,
            signed.replace(b"ts=%d;" % (NOW - 3600,), b"ts=%d;" % (NOW,)),
        )

    def test_appendedParameter(self) -> None:
        """
        A parameter appended after C{sig} is refused: C{sig} must be last, so no
        unsigned bytes can ride along.
        """
        reason = self.assertRefused(
            BadSignatureError, sign(_REQUEST, KEY, NOW) + b"user2=0900;"
        )
        self.assertEqual(
            reason, "sig must be 64 lowercase hex digits and the last parameter"
        )

    def test_malformedSig(self) -> None:
        """
        C{sig} values that are not exactly 64 lowercase hex digits and a final
        C{;} are refused before any HMAC is computed.
        """
        good = sign(_REQUEST, KEY, NOW)
        head, _, mac = good.rpartition(b"sig=")
        for bad in (
            mac.upper(),
            mac[:-2] + b";",
            mac[:-1] + b"0;",
            mac[:-1],
            b";",
            mac[:-1] + b" ;",
        ):
            self.assertRefused(BadSignatureError, head + b"sig=" + bad)

    def test_missingTimestamp(self) -> None:
        """
        A correctly signed datagram with no C{ts} before C{sig} is malformed.
        """
        reason = self.assertRefused(MalformedTimestampError, _signRaw(_REQUEST))
        self.assertEqual(reason, "no ts parameter just before sig")

    def test_malformedTimestamp(self) -> None:
        """
        A correctly signed datagram whose C{ts} is not 1-12 digits is malformed.
        """
        for ts in (b"", b"-5", b"+1780000000", b"1780000000.5", b"0x10", b"1" * 13):
            reason = self.assertRefused(
                MalformedTimestampError, _signRaw(_REQUEST + b"ts=" + ts + b";")
            )
            self.assertEqual(reason, "ts is not whole Unix seconds (1-12 digits)")

    def test_timestampNotLast(self) -> None:
        """
        C{ts} must come right before C{sig}, or the datagram is malformed.
        """
        self.assertRefused(
            MalformedTimestampError,
            _signRaw(b"REQUEST: ts=1780000000;id=1;user1=1;user2=2;duration=1;"),
        )

    def test_kinds(self) -> None:
        """
        Every refusal has a short fixed name for counters and log lines.
        """
        self.assertEqual(
            [
                e.kind
                for e in (
                    UnsignedError,
                    BadSignatureError,
                    MalformedTimestampError,
                    StaleTimestampError,
                    FutureTimestampError,
                )
            ],
            ["unsigned", "bad-signature", "malformed-ts", "stale-ts", "future-ts"],
        )


class LoadKeyTests(SynchronousTestCase):
    """
    L{loadKey} reads a key inline or from a file and refuses short keys.
    """

    def test_inline(self) -> None:
        """
        A value without C{file:} is the secret itself, as UTF-8 bytes.
        """
        self.assertEqual(loadKey("s3cret-s3cret-s3cret", None), b"s3cret-s3cret-s3cret")
        self.assertEqual(
            loadKey("schlüssel-16-byte", None), "schlüssel-16-byte".encode()
        )

    def test_inlineTooShort(self) -> None:
        """
        An inline key under 16 bytes is refused, and the message does not show it.
        """
        e = self.assertRaises(ValueError, loadKey, "short-secret", None)
        self.assertEqual(str(e), "inline key: 12 bytes, at least 16 are needed")
        self.assertNotIn("short-secret", str(e))

    def test_exactly16(self) -> None:
        """
        16 bytes is long enough.
        """
        self.assertEqual(loadKey("x" * 16, None), b"x" * 16)

    def test_fileAbsolute(self) -> None:
        """
        C{file:/abs/path} reads the file; one trailing line end is removed, so a key
        written with C{echo} works, and the other bytes are kept as they are.
        """
        path = FilePath(self.mktemp())
        path.setContent(b" binary\x00key \xff\xfe 0123456789\n")
        self.assertEqual(
            loadKey("file:" + path.path, "/nonexistent"),
            b" binary\x00key \xff\xfe 0123456789",
        )
        path.setContent(b"0123456789abcdef\r\n")
        self.assertEqual(loadKey("file:" + path.path, None), b"0123456789abcdef")

    def test_fileRelative(self) -> None:
        """
        A relative path is taken relative to C{baseDir} (the config's directory).
        """
        base = FilePath(self.mktemp())
        base.makedirs()
        base.child("as1.key").setContent(b"0123456789abcdef0123")
        self.assertEqual(loadKey("file:as1.key", base.path), b"0123456789abcdef0123")

    def test_fileTooShort(self) -> None:
        """
        A key file under 16 bytes (after its line end) is refused, naming the file.
        """
        path = FilePath(self.mktemp())
        path.setContent(b"0123456789abcde\n")
        e = self.assertRaises(ValueError, loadKey, "file:" + path.path, None)
        self.assertEqual(
            str(e), f"key file {path.path}: 15 bytes, at least 16 are needed"
        )

    def test_fileEmpty(self) -> None:
        """
        An empty key file is refused.
        """
        path = FilePath(self.mktemp())
        path.setContent(b"")
        e = self.assertRaises(ValueError, loadKey, "file:" + path.path, None)
        self.assertEqual(
            str(e), f"key file {path.path}: 0 bytes, at least 16 are needed"
        )

    def test_fileMissing(self) -> None:
        """
        A missing key file is a one-line error naming the file and the cause.
        """
        path = os.path.abspath(self.mktemp())
        e = self.assertRaises(ValueError, loadKey, "file:" + path, None)
        self.assertEqual(str(e), f"key file {path}: No such file or directory")

    def test_fileIsDirectory(self) -> None:
        """
        A directory is not a key file.
        """
        path = FilePath(self.mktemp())
        path.makedirs()
        e = self.assertRaises(ValueError, loadKey, "file:" + path.path, None)
        self.assertEqual(str(e), f"key file {path.path}: Is a directory")

    def test_fileTooLong(self) -> None:
        """
        A file over 4 KiB is refused rather than read whole: it is not a key.
        """
        path = FilePath(self.mktemp())
        path.setContent(b"k" * 5000)
        e = self.assertRaises(ValueError, loadKey, "file:" + path.path, None)
        self.assertEqual(
            str(e), f"key file {path.path}: longer than 4096 bytes, not a key file"
        )

    def test_fileNoPath(self) -> None:
        """
        C{file:} alone is an error, not an inline key of five bytes.
        """
        e = self.assertRaises(ValueError, loadKey, "file:", None)
        self.assertEqual(str(e), "key file: no path after 'file:'")

    def test_fileKeySigns(self) -> None:
        """
        A key read from a file signs datagrams that verify with the same bytes inline.
        """
        path = FilePath(self.mktemp())
        path.setContent(KEY + b"\n")
        key = loadKey("file:" + path.path, None)
        self.assertEqual(verify(sign(_REQUEST, key, NOW), KEY, NOW, 0), _REQUEST)


_DOC = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "signing.md")


def _block(marker: str) -> str:
    """
    The fenced block that follows C{<!-- marker ...-->} in docs/signing.md.
    """
    with open(_DOC, encoding="utf-8") as f:
        text = f.read()
    match = re.search(
        r"<!-- " + re.escape(marker) + r"[:\s][^>]*-->\n```[a-z]*\n(.*?)\n```",
        text,
        re.S,
    )
    if match is None:
        raise AssertionError(f"no block marked {marker!r} in {_DOC}")
    return match.group(1)


def _fields(marker: str) -> dict[str, bytes]:
    """
    The C{name   value} lines of a worked-example block, values as bytes.
    """
    fields = {}
    for line in _block(marker).splitlines():
        name, value = re.fullmatch(r"(\S+)\s{2,}(.*)", line).groups()
        fields[name] = value.encode("ascii")
    return fields


class DocumentationTests(SynchronousTestCase):
    """
    The worked example and the AS-side code in docs/signing.md are what the code
    does, so the document cannot drift from it.
    """

    def setUp(self) -> None:
        self.example = _fields("signing-example")
        self.key = self.example["key"]
        self.now = int(self.example["ts"])

    def test_exampleSigns(self) -> None:
        """
        Signing the example's command with its key at its time gives the bytes the
        document shows: the HMAC input, the signature and the datagram sent.
        """
        e = self.example
        sent = sign(e["command"], self.key, self.now)
        self.assertEqual(sent, e["sent"])
        self.assertEqual(sent, e["hmac-of"] + b"sig=" + e["sig"] + b";")
        self.assertEqual(
            hmac.new(self.key, e["hmac-of"], hashlib.sha256).hexdigest().encode(),
            e["sig"],
        )

    def test_exampleVerifies(self) -> None:
        """
        The example datagram verifies within the window and yields the command.
        """
        e = self.example
        self.assertEqual(verify(e["sent"], self.key, self.now + 29, 30), e["command"])
        self.assertRaises(
            StaleTimestampError, verify, e["sent"], self.key, self.now + 31, 30
        )

    def test_repliesVerify(self) -> None:
        """
        The example's signed ACK and RESPONSE verify with the example key.
        """
        replies = _fields("signing-example-replies")
        self.assertEqual(
            verify(replies["ack"], self.key, self.now, 30), b"ACK: id=1234;code=ok;"
        )
        self.assertEqual(
            verify(replies["response"], self.key, self.now + 242, 30),
            b"RESPONSE: id=1234;real_duration=180;",
        )

    def test_asCode(self) -> None:
        """
        The document's Python for the AS signs like the server and verifies the
        server's replies, and refuses a tampered or stale reply.
        """
        namespace: dict[str, object] = {}
        exec(_block("signing-as-code"), namespace)
        signCommand = namespace["sign_command"]
        verifyReply = namespace["verify_reply"]
        e = self.example
        self.assertEqual(signCommand(e["command"], self.key, now=self.now), e["sent"])
        self.assertEqual(
            signCommand(e["command"][:-1], self.key, now=self.now), e["sent"]
        )
        for command in (
            b"CANCEL: id=1234",
            b"REQUEST: id=9;user1=1;user2=2;duration=0",
        ):
            self.assertEqual(
                verify(
                    signCommand(command, self.key, now=self.now), self.key, self.now, 0
                ),
                command + b";",
            )
        replies = _fields("signing-example-replies")
        self.assertEqual(
            verifyReply(replies["ack"] + b"\r\n", self.key, now=self.now),
            b"ACK: id=1234;code=ok;",
        )
        reply = sign(b"RESPONSE: id=7;real_duration=3;", self.key, self.now)
        self.assertEqual(
            verifyReply(reply, self.key, now=self.now),
            b"RESPONSE: id=7;real_duration=3;",
        )
        for bad, now in (
            (reply.replace(b"=3;", b"=4;"), self.now),
            (reply, self.now + 31),
            (b"RESPONSE: id=7;real_duration=3;", self.now),
        ):
            self.assertRaises(ValueError, verifyReply, bad, self.key, now=now)
