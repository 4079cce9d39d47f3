"""
Tests for L{callback_tw.tap}: the options of C{twistd callback}, and what an
operator sees when starting it (one line for a bad file, a running server for
a good one).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from twisted.application.service import IService
from twisted.trial.unittest import SynchronousTestCase

from callback_tw.config import Config
from callback_tw.config.values import PACKAGED_PROMPTS
from callback_tw.tap import Options, makeService

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

GOOD = """\
[callback]
listen_address = 127.0.0.1
listen_port = {iifPort}
default_caller = 1000
outbound_peer = pss
[sip]
address = 127.0.0.1
port = {sipPort}
[peer_servers]
pss = 127.0.0.1:5070
as1 = 127.0.0.1:6000
[media]
prompts = {prompts}
"""
PROMPTS = PACKAGED_PROMPTS

# twistd as the console script runs it, with the checkout first on sys.path
# (as "python -m twisted.trial" puts it) so that this checkout's plugin and
# package are the ones tested.
_TWISTD = [
    sys.executable,
    "-c",
    "import sys; sys.argv[0] = 'twistd';"
    " from twisted.scripts.twistd import run; run()",
]


def _freeUDPPort() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _boundUDPPorts() -> set[int]:
    """
    The local UDP ports bound on 127.0.0.1 or the wildcard, from
    /proc/net/udp, without touching them.
    """
    ports = set()
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            local = line.split()[1]
            host, port = local.split(":")
            if host in ("0100007F", "00000000"):
                ports.add(int(port, 16))
    return ports


class _ConfigFileMixin:
    def writeConfig(self, text: str) -> str:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "callback.ini")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def goodConfig(self, iifPort: int = 5080, sipPort: int = 5060) -> str:
        return self.writeConfig(
            GOOD.format(iifPort=iifPort, sipPort=sipPort, prompts=PROMPTS)
        )


class OptionsTests(_ConfigFileMixin, SynchronousTestCase):
    """
    L{Options} loads the file and applies the overrides.
    """

    def test_defaultConfigPath(self) -> None:
        """
        Without --config, and without an installed configuration,
        etc/callback.ini (relative to the working directory) is read.
        """
        self.assertIsNone(Options()["config"])
        installed = os.path.abspath(self.mktemp())
        self.patch(Options, "configSearch", (installed, "etc/callback.ini"))
        cwd = os.getcwd()
        self.addCleanup(os.chdir, cwd)
        os.chdir(_REPO)
        options = Options()
        options.parseOptions([])
        config = options["configObject"]
        self.assertIsInstance(config, Config)
        self.assertEqual(config.path, "etc/callback.ini")
        self.assertEqual(config.callback.listenPort, 5080)

    def test_configOption(self) -> None:
        """
        --config and -c name the file.
        """
        path = self.goodConfig(iifPort=7001, sipPort=7002)
        for flag in ("--config", "-c"):
            options = Options()
            options.parseOptions([flag, path])
            config = options["configObject"]
            self.assertEqual(config.path, path)
            self.assertEqual(
                (config.callback.listenPort, config.sip.port), (7001, 7002)
            )

    def test_overrides(self) -> None:
        """
        --iif-port, --sip-port and --sip-address replace the file's values;
        0 means any free port.  Everything else is kept.
        """
        path = self.goodConfig(iifPort=7001, sipPort=7002)
        options = Options()
        options.parseOptions(
            [
                "-c",
                path,
                "--iif-port",
                "0",
                "--sip-port",
                "9",
                "--sip-address",
                "127.0.0.2",
            ]
        )
        config = options["configObject"]
        self.assertEqual(config.callback.listenPort, 0)
        self.assertEqual(config.sip.port, 9)
        self.assertEqual(config.sip.address, "127.0.0.2")
        self.assertEqual(config.sip.sipHost, "127.0.0.2")
        self.assertEqual(config.callback.defaultCaller, "1000")
        self.assertEqual(config.outboundPeer.port, 5070)

    def assertExits(self, argv: list[str], message: str) -> None:
        """
        Parsing C{argv} stops with exactly C{message} as the exit message.
        """
        error = self.assertRaises(SystemExit, Options().parseOptions, argv)
        self.assertEqual(str(error.code), message)

    def test_badOverrides(self) -> None:
        """
        A malformed override is one line naming the option.
        """
        path = self.goodConfig()
        self.assertExits(
            ["-c", path, "--iif-port", "65536"],
            "callback: --iif-port: must be a UDP port from 0 to 65535"
            " (0: any free port), got '65536'",
        )
        self.assertExits(
            ["-c", path, "--sip-port", "-1"],
            "callback: --sip-port: must be a UDP port from 0 to 65535"
            " (0: any free port), got '-1'",
        )
        self.assertExits(
            ["-c", path, "--sip-address", "localhost"],
            "callback: --sip-address: must be an IPv4 address, got 'localhost'",
        )

    def test_wildcardSipAddressOverride(self) -> None:
        """
        --sip-address 0.0.0.0 needs advertised_address like the file does.
        """
        path = self.goodConfig()
        self.assertExits(
            ["-c", path, "--sip-address", "0.0.0.0"],
            f"callback: {path}: [sip] advertised_address: must be set when"
            " --sip-address is '0.0.0.0': Via, Contact and SDP need an address"
            " peers can reach",
        )

    def test_badConfig(self) -> None:
        """
        A bad file stops option parsing with the one-line config error.
        """
        path = self.writeConfig(
            GOOD.format(iifPort=0, sipPort=0, prompts=PROMPTS).replace(
                "default_caller = 1000", "default_caller ="
            )
        )
        self.assertExits(
            ["-c", path, "--iif-port", "0"],
            f"callback: {path}: [callback] default_caller: must not be empty when"
            " external_line_mode = no (some VOIP providers reject a call with no"
            " caller number)",
        )

    def test_missingConfig(self) -> None:
        """
        A missing file is reported as such.
        """
        path = os.path.join(self.mktemp(), "x.ini")
        self.assertExits(
            ["-c", path],
            f"callback: {path}: cannot read: [Errno 2] No such file or directory",
        )

    def test_makeService(self) -> None:
        """
        makeService builds a service, not yet running, from the loaded config.
        """
        options = Options()
        options.parseOptions(["-c", self.goodConfig()])
        service = makeService(options)
        self.assertTrue(IService.providedBy(service))
        self.assertFalse(service.running)


class TwistdTests(_ConfigFileMixin, SynchronousTestCase):
    """
    C{twistd callback} as an operator runs it, in a subprocess.
    """

    def runTwistd(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        rundir = os.path.abspath(self.mktemp())
        os.makedirs(rundir)
        return subprocess.run(
            _TWISTD + ["--rundir", rundir, *args],
            cwd=_REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def test_badConfigOneLine(self) -> None:
        """
        A bad file stops start-up with exactly one line on stderr, naming the
        file, section and key; nothing on stdout, no traceback, no usage
        text, exit status 1.
        """
        path = self.writeConfig(
            GOOD.format(iifPort=0, sipPort=0, prompts=PROMPTS).replace(
                "default_caller", "max_calls = abc\ndefault_caller"
            )
        )
        result = self.runTwistd("-n", "callback", "--config", path)
        self.assertEqual(
            result.stderr,
            f"callback: {path}: [callback] max_calls: must be a whole number >= 1,"
            " got 'abc'\n",
        )
        self.assertEqual(result.stdout, "")
        self.assertEqual(result.returncode, 1)

    def test_badPromptsOneLine(self) -> None:
        """
        Announcements that cannot be loaded stop start-up with one line too.
        """
        prompts = os.path.abspath(self.mktemp())
        os.makedirs(prompts)
        path = self.writeConfig(GOOD.format(iifPort=0, sipPort=0, prompts=prompts))
        result = self.runTwistd("-n", "callback", "-c", path, timeout=20)
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertTrue(result.stderr.startswith(f"callback: {prompts}"), result.stderr)
        self.assertTrue(
            result.stderr.endswith(f" (see [media] in {path})\n"), result.stderr
        )
        self.assertEqual((result.stdout, result.returncode), ("", 1))

    def test_newerStoreOneLine(self) -> None:
        """
        A store whose schema is newer than this server stops start-up with one
        line naming the store, exit status 1.
        """
        import sqlite3

        from callback_tw.config import loadConfig
        from callback_tw.tap import checkStore

        path = self.goodConfig()
        checkStore(loadConfig(path))
        database = os.path.join(os.path.dirname(path), "callbacks.db")
        with sqlite3.connect(database) as connection:
            connection.execute("UPDATE schema_version SET version = 99")
        result = self.runTwistd("-n", "callback", "-c", path, timeout=20)
        self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
        self.assertIn(f"store sqlite:///{database}: schema version 99", result.stderr)
        self.assertTrue(
            result.stderr.endswith(f" (see [store] in {path})\n"), result.stderr
        )
        self.assertEqual((result.stdout, result.returncode), ("", 1))

    def test_badOverrideOneLine(self) -> None:
        """
        A bad override is one line too.
        """
        result = self.runTwistd(
            "-n", "callback", "-c", self.goodConfig(), "--sip-port", "http"
        )
        self.assertEqual(
            result.stderr,
            "callback: --sip-port: must be a UDP port from 0 to 65535"
            " (0: any free port), got 'http'\n",
        )
        self.assertEqual((result.stdout, result.returncode), ("", 1))

    def test_help(self) -> None:
        """
        C{twistd callback --help} documents every option.
        """
        result = self.runTwistd("callback", "--help")
        self.assertEqual(result.returncode, 0, result.stderr)
        for option in (
            "-c, --config=",
            "--iif-port=",
            "--sip-port=",
            "--sip-address=",
            "/etc/callback_tw/callback.ini",
            "etc/callback.ini (relative to the working directory)",
            "any free port",
        ):
            self.assertIn(option, result.stdout)

    def test_startAndStop(self) -> None:
        """
        With a good file, C{twistd -n callback} binds the IIF and SIP ports
        given on the command line, and SIGTERM stops it cleanly within a few
        seconds, releasing both ports.
        """
        iifPort, sipPort = _freeUDPPort(), _freeUDPPort()
        rundir = os.path.abspath(self.mktemp())
        os.makedirs(rundir)
        log = open(os.path.join(rundir, "out.log"), "w+")
        self.addCleanup(log.close)
        process = subprocess.Popen(
            _TWISTD
            + ["--rundir", rundir, "-n", "--pidfile=", "callback"]
            + ["-c", self.goodConfig(iifPort=1, sipPort=2)]
            + ["--iif-port", str(iifPort), "--sip-port", str(sipPort)],
            cwd=_REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

        def kill() -> None:
            if process.poll() is None:
                process.kill()
                process.wait(10)

        self.addCleanup(kill)

        deadline = time.monotonic() + 30
        while not {iifPort, sipPort} <= _boundUDPPorts():
            if process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                self.fail(f"twistd did not bind both ports:\n{log.read()}")
            time.sleep(0.1)

        process.send_signal(signal.SIGTERM)
        try:
            status = process.wait(15)
        except subprocess.TimeoutExpired:
            status = None
        log.seek(0)
        output = log.read()
        # twistd (since Twisted 21.2) shuts down cleanly, then re-raises the
        # signal that stopped it, so the exit status says "killed by SIGTERM"
        # as for any well-behaved Unix daemon; "Server Shut Down." is logged
        # only after a clean reactor stop.
        self.assertEqual(status, -signal.SIGTERM, output)
        self.assertIn("Server Shut Down.", output)
        self.assertNotIn("Traceback", output)
        self.assertFalse({iifPort, sipPort} & _boundUDPPorts())
