"""
Tests for the logs an operator reads: C{[log] level} and C{format}
(L{callback_tw.tap.buildLogObserver}), how twistd gets that observer, and the
one line per finished callback at level info.
"""

from __future__ import annotations

import io
import json

from twisted.application.service import Application
from twisted.logger import (
    ILogObserver,
    Logger,
    LogLevel,
    eventFromJSON,
    globalLogPublisher,
)
from twisted.trial.unittest import SynchronousTestCase

from callback_tw.config.model import LogConfig
from callback_tw.tap import Options, _logStream, buildLogObserver
from tests.siphelpers import FarEnd
from tests.test_http import ServedServiceCase
from tests.test_service import AS, PROVIDER


class _Formatted:
    """A field that records whether anything turned it into text."""

    def __init__(self) -> None:
        self.formatted = 0

    def __format__(self, spec: str) -> str:
        self.formatted += 1
        return "formatted"

    def __str__(self) -> str:
        return self.__format__("")

    __repr__ = __str__


class LogObserverTests(SynchronousTestCase):
    """
    L{buildLogObserver}: level filter first, then text or JSON.
    """

    def emit(self, level: str, fmt: str, events: list) -> io.StringIO:
        stream = io.StringIO()
        observer = buildLogObserver(LogConfig(level=level, format=fmt), stream)
        log = Logger(namespace="test", observer=observer)
        for event in events:
            event(log)
        return stream

    def test_levelDropsBeforeFormatting(self) -> None:
        """
        At level info a debug event writes nothing, and nothing formats its
        fields (no text is built for it); an info event is written.
        """
        field = _Formatted()
        stream = self.emit(
            "info",
            "text",
            [
                lambda log: log.debug("step {field}", field=field),
                lambda log: log.info("callback {id} finished", id="7"),
            ],
        )
        self.assertEqual(field.formatted, 0)
        [line] = stream.getvalue().splitlines()
        self.assertIn("callback 7 finished", line)

    def test_debugKeepsDetail(self) -> None:
        """
        At level debug the debug events are written too.
        """
        stream = self.emit("debug", "text", [lambda log: log.debug("step {n}", n=1)])
        self.assertIn("step 1", stream.getvalue())

    def test_warnLevel(self) -> None:
        """
        At level warn, info is dropped and warnings are written.
        """
        stream = self.emit(
            "warn",
            "text",
            [lambda log: log.info("quiet"), lambda log: log.warn("loud")],
        )
        self.assertNotIn("quiet", stream.getvalue())
        self.assertIn("loud", stream.getvalue())

    def test_rtpPortChatterOnlyAtDebug(self) -> None:
        """
        Twisted's own "RTPPort starting on N" and "(UDP Port N Closed)" lines
        (legacy log.msg, two per RTP port) are dropped at level info and
        written at debug; other legacy lines stay.
        """
        from twisted.logger import LogLevel

        def legacy(text: str) -> dict:
            return {
                "log_namespace": "log_legacy",
                "log_level": LogLevel.info,
                "log_format": "{log_text}",
                "log_text": text,
                "message": (text,),
                "log_system": "-",
                "log_time": 0.0,
                "isError": 0,
            }

        lines = [
            "RTPPort starting on 40000",
            "(UDP Port 40000 Closed)",
            "IIFProtocol starting on 5080",
        ]
        for level, expected in (("info", lines[2:]), ("debug", lines)):
            stream = io.StringIO()
            observer = buildLogObserver(LogConfig(level=level), stream)
            for text in lines:
                observer(legacy(text))
            written = stream.getvalue()
            for text in lines:
                (self.assertIn if text in expected else self.assertNotIn)(text, written)

    def test_json(self) -> None:
        """
        C{format = json} writes one JSON object per line, which
        twisted.logger reads back with every field of the event.
        """
        stream = self.emit(
            "info",
            "json",
            [
                lambda log: log.info("callback {id} finished", id="7"),
                lambda log: log.warn("late {ms}", ms=12),
            ],
        )
        lines = stream.getvalue().splitlines()
        self.assertEqual(len(lines), 2, lines)
        first = eventFromJSON(lines[0])
        self.assertEqual(first["id"], "7")
        self.assertEqual(first["log_level"], LogLevel.info)
        self.assertEqual(json.loads(lines[1])["ms"], 12)


