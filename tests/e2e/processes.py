# -*- test-case-name: tests.e2e.test_processes,tests.e2e.test_phonefarm -*-
"""
Process control for the end-to-end tests: the real server and SIPp, spawned
with C{reactor.spawnProcess} in trial's reactor.

Why real processes: the end-to-end tests must see what a user sees, the
bytes a PSS receives and the datagrams an AS receives, from a server started
the way an operator starts it (C{twistd -n callback --config FILE}).  A test
waits on Deferreds, never by sleeping the reactor, and every wait has a
bound.

  - L{ServerProcess}: writes the INI file, starts C{twistd callback}, fires
    when it logs C{callback_tw ready}; L{ServerProcess.stop} sends SIGTERM
    (SIGKILL after 10 s).
  - L{SippUAS}: one SIPp UAS running C{etc/sipp/phones.xml}, which plays every
    far-end phone (see the comment at the top of that file);
    L{SippUAS.messages} parses SIPp's message log (L{tests.e2e.siplog}).
  - L{ChildProcess}: what both share (output kept, bounded stop); the
    Kamailio provider of L{tests.e2e.kamailio} builds on it too.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from twisted.internet import defer, error
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from callback_tw.config.values import PACKAGED_PROMPTS
from tests.e2e.loopback import LOOPBACK, freePort, pollUntil, portIsBound, reservePort
from tests.e2e.siplog import (
    SipMessage,
    describeMessages,
    groupByCallId,
    parseMessageLog,
    requestsOf,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
# The phone farm ships with the sample configuration, for a first call by hand.
UAS_SCENARIO = REPO_ROOT / "etc" / "sipp" / "phones.xml"
SIPP = shutil.which("sipp")
READY_MARKER = "callback_tw ready"

_log = Logger(namespace="tests.e2e.processes")


class ChildProcess(ProcessProtocol):
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
        _log.info(
            "{name}: started pid {pid}: {argv}",
            name=self.name,
            pid=self.pid,
            argv=" ".join(argv),
        )

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
            return portIsBound(port)

        d = pollUntil(self._reactor, bound, timeout)
        d.addCallback(lambda _: self)
        return d

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


def iniValue(value: Any) -> str:
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if value is None:
        return ""
    return str(value)


class ServerProcess(ChildProcess):
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
            "prompts": PACKAGED_PROMPTS,
            "default_ann_id1": "",
            "ringback_frequency": 0,
        },
        # The store is a file in the test's own directory (next to the INI
        # file), so a restarted server with the same directory recovers it.
        "store": {
            "url": "sqlite:///callbacks.db",
            "server_id": "",
            "request_memory": 3600,
        },
        # No HTTP port unless a test asks for one (sections={"http": ...}):
        # servers of one test, and of tests run side by side, would all want
        # the default port.
        "http": {"listen_address": LOOPBACK, "listen_port": 0},
        # Every step of every callback in the output, as the tests read it.
        "log": {"level": "debug", "format": "text"},
    }

    def __init__(
        self,
        directory: str,
        peerPort: int,
        asPorts: int | Sequence[int],
        reactor: Any = None,
        peers: Mapping[str, str] | None = None,
        sections: Mapping[str, Mapping[str, Any]] | None = None,
        **overrides: Any,
    ) -> None:
        """
        @param directory: where the INI file (and nothing else) is written.
        @param peerPort: the SIP port of the outbound peer C{pss} (the SIPp UAS).
        @param asPorts: the loopback port(s) of the application server(s):
            peers C{as1}, C{as2}...
        @param peers: more C{[peer_servers]} entries, name -> C{host[:port]}.
        @param sections: more values by section (e.g. C{{"peer as1": {"key":
            ...}}}), merged into the defaults; new sections are written last.
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
        for name, values in (sections or {}).items():
            self.sections.setdefault(name, {}).update(values)
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
        first = ("callback", "sip", "peer_servers")
        order = [*first, *(name for name in self.sections if name not in first)]
        for section in order:
            lines.append(f"[{section}]")
            for key, value in self.sections[section].items():
                lines.append(f"{key} = {iniValue(value)}")
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


class SippUAS(ChildProcess):
    """
    One SIPp UAS process playing every far-end phone (C{etc/sipp/phones.xml}).

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
        self.mediaPort = freeMediaPort()
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


def freeMediaPort() -> int:
    """
    An even port P with P and P + 2 free: SIPp binds its audio and video
    echo sockets there.
    """
    for _ in range(100):
        port = freePort()
        if port % 2 == 0 and port + 2 < 65536 and not portIsBound(port + 2):
            reservePort(port + 2)
            return port
    raise RuntimeError("no free media port pair found")


def logProcessOutput(process: ChildProcess, testName: str) -> None:
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


def startManaged(testCase: Any, process: Any) -> Any:
    """
    Start C{process} (a L{ChildProcess}) for C{testCase}: on cleanup it is
    stopped, and its output is logged under the test's id. Cleanups run in
    reverse order, so what is started last is stopped first.

    @return: the Deferred of C{process.start()}.
    """
    testCase.addCleanup(
        lambda: logProcessOutput(process, testCase.id()) if process.pid else None
    )
    testCase.addCleanup(process.stop)
    return process.start()
