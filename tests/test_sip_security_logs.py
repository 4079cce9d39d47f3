"""
Malformed SIP and what reaches the log: one short, escaped, rate-limited
warning per source, never a traceback or the message itself, nothing
printed by sippy on stdout. See docs/sip-security.md.
"""

from __future__ import annotations

import io
import sys

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from tests.siphelpers import startStack

SOURCE = ("127.0.0.1", 5099)

FORGED = "\r\n2026-11-29T20:00:00+0000 [stdout#info] admin logged in\r\n"


class MalformedTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock, self.stack = startStack(self, trace=False)
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.stdout = io.StringIO()
        self.patch(sys, "stdout", self.stdout)

    def lines(self, level=LogLevel.warn) -> list[str]:
        return [formatEvent(e) for e in self.events if e["log_level"] >= level]

    def assertOneCleanLine(self, *fragments: str) -> str:
        (line,) = self.lines()
        self.assertLessEqual(len(line), 200, line)
        self.assertTrue(line.isprintable(), line)
        self.assertNotIn("[stdout#info] admin", line.replace("\\r\\n", "|"))
        for fragment in fragments:
            self.assertIn(fragment, line)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.stdout.getvalue(), "")
        return line

    def test_garbageRequest(self) -> None:
        """A request sippy cannot parse: one warning naming method and source."""
        self.clock.deliver("INVITE nonsense" + FORGED + "y" * 3000, SOURCE)
        line = self.assertOneCleanLine("malformed SIP INVITE from 127.0.0.1:5099")
        self.assertNotIn("y" * 200, line)

    def test_badStatusLine(self) -> None:
        """
        A response with status code 099 carrying a forged log line: one
        warning, nothing on stdout (sippy prints such a message line by
        line there).
        """
        self.clock.deliver("SIP/2.0 099 Weird" + FORGED + "Via: x\r\n" * 5, SOURCE)
        self.assertOneCleanLine("malformed SIP response from 127.0.0.1:5099")
        self.assertEqual(self.clock.sent, [])

    def test_notUtf8(self) -> None:
        """Bytes that are not UTF-8: one warning, no answer."""
        self.clock.deliver(b"OPTIONS sip:x SIP/2.0\r\n\xff\xfe" + b"z" * 40, SOURCE)
        self.assertOneCleanLine("malformed SIP OPTIONS", "not UTF-8")
        self.assertEqual(self.clock.sent, [])

    def test_badRequestGets400(self) -> None:
        """
        A request whose body is missing (Content-Length 50, no body) gets
        the 400 that sippy prepares for it, at its source, and one warning.
        """
        self.clock.deliver(
            "OPTIONS sip:cb@127.0.0.1 SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.9:5555;branch=z9hG4bK-x\r\n"
            "From: <sip:x@127.0.0.1>;tag=a\r\n"
            "To: <sip:cb@127.0.0.1>\r\n"
            "Call-ID: bad-body@x\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 50\r\n\r\n",
            SOURCE,
        )
        self.assertEqual(
            [(s.firstLine.split(" - ")[0], s.addr) for s in self.clock.sent],
            [("SIP/2.0 400 Bad Request", SOURCE)],
        )
        self.assertOneCleanLine("malformed SIP OPTIONS from 127.0.0.1:5099")

    def test_rateLimitedPerSource(self) -> None:
        """
        200 bad datagrams from one source in 5 s: one line; a second
        source gets its own line; after 10 s the next line says how many
        were not logged.
        """
        for i in range(200):
            self.clock.deliver(f"FOO {i} garbage garbage garbage garbage", SOURCE)
            if i % 40 == 0:
                self.clock.advance(1)
        self.clock.deliver("FOO x garbage garbage garbage garbage", ("127.0.0.2", 1))
        self.assertEqual(len(self.lines()), 2)
        self.clock.advance(10)
        self.clock.deliver("FOO y garbage garbage garbage garbage", SOURCE)
        self.assertIn("(+199 not logged)", self.lines()[-1])

    def test_sippyPrintRouted(self) -> None:
        """
        sippy's own print (here: it "fixes" a body two bytes short) goes
        to one warning line, not to stdout; the request is answered.
        """
        body = "v=0\r\n"
        self.clock.deliver(
            "OPTIONS sip:cb@127.0.0.1 SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK-p\r\n"
            "From: <sip:x@127.0.0.1>;tag=a\r\n"
            "To: <sip:cb@127.0.0.1>\r\n"
            "Call-ID: short-body@x\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Type: application/sdp\r\n"
            f"Content-Length: {len(body) + 2}\r\n\r\n" + body,
            SOURCE,
        )
        self.assertOneCleanLine("sippy: Truncated SIP body")
        self.assertEqual([s.firstLine for s in self.clock.sent], ["SIP/2.0 200 OK"])


class TraceTests(SynchronousTestCase):
    def test_traceLogsMessage(self) -> None:
        """With C{[sip] trace = yes} the whole message is logged, as asked."""
        clock, stack = startStack(self, trace=True)
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        clock.deliver("INVITE nonsense\r\n" + "q" * 300, SOURCE)
        self.assertTrue(any("q" * 300 in formatEvent(e) for e in events))
