"""
Tests for deployment: C{scripts/install} into a fresh virtualenv (the
plugin found there, the configuration and the systemd unit installed, an
edited configuration never overwritten), and where C{twistd callback} looks
for its configuration when C{--config} is not given.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from callback_tw.tap import Options

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(_REPO, "etc", "callback.ini")
UNIT = os.path.join(_REPO, "etc", "systemd", "callback_tw.service")


def _run(args: list[str], cwd: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("CALLBACK_PREFIX", None)
    return subprocess.run(
        args,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


class InstallScriptTests(SynchronousTestCase):
    """
    C{scripts/install --prefix DIR --root DIR}: a virtualenv, never the
    system's Python, and the files a systemd deployment needs.
    """

    def test_installIntoVirtualenv(self) -> None:
        """
        The script creates a virtualenv in the prefix whose twistd lists the
        "callback" plugin from any directory; it installs the sample
        configuration and a unit that runs that twistd, passes
        C{systemd-analyze verify} and keeps the store in a state
        directory.  Run again (an upgrade), it keeps an edited
        configuration.
        """
        base = os.path.abspath(self.mktemp())
        prefix, root = os.path.join(base, "opt"), os.path.join(base, "root")
        elsewhere = os.path.join(base, "elsewhere")
        os.makedirs(elsewhere)
        install = ["bash", os.path.join(_REPO, "scripts", "install")]
        args = [*install, "--prefix", prefix, "--root", root]

        result = _run(args, cwd=elsewhere, timeout=600)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        config = os.path.join(root, "etc", "callback_tw", "callback.ini")
        unit = os.path.join(root, "etc", "systemd", "system", "callback_tw.service")
        self.assertIn(f"== created the virtualenv {prefix}", result.stdout)
        self.assertIn(f"installed the sample configuration {config}", result.stdout)
        self.assertIn(f"installed the systemd unit {unit}", result.stdout)

        # The virtualenv's own python, not the one running the tests.
        self.assertTrue(os.path.exists(os.path.join(prefix, "pyvenv.cfg")))
        twistd = os.path.join(prefix, "bin", "twistd")
        helped = _run([twistd, "--help"], cwd=elsewhere)
        self.assertEqual(helped.returncode, 0, helped.stderr)
        commands = [line.split()[0] for line in helped.stdout.splitlines() if line]
        self.assertEqual(commands.count("callback"), 1, helped.stdout)
        where = _run(
            [
                os.path.join(prefix, "bin", "python"),
                "-c",
                "import callback_tw; print(callback_tw.__file__)",
            ],
            cwd=elsewhere,
        )
        self.assertTrue(where.stdout.startswith(prefix), where.stdout)
        for script in ("callback-client", "callback-cdr"):
            self.assertTrue(os.path.exists(os.path.join(prefix, "bin", script)))

        # The sample, but the store in the unit's state directory (the unit
        # makes /etc read-only).
        self.assertEqual(
            _read(config),
            _read(SAMPLE).replace(
                "url = sqlite:///callbacks.db",
                "url = sqlite:////var/lib/callback_tw/callbacks.db",
            ),
        )
        self.assertIn(
            "url = sqlite:////var/lib/callback_tw/callbacks.db", _read(config)
        )
        self.assertEqual(os.stat(config).st_mode & 0o777, 0o640)
        text = _read(unit)
        self.assertIn(
            f"ExecStart={twistd} -n --pidfile= callback"
            " --config /etc/callback_tw/callback.ini\n",
            text,
        )
        for line in (
            "Restart=on-failure",
            "User=callback_tw",
            "StateDirectory=callback_tw",
        ):
            self.assertIn(f"\n{line}\n", text)
        self.assertNotIn("/opt/callback_tw", text)
        self.verifyUnit(unit)

        with open(config, "a", encoding="utf-8") as f:
            f.write("; edited by the operator\n")
        edited = _read(config)
        again = _run(args, cwd=elsewhere, timeout=600)
        self.assertEqual(again.returncode, 0, again.stdout + again.stderr)
        self.assertIn(f"kept {config}", again.stdout)
        self.assertNotIn("created the virtualenv", again.stdout)
        self.assertEqual(_read(config), edited)

    def verifyUnit(self, unit: str) -> None:
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            # Not a failure: the unit is still checked above, line by line.
            raise SkipTest("systemd-analyze is not installed: unit not verified")
        result = _run([analyze, "verify", unit], cwd=os.path.dirname(unit))
        self.assertEqual((result.returncode, result.stdout, result.stderr), (0, "", ""))

    def test_committedUnit(self) -> None:
        """
        The unit in etc/systemd runs the configuration that the script
        installs, from the default prefix.
        """
        text = _read(UNIT)
        self.assertIn(
            "\nExecStart=/opt/callback_tw/bin/twistd -n --pidfile= callback"
            " --config /etc/callback_tw/callback.ini\n",
            text,
        )

    def test_badUsage(self) -> None:
        """
        An unknown option is refused with the usage line, status 2, before
        anything is installed.
        """
        result = _run(
            ["bash", os.path.join(_REPO, "scripts", "install"), "--sytem"],
            cwd=_REPO,
        )
        self.assertEqual(result.returncode, 2)
        self.assertIn("usage:", result.stderr)
        self.assertEqual(result.stdout, "")


class ConfigSearchTests(SynchronousTestCase):
    """
    Without C{--config}, the installed configuration is used if it exists,
    else the checkout's sample; which one is said in one info line.
    """

    def setUp(self) -> None:
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        self.installed = os.path.join(base, "installed.ini")
        self.local = os.path.join(base, "local.ini")
        self.patch(Options, "configSearch", (self.installed, self.local))
        self.events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def test_installedFirst(self) -> None:
        """
        When both exist, the installed configuration is read.
        """
        shutil.copy(SAMPLE, self.installed)
        shutil.copy(SAMPLE, self.local)
        options = Options()
        options.parseOptions([])
        self.assertEqual(options["configObject"].path, self.installed)
        said = [
            e
            for e in self.events
            if e.get("log_namespace") == "callback_tw.tap.Options"
        ]
        self.assertEqual(len(said), 1)
        self.assertEqual(said[0]["path"], self.installed)

    def test_localWhenNotInstalled(self) -> None:
        """
        Without an installed configuration, the second place is read.
        """
        shutil.copy(SAMPLE, self.local)
        options = Options()
        options.parseOptions([])
        self.assertEqual(options["configObject"].path, self.local)

    def test_configGivenSearchesNothing(self) -> None:
        """
        C{--config FILE} is read even when the installed one exists, and
        nothing is said about searching.
        """
        shutil.copy(SAMPLE, self.installed)
        shutil.copy(SAMPLE, self.local)
        options = Options()
        options.parseOptions(["--config", self.local])
        self.assertEqual(options["configObject"].path, self.local)
        self.assertEqual(
            [
                e
                for e in self.events
                if e.get("log_namespace") == "callback_tw.tap.Options"
            ],
            [],
        )

    def test_noneFound(self) -> None:
        """
        When neither exists, start-up stops with one line naming both.
        """
        options = Options()
        error = self.assertRaises(SystemExit, options.parseOptions, [])
        self.assertEqual(
            str(error),
            "callback: no configuration file: no --config FILE given, and none"
            f" of {self.installed}, {self.local} exists",
        )
        self.assertNotIsInstance(error, usage.UsageError)
