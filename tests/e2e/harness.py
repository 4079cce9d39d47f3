# -*- test-case-name: tests.e2e.test_harness -*-
"""
The end-to-end test harness: the real server, a SIPp "phone farm" and an
application server (AS), all on loopback, all in trial's reactor.

Why real processes: the end-to-end tests must see what a user sees — the
bytes a PSS receives and the datagrams an AS receives — from a server started
the way an operator starts it (C{twistd -n callback --config FILE}).  Every
process here is spawned with C{reactor.spawnProcess}, so a test waits on
Deferreds, never by sleeping the reactor, and every wait has a bound.

The pieces:
  - L{freePort}: a free loopback UDP port.
  - L{ServerProcess}: writes the INI file, starts C{twistd callback}, fires
    when it logs C{callback_tw ready}; L{ServerProcess.stop} sends SIGTERM
    (SIGKILL after 10 s).
  - L{SippUAS}: one SIPp UAS running C{scenarios/uas.xml}, which plays every
    far-end phone (see the comment at the top of that file);
    L{SippUAS.messages} parses SIPp's message log into L{SipMessage}s.
  - L{ASClient}: a UDP peer that sends IIF commands and waits for datagrams.
  - L{startCallbackWorld}: all three, started and torn down for one test.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Union

from twisted.internet import defer, error
from twisted.internet.defer import Deferred
from twisted.internet.protocol import DatagramProtocol, ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
UAS_SCENARIO = SCENARIOS / "uas.xml"
SIPP = shutil.which("sipp")
LOOPBACK = "127.0.0.1"
READY_MARKER = "callback_tw ready"

_log = Logger(namespace="tests.e2e.harness")

# Ports handed out by this process: freePort never gives one twice, so two
# parts of one test cannot race each other for the same port.
_givenPorts: set[int] = set()


def freePort(kind: int = socket.SOCK_DGRAM) -> int:
    """
    A loopback port that is free now (UDP by default).

    The port is found by binding port 0 and closing the socket, so another
    process could still take it before ours binds it; the start-up of each
    process checks that it did bind.  Within this process no port is returned
    twice.
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
        if port not in _givenPorts:
            _givenPorts.add(port)
            return port
    raise RuntimeError("no free loopback port found")


def _portIsBound(port: int, kind: int = socket.SOCK_DGRAM) -> bool:
    """
    Whether someone holds loopback C{port}: probed by trying to bind it.
    """
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def _pollUntil(
    reactor: Any, predicate: Callable[[], Any], timeout: float, interval: float = 0.05
) -> Deferred:
    """
    Fire with the first true value of C{predicate()}, polled every
    C{interval} seconds; errback with L{defer.TimeoutError} after C{timeout}.
    """
    d: Deferred = Deferred()
    deadline = reactor.seconds() + timeout
    pending: list[Any] = []

    def check() -> None:
        pending.clear()
        try:
            value = predicate()
        except BaseException:
            d.errback()
            return
        if value:
            d.callback(value)
        elif reactor.seconds() >= deadline:
            d.errback(defer.TimeoutError(f"condition not met within {timeout} s"))
        else:
            pending.append(reactor.callLater(interval, check))

    def cancel(_: Deferred) -> None:
        for call in pending:
            if call.active():
                call.cancel()

    d.addBoth(lambda result: (cancel(d), result)[1])
    check()
    return d


def sleep(reactor: Any, seconds: float) -> Deferred:
    """
    A Deferred that fires with C{None} after C{seconds} of C{reactor} time.
    """
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)


# ---------------------------------------------------------------- SIP messages

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


# ------------------------------------------------------------------- processes