class TwistdTests(SynchronousTestCase):
    """
    How the observer reaches twistd: through its options, then the
    application it hangs the service on.
    """

    def options(self, **twistd: object) -> Options:
        options = Options()
        parent = {"logger": None, "syslog": False, "logfile": None, "nodaemon": False}
        parent.update(twistd)
        options.parent = parent
        return options

    def test_stream(self) -> None:
        """
        C{-n} without a log file, or C{--logfile -}: stdout; C{--logfile F}:
        the file F, appended to; C{--syslog} or C{--logger}: none of ours.
        """
        import sys

        self.assertIs(_logStream(self.options(nodaemon=True)), sys.stdout)
        self.assertIs(_logStream(self.options(logfile="-")), sys.stdout)
        self.assertIsNone(_logStream(self.options(syslog=True)))
        self.assertIsNone(_logStream(self.options(logger="some.factory")))
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("before\n")
        stream = _logStream(self.options(logfile=path))
        self.addCleanup(stream.close)
        stream.write("after\n")
        stream.flush()
        with open(path) as f:
            self.assertEqual(f.read(), "before\nafter\n")


class ApplicationObserverTests(ServedServiceCase):
    """
    The service hands its observer to twistd's application.
    """

    def test_observerOnApplication(self) -> None:
        """
        Hung on an application that has no log observer, the service makes
        its own the application's C{ILogObserver}, which twistd uses.
        """
        observer = buildLogObserver(LogConfig(), io.StringIO())
        self.service.logObserver = observer
        application = Application("callback")
        self.service.setServiceParent(application)
        self.assertIs(application.getComponent(ILogObserver), observer)

    def test_noObserver(self) -> None:
        """
        Without an observer of its own (built outside twistd), it sets none.
        """
        application = Application("callback")
        self.service.setServiceParent(application)
        self.assertIsNone(application.getComponent(ILogObserver, None))


class SummaryLineTests(ServedServiceCase):
    """
    At level info, a callback writes exactly one line: its summary.
    """

    def test_oneLinePerCallback(self) -> None:
        """
        A callback accepted, rung and released writes one event at info or
        above about it, which names its id, peer, users, each leg's outcome,
        real_duration and cause; its steps are at debug.
        """
        from twisted.internet.testing import EventLoggingObserver
        from twisted.logger import formatEvent

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        sip, iif = self.start()
        iif.protocol.datagramReceived(
            b"REQUEST: id=7;user1=100;user2=101;duration=60;", AS
        )
        invite = sip.written[0][0].decode()
        far = FarEnd(port=PROVIDER[1])
        sip.protocol.datagramReceived(
            far.response(invite, 180, "Ringing").encode(), PROVIDER
        )
        self.reactor.advance(0)
        self.service.manager.releaseAll("server shutting down")
        self.reactor.advance(0)

        def aboutIt(event: dict) -> bool:
            text = formatEvent(event)
            return "callback 7 " in text or "7/leg" in text or "REQUEST 7" in text

        mine = [e for e in events if aboutIt(e)]
        self.assertGreater(
            len([e for e in mine if e["log_level"] == LogLevel.debug]), 3
        )
        loud = [formatEvent(e) for e in mine if e["log_level"] >= LogLevel.info]
        self.assertEqual(len(loud), 1, loud)
        self.assertRegex(
            loud[0],
            r"^callback 7 finished: peer=as1 user1=100 user2=101 leg1=487"
            r" leg2=not-called real_duration=0 cause=server shutting down"
            r" answer1=- answer2=- joined=- ended=\d+\.\d{3}$",
        )
