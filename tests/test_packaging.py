"""
Tests for the packaging: twistd finds the "callback" plugin, the plugin is
cheap to import, and an install ships exactly our files (never a
C{twisted/plugins/__init__.py} that would replace Twisted's own).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial.unittest import SkipTest, SynchronousTestCase

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args: list[str], cwd: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        args,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


class PluginTests(SynchronousTestCase):
    """
    The twistd plugin.
    """

    def test_pluginFound(self) -> None:
        """
        Twisted's plugin system yields exactly one service maker with tapname
        "callback", and it builds its options from L{callback_tw.tap}.
        """
        from callback_tw.tap import Options

        makers = [p for p in getPlugins(IServiceMaker) if p.tapname == "callback"]
        self.assertEqual(len(makers), 1)
        maker = makers[0]
        self.assertIsInstance(maker.options(), Options)
        self.assertTrue(maker.description)

    def test_pluginImportsNothingHeavy(self) -> None:
        """
        twistd imports every plugin on every run: importing ours loads
        neither the server (callback_tw.tap and below) nor sippy.
        """
        result = _run(
            [
                sys.executable,
                "-c",
                "import sys, twisted.plugins.callback_plugin as p;"
                " print(p.__file__);"
                " print(sorted(m for m in sys.modules"
                " if m.startswith(('callback_tw', 'sippy'))))",
            ],
            cwd=_REPO,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.splitlines()[1], "[]")

    def test_noInitInPluginDirectories(self) -> None:
        """
        twisted/ and twisted/plugins/ in the checkout are drop-ins, not
        packages: an __init__.py there would shadow Twisted itself.
        """
        for directory in ("twisted", os.path.join("twisted", "plugins")):
            self.assertFalse(
                os.path.exists(os.path.join(_REPO, directory, "__init__.py")),
                directory,
            )
        self.assertTrue(
            os.path.exists(
                os.path.join(_REPO, "twisted", "plugins", "callback_plugin.py")
            )
        )


class BuildTests(SynchronousTestCase):
    """
    What setup.py puts in an install.
    """

    def build(self) -> set[str]:
        """
        Build into a temporary directory; return the files built, relative
        to it.
        """
        if importlib.util.find_spec("setuptools") is None:
            raise SkipTest("setuptools is not installed")
        out = os.path.abspath(self.mktemp())
        result = _run(
            [sys.executable, "setup.py", "-q", "build_py", "--build-lib", out],
            cwd=_REPO,
            timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        built = set()
        for root, _dirs, files in os.walk(out):
            for name in files:
                built.add(os.path.relpath(os.path.join(root, name), out))
        return built

    def test_installedFiles(self) -> None:
        """
        A build holds every module of callback_tw and its subpackages, the
        shipped prompts, the plugin file in twisted/plugins, and nothing
        else: no __init__.py under twisted/, no tests, no bench.
        """
        built = self.build()
        expected = {os.path.join("twisted", "plugins", "callback_plugin.py")}
        prompts = os.path.join(_REPO, "callback_tw", "media", "prompts")
        for root, _dirs, files in os.walk(prompts):
            for name in files:
                expected.add(os.path.relpath(os.path.join(root, name), _REPO))
        package = os.path.join(_REPO, "callback_tw")
        for root, dirs, files in os.walk(package):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            if "__init__.py" not in files:
                continue
            for name in files:
                if name.endswith(".py"):
                    expected.add(os.path.relpath(os.path.join(root, name), _REPO))
        self.assertEqual(built, expected)

    def test_defaultPromptsShipped(self) -> None:
        """
        The default announcement 00080002 and the ten digits are package
        data, so a configuration without [media] works after an install.
        """
        built = self.build()
        prompts = os.path.join("callback_tw", "media", "prompts")
        names = ["00080002.wav"] + [f"digits/{n}.wav" for n in range(10)]
        for name in names:
            self.assertIn(os.path.join(prompts, *name.split("/")), built)


class InstalledTests(SynchronousTestCase):
    """
    The installed package, seen from outside the checkout as a user sees it
    (what C{pip install .} or C{pip install -e .} must give).
    """

    def setUp(self) -> None:
        try:
            importlib.metadata.distribution("callback_tw")
        except importlib.metadata.PackageNotFoundError:
            raise SkipTest(
                "callback_tw is not installed: run scripts/install -e"
            ) from None
        self.elsewhere = os.path.abspath(self.mktemp())
        os.makedirs(self.elsewhere)

    def test_twistdListsPlugin(self) -> None:
        """
        C{twistd --help} and C{python3 -m twisted --help}, run from another
        directory, list the "callback" subcommand.
        """
        for args in (
            [
                sys.executable,
                "-c",
                "import sys; sys.argv[0] = 'twistd';"
                " from twisted.scripts.twistd import run; run()",
                "--help",
            ],
            [sys.executable, "-m", "twisted", "--help"],
        ):
            result = _run(args, cwd=self.elsewhere)
            self.assertEqual(result.returncode, 0, result.stderr)
            commands = [
                line.split()[0]
                for line in result.stdout.splitlines()
                if line.startswith("    ") and line.strip()
            ]
            self.assertEqual(commands.count("callback"), 1, result.stdout)
            self.assertNotIn("Unable to write to plugin cache", result.stderr)

    def test_importableElsewhere(self) -> None:
        """
        The installed callback_tw imports from another directory, with the
        modules the plugin names.
        """
        result = _run(
            [sys.executable, "-c", "import callback_tw.tap, callback_tw.config"],
            cwd=self.elsewhere,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