class _ChildProcess(ProcessProtocol):
    """
    A child process whose output is kept (the last C{maxOutput} characters)
    and whose end fires C{self.ended}.
    """

    maxOutput = 4_000_000

    def __init__(self, reactor: Any, name: str) -> None:
        self._reactor = reactor
        self.name = name
        self._chunks: list[str] = []
        self._size = 0
        self.ended: Deferred = Deferred()
        self.exitStatus: Failure | None = None
        self.running = False
        self.pid: int | None = None

    @property
    def output(self) -> str:
        """
        Everything the process wrote to stdout and stderr, interleaved.
        """
        return "".join(self._chunks)

    def _spawn(
        self, argv: Sequence[str], cwd: str, env: Mapping[str, str] | None = None
    ) -> None:
        self.transport = self._reactor.spawnProcess(
            self,
            argv[0],
            list(argv),
            env=dict(env if env is not None else os.environ),
            path=cwd,
            childFDs={0: "w", 1: "r", 2: "r"},
        )
        self.pid = self.transport.pid
        self.running = True

    def _spawnUntilBound(
        self,
        argv: Sequence[str],
        cwd: str,
        env: Mapping[str, str],
        port: int,
        timeout: float,
        details: Callable[[], str] = lambda: "",
    ) -> Deferred:
        """
        Spawn, then fire with C{self} once UDP C{port} is bound; fail with
        the output (and C{details()}) if the process exits first.
        """
        self._spawn(argv, cwd, env)

        def bound() -> bool:
            if not self.running:
                raise RuntimeError(
                    f"{self.name} exited at start-up ({self.exitStatus.value}):\n"
                    f"{self.output[-3000:]}\n{details()}"
                )
            return _portIsBound(port)

        d = _pollUntil(self._reactor, bound, timeout)
        d.addCallback(lambda _: self)
        return d
        _log.info(
            "{name}: started pid {pid}: {argv}",
            name=self.name,
            pid=self.pid,
            argv=" ".join(argv),
        )

    def connectionMade(self) -> None:
        self.transport.closeStdin()

    def _collect(self, data: bytes) -> None:
        text = data.decode("utf-8", "replace")
        self._chunks.append(text)
        self._size += len(text)
        while self._size > self.maxOutput and len(self._chunks) > 1:
            self._size -= len(self._chunks.pop(0))
        self.outputReceived(text)

    def outReceived(self, data: bytes) -> None:
        self._collect(data)

    def errReceived(self, data: bytes) -> None:
        self._collect(data)

    def outputReceived(self, text: str) -> None:
        """
        Called with each piece of output; subclasses watch for markers.
        """

    def processEnded(self, reason: Failure) -> None:
        self.running = False
        self.exitStatus = reason
        _log.info(
            "{name}: pid {pid} ended: {reason}",
            name=self.name,
            pid=self.pid,
            reason=reason.value,
        )
        self.ended.callback(reason.value)

    @property
    def exitCode(self) -> int | None:
        """
        The exit code, C{None} while running or after a signal.
        """
        if self.exitStatus is None:
            return None
        return getattr(self.exitStatus.value, "exitCode", None)

    @property
    def exitSignal(self) -> int | None:
        if self.exitStatus is None:
            return None
        return getattr(self.exitStatus.value, "signal", None)

    def terminate(self, graceSeconds: float) -> Deferred:
        """
        SIGTERM, then SIGKILL after C{graceSeconds}; fire when it has ended.
        """
        if not self.running:
            return defer.succeed(None)
        result: Deferred = Deferred()
        self.ended.addBoth(
            lambda value: (result.callback(None) if not result.called else None, value)[
                1
            ]
        )
        self._signal("TERM")

        def kill() -> None:
            if self.running:
                _log.warn(
                    "{name}: pid {pid} ignored SIGTERM for {s} s: SIGKILL",
                    name=self.name,
                    pid=self.pid,
                    s=graceSeconds,
                )
                self._signal("KILL")

        killer = self._reactor.callLater(graceSeconds, kill)
        result.addBoth(
            lambda value: (killer.cancel() if killer.active() else None, value)[1]
        )
        return result

    def _signal(self, name: str) -> None:
        try:
            self.transport.signalProcess(name)
        except error.ProcessExitedAlready:
            pass


def _iniValue(value: Any) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if value is None:
        return ""
    return str(value)


