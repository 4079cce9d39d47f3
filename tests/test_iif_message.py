"""
Tests for L{callback_tw.iif.message}: the IIF codec.

The two tables below are the specification of the wire format: every row becomes a
test method of its own (C{test_valid_<name>} / C{test_invalid_<name>}), so a failure
names the rule that broke.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from callback_tw.iif.message import (
    Cancel,
    MessageError,
    Request,
    formatAck,
    formatResponse,
    parseMessage,
)

MAX_DURATION = 86400

_BASE = b"REQUEST: id=1234;user1=100;user2=101;duration=3600;"
_BASIC = Request("1234", "100", "101", 3600)


def _padTo(size: int) -> bytes:
    """
    A valid REQUEST of exactly C{size} bytes, padded with an unknown parameter.
    """
    head = b"REQUEST: id=1234;user1=100;user2=101;duration=60;pad="
    return head + b"x" * (size - len(head) - 1) + b";"


# (name, datagram, expected message)
VALID = [
    ("specExample", _BASE, _BASIC),
    ("noTrailingSemicolon", _BASE[:-1], _BASIC),
    (
        "noSpaceAfterColon",
        b"REQUEST:id=1234;user1=100;user2=101;duration=3600;",
        _BASIC,
    ),
    (
        "manySpacesAfterColon",
        b"REQUEST:    id=1234;user1=100;user2=101;duration=3600",
        _BASIC,
    ),
    ("trailingCRLF", _BASE + b"\r\n", _BASIC),
    ("trailingLF", _BASE + b"\n", _BASIC),
    ("trailingCR", _BASE + b"\r", _BASIC),
    ("trailingCRLFNoSemicolon", _BASE[:-1] + b"\r\n", _BASIC),
    ("upperCaseNames", b"REQUEST: ID=1234;USER1=100;USER2=101;DURATION=3600;", _BASIC),
    ("mixedCaseNames", b"REQUEST: Id=1234;User1=100;uSer2=101;Duration=3600;", _BASIC),
    (
        "anyParameterOrder",
        b"REQUEST: duration=3600;user2=101;user1=100;id=1234",
        _BASIC,
    ),
    (
        "durationZero",
        b"REQUEST: id=1;user1=100;user2=101;duration=0;",
        Request("1", "100", "101", 0),
    ),
    (
        "durationEqualsMax",
        b"REQUEST: id=1;user1=100;user2=101;duration=86400;",
        Request("1", "100", "101", 86400),
    ),
    (
        "durationLeadingZeros",
        b"REQUEST: id=1;user1=100;user2=101;duration=0060;",
        Request("1", "100", "101", 60),
    ),
    (
        "announcements",
        b"REQUEST: id=1;user1=100;user2=101;duration=60;"
        b"ann_id1=00080002;ann_id2=12345678;ann_digit2=42;",
        Request(
            "1", "100", "101", 60, annId1="00080002", annId2="12345678", annDigit2="42"
        ),
    ),
    (
        "announcementNamesUpperCase",
        b"REQUEST: id=1;user1=100;user2=101;duration=60;ANN_ID1=00080002;Ann_Digit2=7",
        Request("1", "100", "101", 60, annId1="00080002", annDigit2="7"),
    ),
    (
        "annDigit2ThirtyOneDigits",
        b"REQUEST: id=1;user1=100;user2=101;duration=60;ann_digit2=" + b"9" * 31,
        Request("1", "100", "101", 60, annDigit2="9" * 31),
    ),
    (
        "userCharacterSet",
        b"REQUEST: id=1;user1=+49*30#1.2-3_x;user2=Alice;duration=60;",
        Request("1", "+49*30#1.2-3_x", "Alice", 60),
    ),
    (
        "valuesKeepTheirCase",
        b"REQUEST: id=AbC;user1=Bob;user2=aLiCe;duration=1",
        Request("AbC", "Bob", "aLiCe", 1),
    ),
    (
        "usersThirtyOneCharacters",
        b"REQUEST: id=1;user1=" + b"1" * 31 + b";user2=" + b"b" * 31 + b";duration=1",
        Request("1", "1" * 31, "b" * 31, 1),
    ),
    (
        "idThirtyOneCharacters",
        b"REQUEST: id=" + b"x" * 31 + b";user1=100;user2=101;duration=1",
        Request("x" * 31, "100", "101", 1),
    ),
    (
        "idWithPunctuation",
        b"REQUEST: id=a:b/c!~<>#;user1=100;user2=101;duration=1",
        Request("a:b/c!~<>#", "100", "101", 1),
    ),
    (
        "unknownParametersIgnored",
        b"REQUEST: id=1234;user1=100;user2=101;duration=3600;Foo=bar;x_new=1;",
        Request("1234", "100", "101", 3600, ignored=("Foo", "x_new")),
    ),
    (
        "unknownParameterEmptyValue",
        b"REQUEST: id=1234;user1=100;user2=101;duration=3600;foo=",
        Request("1234", "100", "101", 3600, ignored=("foo",)),
    ),
    (
        "exactly1024Bytes",
        _padTo(1024),
        Request("1234", "100", "101", 60, ignored=("pad",)),
    ),
    ("cancel", b"CANCEL: id=1234;", Cancel("1234")),
    ("cancelNoSemicolonNoSpace", b"CANCEL:id=1234", Cancel("1234")),
    ("cancelUpperCaseNameCRLF", b"CANCEL: ID=1234;\r\n", Cancel("1234")),
    (
        "cancelExtraParametersIgnored",
        b"CANCEL: id=1234;user1=100;why=x",
        Cancel("1234", ignored=("why", "user1")),
    ),
]


# (name, datagram, id expected in the error, word expected in the reason)
INVALID = [
    ("emptyDatagram", b"", "", "':'"),
    ("onlyLineEnd", b"\r\n", "", "':'"),
    ("noColon", b"REQUEST id=1;user1=100;user2=101;duration=1", "", "':'"),
    (
        "lowercaseMethod",
        b"request: id=1;user1=100;user2=101;duration=1",
        "1",
        "uppercase",
    ),
    (
        "mixedCaseMethod",
        b"Request: id=1;user1=100;user2=101;duration=1",
        "1",
        "uppercase",
    ),
    ("lowercaseCancel", b"cancel: id=1;", "1", "uppercase"),
    (
        "unknownMethod",
        b"INVITE: id=1;user1=100;user2=101;duration=1",
        "1",
        "unknown method",
    ),
    ("ackIsNotACommand", b"ACK: id=1;code=ok;", "1", "unknown method"),
    (
        "responseIsNotACommand",
        b"RESPONSE: id=1;real_duration=3;",
        "1",
        "unknown method",
    ),
    (
        "spaceBeforeColon",
        b"REQUEST : id=1;user1=100;user2=101;duration=1",
        "1",
        "unknown method",
    ),
    (
        "leadingSpace",
        b" REQUEST: id=1;user1=100;user2=101;duration=1",
        "1",
        "unknown method",
    ),
    (
        "emptyParameter",
        b"REQUEST: id=1;;user1=100;user2=101;duration=1",
        "1",
        "empty parameter",
    ),
    (
        "leadingSemicolon",
        b"REQUEST: ;id=1;user1=100;user2=101;duration=1",
        "1",
        "empty parameter",
    ),
    (
        "twoTrailingSemicolons",
        b"REQUEST: id=1;user1=100;user2=101;duration=1;;",
        "1",
        "empty parameter",
    ),
    (
        "parameterWithoutEquals",
        b"REQUEST: id=1;user1;user2=101;duration=1",
        "1",
        "no '='",
    ),
    (
        "spaceAfterSemicolon",
        b"REQUEST: id=1; user1=100;user2=101;duration=1",
        "1",
        "parameter name",
    ),
    ("trailingSpace", b"REQUEST: id=1;user1=100;user2=101;duration=1; ", "1", "no '='"),
    (
        "emptyParameterName",
        b"REQUEST: id=1;=5;user1=100;user2=101;duration=1",
        "1",
        "parameter name",
    ),
    (
        "spaceAroundEquals",
        b"REQUEST: id = 1;user1=100;user2=101;duration=1",
        "",
        "parameter name",
    ),
    ("missingId", b"REQUEST: user1=100;user2=101;duration=1", "", "'id'"),
    ("missingUser1", b"REQUEST: id=1;user2=101;duration=1", "1", "'user1'"),
    ("missingUser2", b"REQUEST: id=1;user1=100;duration=1", "1", "'user2'"),
    ("missingDuration", b"REQUEST: id=1;user1=100;user2=101", "1", "'duration'"),
    ("missingAllParameters", b"REQUEST:", "", "'id'"),
    ("cancelMissingId", b"CANCEL: ", "", "'id'"),
    ("emptyId", b"REQUEST: id=;user1=100;user2=101;duration=1", "", "invalid id"),
    (
        "idThirtyTwoCharacters",
        b"REQUEST: id=" + b"x" * 32 + b";user1=100;user2=101;duration=1",
        "",
        "invalid id",
    ),
    (
        "idWithSpace",
        b"REQUEST: id=12 34;user1=100;user2=101;duration=1",
        "",
        "invalid id",
    ),
    (
        "idWithEquals",
        b"REQUEST: id=a=b;user1=100;user2=101;duration=1",
        "",
        "invalid id",
    ),
    ("idWithTab", b"REQUEST: id=a\tb;user1=100;user2=101;duration=1", "", "control"),
    (
        "idNotAscii",
        "REQUEST: id=ä1;user1=100;user2=101;duration=1".encode(),
        "",
        "ASCII",
    ),
    ("cancelInvalidId", b"CANCEL: id=a b;", "", "invalid id"),
    (
        "repeatedId",
        b"REQUEST: id=1;ID=2;user1=100;user2=101;duration=1",
        "",
        "repeated parameter 'id'",
    ),
    (
        "repeatedIdSameValue",
        b"REQUEST: id=1;id=1;user1=100;user2=101;duration=1",
        "",
        "repeated",
    ),
    (
        "repeatedUser1",
        b"REQUEST: id=1;user1=100;USER1=102;user2=101;duration=1",
        "1",
        "repeated parameter 'user1'",
    ),
    (
        "repeatedDuration",
        b"REQUEST: id=1;user1=100;user2=101;duration=1;Duration=1",
        "1",
        "repeated",
    ),
    (
        "repeatedUnknown",
        b"REQUEST: id=1;user1=100;user2=101;duration=1;foo=1;FOO=2",
        "1",
        "repeated",
    ),
    ("emptyUser1", b"REQUEST: id=1;user1=;user2=101;duration=1", "1", "invalid user1"),
    (
        "user1ThirtyTwoCharacters",
        b"REQUEST: id=1;user1=" + b"1" * 32 + b";user2=101;duration=1",
        "1",
        "invalid user1",
    ),
    (
        "user1WithAt",
        b"REQUEST: id=1;user1=100@host;user2=101;duration=1",
        "1",
        "invalid user1",
    ),
    (
        "user1SipUri",
        b"REQUEST: id=1;user1=sip:100;user2=101;duration=1",
        "1",
        "invalid user1",
    ),
    (
        "user1WithSpace",
        b"REQUEST: id=1;user1=10 0;user2=101;duration=1",
        "1",
        "invalid user1",
    ),
    ("emptyUser2", b"REQUEST: id=1;user1=100;user2=;duration=1", "1", "invalid user2"),
    (
        "user2WithPercent",
        b"REQUEST: id=1;user1=100;user2=1%41;duration=1",
        "1",
        "invalid user2",
    ),
    (
        "durationNegative",
        b"REQUEST: id=1;user1=100;user2=101;duration=-1",
        "1",
        "invalid duration",
    ),
    (
        "durationPlusSign",
        b"REQUEST: id=1;user1=100;user2=101;duration=+5",
        "1",
        "invalid duration",
    ),
    (
        "durationFraction",
        b"REQUEST: id=1;user1=100;user2=101;duration=1.5",
        "1",
        "invalid duration",
    ),
    (
        "durationEmpty",
        b"REQUEST: id=1;user1=100;user2=101;duration=",
        "1",
        "invalid duration",
    ),
    (
        "durationWord",
        b"REQUEST: id=1;user1=100;user2=101;duration=ten",
        "1",
        "invalid duration",
    ),
    (
        "durationHex",
        b"REQUEST: id=1;user1=100;user2=101;duration=0x10",
        "1",
        "invalid duration",
    ),
    (
        "durationSpace",
        b"REQUEST: id=1;user1=100;user2=101;duration= 60",
        "1",
        "invalid duration",
    ),
    (
        "durationOverMax",
        b"REQUEST: id=1;user1=100;user2=101;duration=86401",
        "1",
        "max_duration",
    ),
    (
        "durationFullwidthDigit",
        "REQUEST: id=1;user1=100;user2=101;duration=１".encode(),
        "1",
        "ASCII",
    ),
    (
        "annId1SevenDigits",
        b"REQUEST: id=1;user1=100;user2=101;duration=1;ann_id1=0008000",
        "1",
        "ann_id1",
    ),
    (
        "annId1NineDigits",
        b"REQUEST: id=1;user1=100;user2=101;duration=1;ann_id1=000800020",
        "1",
        "ann_id1",
    ),
    (
        "annId1Letters",
        b"REQUEST: id=1;user1=100;user2=101;duration=1;ann_id1=ann00001",
        "1",
        "ann_id1",
    ),
    (
        "annId1Empty",
        b"REQUEST: id=1;user1=100;user2=101;duration=1;ann_id1=",
        "1",
        "ann_id1",
    ),
    (
        "annId2Bad",
        b"REQUEST: id=1;user1=100;user2=101;duration=1;ann_id2=1234",
        "1",
        "ann_id2",
    ),
    (
        "annDigit2Empty",
        b"REQUEST: id=1;user1=100;user2=101;duration=1;ann_digit2=",
        "1",
        "ann_digit2",
    ),
    (
        "annDigit2Letters",
        b"REQUEST: id=1;user1=100;user2=101;duration=1;ann_digit2=12a",
        "1",
        "ann_digit2",
    ),
    (
        "annDigit2Star",
        b"REQUEST: id=1;user1=100;user2=101;duration=1;ann_digit2=*",
        "1",
        "ann_digit2",
    ),
    (
        "annDigit2ThirtyTwo",
        b"REQUEST: id=1;user1=100;user2=101;duration=1;ann_digit2=" + b"1" * 32,
        "1",
        "ann_digit2",
    ),
    ("datagram1025Bytes", _padTo(1025), "1234", "1024"),
    ("datagramHuge", _padTo(65000), "1234", "1024"),
    (
        "notAsciiInUser",
        "REQUEST: id=7;user1=10ä;user2=101;duration=1".encode(),
        "7",
        "ASCII",
    ),
    (
        "latin1Byte",
        b"REQUEST: id=7;user1=100;user2=101;duration=1;x=\xff",
        "7",
        "ASCII",
    ),
    ("nulByte", b"REQUEST: id=7;user1=100\x00;user2=101;duration=1", "7", "control"),
    (
        "crInTheMiddle",
        b"REQUEST: id=7;\ruser1=100;user2=101;duration=1",
        "7",
        "control",
    ),
    ("twoLineEnds", _BASE + b"\r\n\r\n", "1234", "control"),
    ("twoMessages", _BASE + b"\n" + _BASE, "1234", "control"),
    ("delete", b"REQUEST: id=7;user1=100\x7f;user2=101;duration=1", "7", "control"),
]


def _validTest(data: bytes, expected: Request | Cancel):
    def test(self: SynchronousTestCase) -> None:
        message = parseMessage(data, MAX_DURATION)
        self.assertEqual(message, expected)
        self.assertIs(type(message), type(expected))
        self.assertEqual(message.ignored, expected.ignored)

    test.__doc__ = f"{data[:70]!r} parses to {expected!r}."
    return test


def _invalidTest(data: bytes, callbackId: str, word: str):
    def test(self: SynchronousTestCase) -> None:
        error = self.assertRaises(MessageError, parseMessage, data, MAX_DURATION)
        self.assertEqual(error.callbackId, callbackId)
        self.assertIn(word, error.reason)

    test.__doc__ = (
        f"{data[:70]!r} is refused (reason mentions {word!r}) with id {callbackId!r}."
    )
    return test


class ParseMessageTests(SynchronousTestCase):
    """
    L{parseMessage} accepts exactly the datagrams of the L{VALID} table and refuses
    those of the L{INVALID} table, with the id when one can be read.
    """

    for _name, _data, _expected in VALID:
        locals()[f"test_valid_{_name}"] = _validTest(_data, _expected)
    for _name, _data, _id, _word in INVALID:
        locals()[f"test_invalid_{_name}"] = _invalidTest(_data, _id, _word)
    del _name, _data, _expected, _id, _word

    def test_tableNamesUnique(self) -> None:
        """
        Every table row has its own name, so no row silently replaces another test.
        """
        names = [row[0] for row in VALID] + [row[0] for row in INVALID]
        self.assertEqual(len(names), len(set(names)))

    def test_maxDurationIsAParameter(self) -> None:
        """
        The cap on C{duration} is the caller's C{maxDuration}, not a constant.
        """
        data = b"REQUEST: id=1;user1=100;user2=101;duration=61"
        self.assertEqual(parseMessage(data, 61).duration, 61)
        error = self.assertRaises(MessageError, parseMessage, data, 60)
        self.assertEqual(error.callbackId, "1")

    def test_messageErrorIsValueError(self) -> None:
        """
        L{MessageError} is a L{ValueError} whose text is the reason.
        """
        error = self.assertRaises(MessageError, parseMessage, b"REQUEST: id=1", 60)
        self.assertIsInstance(error, ValueError)
        self.assertEqual(str(error), error.reason)

    def test_ignoredNotComparedForEquality(self) -> None:
        """
        Two requests that differ only in unknown parameters are equal, so a
        retransmission by a newer AS is still a duplicate; any known parameter makes
        them different.
        """
        a = parseMessage(_BASE + b"foo=1", MAX_DURATION)
        b = parseMessage(_BASE, MAX_DURATION)
        self.assertEqual(a, b)
        c = parseMessage(_BASE + b"ann_id1=00080002", MAX_DURATION)
        self.assertNotEqual(b, c)


class FormatTests(SynchronousTestCase):
    """
    L{formatAck} and L{formatResponse} write the spec's exact form: lowercase names, no
    spaces, a trailing C{;} and no line end.
    """

    def test_ackOk(self) -> None:
        """
        An accepted command is acknowledged with C{code=ok}.
        """
        self.assertEqual(formatAck("1234", True), b"ACK: id=1234;code=ok;")

    def test_ackFail(self) -> None:
        """
        A refused command is acknowledged with C{code=fail}.
        """
        self.assertEqual(formatAck("1234", False), b"ACK: id=1234;code=fail;")

    def test_ackFailWithoutId(self) -> None:
        """
        When no id could be read, the ACK carries an empty id.
        """
        self.assertEqual(formatAck("", False), b"ACK: id=;code=fail;")

    def test_ackRefusesUnsafeId(self) -> None:
        """
        An id that could not come from a valid command (it would break the framing) is
        refused rather than written.
        """
        self.assertRaises(ValueError, formatAck, "1;code=ok", False)
        self.assertRaises(ValueError, formatAck, "a b", True)

    def test_response(self) -> None:
        """
        The RESPONSE carries the id and the real duration in whole seconds.
        """
        self.assertEqual(
            formatResponse("1234", 180), b"RESPONSE: id=1234;real_duration=180;"
        )
        self.assertEqual(formatResponse("x", 0), b"RESPONSE: id=x;real_duration=0;")

    def test_responseRefusesBadValues(self) -> None:
        """
        A negative or non-integer duration, or an empty id, is a programming error.
        """
        self.assertRaises(ValueError, formatResponse, "1", -1)
        self.assertRaises(ValueError, formatResponse, "1", 1.5)
        self.assertRaises(ValueError, formatResponse, "1", True)
        self.assertRaises(ValueError, formatResponse, "", 3)

    def test_ackRoundTripsId(self) -> None:
        """
        Every id the parser accepts can be written back unchanged.
        """
        for name, _data, expected in VALID:
            self.assertEqual(
                formatAck(expected.callbackId, True),
                b"ACK: id=" + expected.callbackId.encode("ascii") + b";code=ok;",
                name,
            )
