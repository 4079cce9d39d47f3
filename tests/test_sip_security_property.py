"""
Property: whatever bytes arrive at the SIP port, no exception escapes the
stack's datagram entry, nothing is logged as an error, and at most one
datagram is sent in answer (then or later: no retransmission).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tests.siphelpers import startStack

SOURCE = ("127.0.0.1", 5099)

_METHODS = ["INVITE", "OPTIONS", "REGISTER", "BYE", "CANCEL", "ACK", "FOO", "SIP/2.0"]
_HEADERS = [
    "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-{n};received=127.0.0.2;rport=7",
    "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-{n}",
    "Via: garbage",
    "From: <sip:x@127.0.0.1>;tag=f{n}",
    "From: <>",
    "To: <sip:cb@127.0.0.1>",
    "To: <sip:cb@127.0.0.1>;tag=t{n}",
    "Call-ID: c{n}@x",
    "CSeq: 1 INVITE",
    "CSeq: x",
    "Contact: <sip:x@127.0.0.1:5099;transport=UDP>",
    "Contact: *",
    "Expires: -1",
    "Max-Forwards: 70",
    "Content-Length: 0",
    "Content-Length: 99999",
    "Content-Type: application/sdp",
    "User-Agent: friendly-scanner",
    'Authorization: Digest username="100", realm="127.0.0.1", nonce="1.2.3.4"',
    "Record-Route: <sip:1.2.3.4;lr>",
]


@st.composite
def sipLike(draw) -> bytes:
    """Something shaped like a SIP message: a start line, headers, a body."""
    method = draw(st.sampled_from(_METHODS))
    if method == "SIP/2.0":
        code = draw(st.integers(-5, 1200))
        start = f"SIP/2.0 {code} {draw(st.text(max_size=10))}"
    else:
        start = f"{method} sip:{draw(st.text(max_size=12))}@127.0.0.1 SIP/2.0"
    n = draw(st.integers(0, 3))
    headers = draw(st.lists(st.sampled_from(_HEADERS), max_size=12))
    extra = draw(st.lists(st.text(max_size=30), max_size=3))
    body = draw(st.text(max_size=40))
    lines = [start] + [h.format(n=n) for h in headers] + extra
    text = "\r\n".join(lines) + "\r\n\r\n" + body
    data = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        # flip some bytes
        raw = bytearray(data)
        for position, value in draw(
            st.lists(st.tuples(st.integers(0, 10000), st.integers(0, 255)), max_size=4)
        ):
            if raw:
                raw[position % len(raw)] = value
        data = bytes(raw)
    return data


class AnyBytesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock, self.stack = startStack(self)
        self.port = self.clock.ports[-1]

    def check(self, data: bytes) -> None:
        before = len(self.clock.sent)
        self.port.protocol.datagramReceived(data, SOURCE)
        self.clock.advance(0)
        self.clock.advance(40)
        answers = self.clock.sent[before:]
        self.assertLessEqual(len(answers), 1, [a.data for a in answers])
        for answer in answers:
            self.assertEqual(answer.addr, SOURCE)
        self.assertEqual(self.flushLoggedErrors(), [])

    @settings(
        max_examples=300,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(st.binary(max_size=600))
    def test_anyBytes(self, data: bytes) -> None:
        """Random bytes: no exception, at most one answer, to the source."""
        self.check(data)

    @settings(
        max_examples=400,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(sipLike())
    def test_sipLike(self, data: bytes) -> None:
        """Messages shaped like SIP, broken in every way: the same."""
        self.check(data)