class ServerProcess(_ChildProcess):
    """
    The callback server, started as an operator starts it::

        python3 -c <twistd> -n --pidfile= -l - callback --config FILE

    from the repository root, with the INI file written into C{directory}.

    @ivar iifPort: the IIF UDP port; C{sipPort}: the server's SIP port.
    @ivar configPath: the INI file written.
    @ivar sections: the configuration written, section -> key -> value.
    """

    stopGrace = 10.0

    # The configuration of the end-to-end tests; a keyword argument of the
    # same name (any section) replaces a value.
    DEFAULTS: dict[str, dict[str, Any]] = {
        "callback": {
            "listen_address": LOOPBACK,
            "listen_port": None,  # freePort()
            "external_line_mode": False,
            "default_caller": "1000",
            "outbound_peer": "pss",
            "no_answer_timeout": 60,
            "max_duration": 86400,
            "max_calls": 1000,
            "request_memory": 3600,
            "shutdown_timeout": 5,
            # The overload guard refuses REQUESTs while the reactor lags; a
            # busy test machine (SIPp, Kamailio, trial on 2 cores) must not
            # turn that into a flaky "code=fail". Its own tests are unit tests.
            "max_lag": 0,
        },
        "sip": {
            "address": LOOPBACK,
            "port": None,  # freePort()
            "advertised_address": "",
            "trace": True,
        },
        "media": {
            "prompts": str(REPO_ROOT / "etc" / "prompts"),
            "default_ann_id1": "",
            "ringback_frequency": 0,
        },
    }

    def __init__(
        self,
        directory: str,
        peerPort: int,
        asPorts: int | Sequence[int],
        reactor: Any = None,
        peers: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> None:
        """
        @param directory: where the INI file (and nothing else) is written.
        @param peerPort: the SIP port of the outbound peer C{pss} (the SIPp UAS).
        @param asPorts: the loopback port(s) of the application server(s):
            peers C{as1}, C{as2}...
        @param peers: more C{[peer_servers]} entries, name -> C{host[:port]}.
        @param overrides: config values by key name (C{no_answer_timeout=3},
            C{trace=False}); a key of no section is a C{TypeError}.
        """
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        super().__init__(reactor, "server")
        self.sections = {name: dict(values) for name, values in self.DEFAULTS.items()}
        for key, value in overrides.items():
            for values in self.sections.values():
                if key in values:
                    values[key] = value
                    break
            else:
                raise TypeError(f"ServerProcess: no config key {key!r}")
        cb, sip = self.sections["callback"], self.sections["sip"]
        if cb["listen_port"] is None:
            cb["listen_port"] = freePort()
        if sip["port"] is None:
            sip["port"] = freePort()
        self.iifPort = int(cb["listen_port"])
        self.sipPort = int(sip["port"])
        if isinstance(asPorts, int):
            asPorts = [asPorts]
        peerServers = {"pss": f"{LOOPBACK}:{peerPort}"}
        for index, port in enumerate(asPorts, 1):
            peerServers[f"as{index}"] = f"{LOOPBACK}:{port}"
        peerServers.update(peers or {})
        self.sections["peer_servers"] = peerServers
        self.directory = Path(directory).resolve()
        self.configPath = self.directory / "callback.ini"
        self._ready: Deferred | None = None
        self.readyAt: float | None = None

    @property
    def iifAddress(self) -> tuple[str, int]:
        return (str(self.sections["callback"]["listen_address"]), self.iifPort)

    def writeConfig(self) -> Path:
        """
        Write the INI file; return its path.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        lines = []
        for section in ("callback", "sip", "peer_servers", "media"):
            lines.append(f"[{section}]")
            for key, value in self.sections[section].items():
                lines.append(f"{key} = {_iniValue(value)}")
            lines.append("")
        self.configPath.write_text("\n".join(lines))
        return self.configPath

    def argv(self) -> list[str]:
        # twistd itself, by the interpreter running the tests; "-c" (unlike the
        # twistd script) puts the working directory, the repo root, on sys.path.
        return [
            sys.executable,
            "-c",
            "import sys; sys.argv[0] = 'twistd';"
            " from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            "-l",
            "-",
            "callback",
            "--config",
            str(self.configPath),
        ]

    def start(self, timeout: float = 20.0) -> Deferred:
        """
        Write the config and start the server; fire with C{self} once it logs
        C{callback_tw ready}.  Errback with the captured output if it exits
        first or is not ready within C{timeout} seconds (then it is killed).
        """
        self.writeConfig()
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("PYTHONPATH", None)
        self._ready = Deferred()
        self._spawn(self.argv(), str(REPO_ROOT), env)
        ready = self._ready

        def failed(why: str) -> None:
            if not ready.called:
                ready.errback(RuntimeError(f"server {why}; its output:\n{self.output}"))

        timer = self._reactor.callLater(
            timeout,
            lambda: (failed(f"not ready within {timeout} s"), self._signal("KILL")),
        )
        self.ended.addCallback(
            lambda value: (failed(f"exited before it was ready ({value})"), value)[1]
        )
        ready.addBoth(
            lambda value: (timer.cancel() if timer.active() else None, value)[1]
        )
        return ready

    def outputReceived(self, text: str) -> None:
        if (
            self._ready is not None
            and not self._ready.called
            and READY_MARKER in self.output
        ):
            self.readyAt = time.time()
            self._ready.callback(self)

    def stop(self) -> Deferred:
        """
        SIGTERM (the server then releases its callbacks), SIGKILL after 10 s;
        fire with C{None} when it has exited.
        """
        return self.terminate(self.stopGrace)

    def logLines(self, needle: str) -> list[str]:
        """
        The lines of output containing C{needle}.
        """
        return [line for line in self.output.splitlines() if needle in line]


class SippUAS(_ChildProcess):
    """
    One SIPp UAS process playing every far-end phone (C{scenarios/uas.xml}).

    @ivar port: its SIP port on 127.0.0.1; C{mediaPort} the SDP port of the
        answer* phones (hangup* and glare* use C{mediaPort + 2}).
    """

    stopGrace = 3.0

    def __init__(
        self,
        directory: str,
        scenario: str | Path = UAS_SCENARIO,
        port: int | None = None,
        lifetime: float = 180.0,
        reactor: Any = None,
        extraArgs: Sequence[str] = (),
        traceMessages: bool = True,
    ) -> None:
        """
        @param lifetime: SIPp quits by itself after this many seconds (its
            C{-timeout}), whatever happens to the test.
        @param traceMessages: C{False} for load runs: no message file.
        """
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        super().__init__(reactor, "sipp")
        if SIPP is None:
            raise RuntimeError("sipp is not installed (Debian package sip-tester)")
        self.directory = Path(directory).resolve()
        self.scenario = Path(scenario)
        self.port = port or freePort()
        self.mediaPort = _freeMediaPort()
        self.controlPort = freePort()
        self.lifetime = lifetime
        self.extraArgs = list(extraArgs)
        self.traceMessages = traceMessages
        self.messageFile = self.directory / f"sipp-{self.port}-messages.log"
        self.errorFile = self.directory / f"sipp-{self.port}-errors.log"

    def argv(self) -> list[str]:
        argv = [
            SIPP,
            "-sf",
            str(self.scenario),
            "-i",
            LOOPBACK,
            "-mi",
            LOOPBACK,
            "-p",
            str(self.port),
            "-mp",
            str(self.mediaPort),
            "-cp",
            str(self.controlPort),
            "-aa",
            "-nostdin",
            "-timeout",
            f"{int(self.lifetime)}s",
            "-trace_err",
            "-error_file",
            str(self.errorFile),
        ]
        if self.traceMessages:
            argv += ["-trace_msg", "-message_file", str(self.messageFile)]
        return argv + self.extraArgs

    def start(self, timeout: float = 10.0) -> Deferred:
        """
        Start SIPp; fire with C{self} once its SIP port is bound.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.setdefault("TERM", "dumb")
        return self._spawnUntilBound(
            self.argv(), str(self.directory), env, self.port, timeout, self.errors
        )

    def stop(self) -> Deferred:
        """
        SIGTERM (SIGKILL after 3 s); fire when SIPp has exited.
        """
        return self.terminate(self.stopGrace)

    def messages(self) -> list[SipMessage]:
        """
        Every SIP message logged so far (SIPp flushes each one).
        """
        try:
            text = self.messageFile.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return parseMessageLog(text)

    def calls(self) -> dict[str, list[SipMessage]]:
        """
        The messages of each call (Call-ID), in order of first appearance.
        """
        return groupByCallId(self.messages())

    def callsTo(self, user: str) -> list[list[SipMessage]]:
        """
        The calls whose first INVITE was to C{user} (its Request-URI user).
        """
        result = []
        for messages in self.calls().values():
            invites = requestsOf(messages, "INVITE")
            if invites and invites[0].requestUser == user:
                result.append(messages)
        return result

    def callTo(self, user: str) -> list[SipMessage]:
        """
        The messages of the one call to C{user}; C{AssertionError} when there
        is not exactly one.
        """
        calls = self.callsTo(user)
        if len(calls) != 1:
            raise AssertionError(
                f"expected exactly one call to {user!r}, found {len(calls)};"
                f" all messages:\n{describeMessages(self.messages())}"
            )
        return calls[0]

    def errors(self) -> str:
        try:
            return self.errorFile.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def _freeMediaPort() -> int:
    """
    An even port P with P and P + 2 free: SIPp binds its audio and video
    echo sockets there.
    """
    for _ in range(100):
        port = freePort()
        if port % 2 == 0 and port + 2 < 65536 and not _portIsBound(port + 2):
            _givenPorts.add(port + 2)
            return port
    raise RuntimeError("no free media port pair found")


# ------------------------------------------------------------ datagram peers

Match = Union[str, "re.Pattern[str]", Callable[[str], bool]]


def _matcher(match: Match) -> Callable[[str], bool]:
    if callable(match) and not isinstance(match, (str, re.Pattern)):
        return match
    if isinstance(match, re.Pattern):
        return lambda text: match.search(text) is not None
    return lambda text: text.startswith(match)


class DatagramPeer(DatagramProtocol):
    """
    A UDP peer on loopback in the test's reactor: C{send} text, C{expect} the
    next datagram that matches.

    Datagrams are queued as they arrive, so one that arrives before the test
    asks for it is not lost; each one satisfies at most one C{expect}.

    @ivar received: every datagram, as (time.time(), text, (host, port)).
    """

    def __init__(
        self,
        reactor: Any = None,
        port: int | None = None,
        defaultTarget: tuple[str, int] | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        self._reactor = reactor
        self.port = port if port is not None else freePort()
        self.defaultTarget = defaultTarget
        self.received: list[tuple[float, str, tuple[str, int]]] = []
        self._unclaimed: list[tuple[float, str, tuple[str, int]]] = []
        self._waiters: list[tuple[Callable[[str], bool], Deferred]] = []
        self._listening: Any = None

    def start(self) -> DatagramPeer:
        self._listening = self._reactor.listenUDP(self.port, self, interface=LOOPBACK)
        return self

    def stop(self) -> Deferred:
        for _, d in list(self._waiters):
            d.cancel()
        if self._listening is None:
            return defer.succeed(None)
        listening, self._listening = self._listening, None
        return defer.maybeDeferred(listening.stopListening)

    def send(self, text: str | bytes, to: tuple[str, int] | None = None) -> None:
        data = text.encode("ascii") if isinstance(text, str) else text
        target = to or self.defaultTarget
        if target is None:
            raise ValueError("send: no target address")
        self.transport.write(data, target)

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        entry = (time.time(), data.decode("utf-8", "replace"), addr)
        self.received.append(entry)
        for waiter in self._waiters:
            predicate, d = waiter
            if predicate(entry[1]):
                self._waiters.remove(waiter)
                d.callback(entry[1])
                return
        self._unclaimed.append(entry)

    def receivedTexts(self, match: Match | None = None) -> list[str]:
        predicate = _matcher(match) if match is not None else (lambda text: True)
        return [text for _, text, _ in self.received if predicate(text)]

    def expect(self, match: Match, timeout: float = 10.0) -> Deferred:
        """
        Fire with the text of the next unclaimed datagram that C{match}es (a
        prefix, a compiled regular expression searched, or a predicate);
        errback with L{defer.TimeoutError} (listing what did arrive) after
        C{timeout} seconds.
        """
        predicate = _matcher(match)
        for entry in self._unclaimed:
            if predicate(entry[1]):
                self._unclaimed.remove(entry)
                return defer.succeed(entry[1])
        d: Deferred = Deferred()
        waiter = (predicate, d)
        self._waiters.append(waiter)

        def timedOut(failure: Failure) -> Failure:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            if failure.check(defer.CancelledError, defer.TimeoutError):
                got = (
                    "\n".join(
                        f"  {text!r} from {addr}" for _, text, addr in self.received
                    )
                    or "  (nothing)"
                )
                raise defer.TimeoutError(
                    f"no datagram matching {match!r} within {timeout} s;"
                    f" received:\n{got}"
                )
            return failure

        d.addTimeout(timeout, self._reactor)
        d.addErrback(timedOut)
        return d

    def expectNone(self, match: Match, within: float) -> Deferred:
        """
        Fire with C{None} if no (unclaimed) datagram matching C{match} arrives
        within C{within} seconds; errback with C{AssertionError} naming it if
        one does.
        """
        predicate = _matcher(match)
        d: Deferred = self.expect(predicate, within)

        def arrived(text: str) -> None:
            raise AssertionError(f"unexpected datagram {text!r} (matching {match!r})")

        def quiet(failure: Failure) -> None:
            failure.trap(defer.TimeoutError)

        d.addCallbacks(arrived, quiet)
        return d


def parseIIF(text: str) -> tuple[str, dict[str, str]]:
    """
    C{"ACK: id=1;code=ok;"} -> C{("ACK", {"id": "1", "code": "ok"})}.
    """
    method, _, rest = text.strip().partition(":")
    params: dict[str, str] = {}
    for item in rest.strip().split(";"):
        if item.strip():
            name, _, value = item.partition("=")
            params[name.strip()] = value.strip()
    return method.strip(), params


class ASClient(DatagramPeer):
    """
    An application server: sends IIF commands to the server's IIF port from
    its own loopback port and waits for ACK and RESPONSE datagrams.
    """

    def __init__(
        self,
        reactor: Any = None,
        port: int | None = None,
        server: tuple[str, int] | None = None,
    ) -> None:
        super().__init__(reactor, port, server)

    def request(
        self,
        callbackId: str,
        user1: str,
        user2: str,
        duration: int = 3600,
        **extra: Any,
    ) -> str:
        """
        Send C{REQUEST: id=..;user1=..;user2=..;duration=..;} (plus C{extra}
        parameters); return the text sent.
        """
        params = {
            "id": callbackId,
            "user1": user1,
            "user2": user2,
            "duration": duration,
            **extra,
        }
        text = "REQUEST: " + "".join(f"{k}={v};" for k, v in params.items())
        self.send(text)
        return text

    def expectAck(self, callbackId: str, timeout: float = 5.0) -> Deferred:
        """
        Fire with the C{code} of the next C{ACK: id=<callbackId>;...}.
        """
        d = self.expect(_iifMatcher("ACK", callbackId), timeout)
        d.addCallback(lambda text: parseIIF(text)[1].get("code"))
        return d

    def expectResponse(self, callbackId: str, timeout: float = 20.0) -> Deferred:
        """
        Fire with (real_duration as int, arrival time.time()) of the next
        C{RESPONSE: id=<callbackId>;...}.
        """
        d = self.expect(_iifMatcher("RESPONSE", callbackId), timeout)

        def parsed(text: str) -> tuple[int, float]:
            when = next(t for t, got, _ in reversed(self.received) if got == text)
            return int(parseIIF(text)[1]["real_duration"]), when

        d.addCallback(parsed)
        return d


def _iifMatcher(method: str, callbackId: str) -> Callable[[str], bool]:
    def predicate(text: str) -> bool:
        got, params = parseIIF(text)
        return got == method and params.get("id") == callbackId

    return predicate


# ------------------------------------------------------------- whole world


@dataclass
class CallbackWorld:
    """
    What one end-to-end test talks to.
    """

    server: ServerProcess
    uas: SippUAS
    client: ASClient


def logProcessOutput(process: _ChildProcess, testName: str) -> None:
    """
    Copy a process's output into the test log (C{_trial_temp/test.log}).
    """
    _log.info(
        "==== {name} output for {test} (pid {pid}, exit {status}) ====\n{output}",
        name=process.name,
        test=testName,
        pid=process.pid,
        status=process.exitStatus.value if process.exitStatus else "running",
        output=process.output,
    )


@defer.inlineCallbacks
def startCallbackWorld(testCase: Any, reactor: Any = None, **overrides: Any) -> Any:
    """
    Start SIPp (the phones), an AS client and the server for C{testCase}, and
    register their teardown (server first, so its SIGTERM release reaches
    SIPp) with C{testCase.addCleanup}.  Fire with a L{CallbackWorld}.

    @param overrides: server config values, as for L{ServerProcess}.
    """
    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]
    directory = Path(testCase.mktemp())
    directory.mkdir(parents=True)
    uas = SippUAS(str(directory), reactor=reactor)
    testCase.addCleanup(
        lambda: logProcessOutput(uas, testCase.id()) if uas.pid else None
    )
    testCase.addCleanup(uas.stop)
    yield uas.start()
    client = ASClient(reactor)
    client.start()
    testCase.addCleanup(client.stop)
    server = ServerProcess(
        str(directory), uas.port, client.port, reactor=reactor, **overrides
    )
    client.defaultTarget = server.iifAddress
    testCase.addCleanup(
        lambda: logProcessOutput(server, testCase.id()) if server.pid else None
    )
    testCase.addCleanup(server.stop)
    yield server.start()
    return CallbackWorld(server, uas, client)
