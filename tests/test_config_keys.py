"""
Tests for the key table (L{callback_tw.config.keys}) and what derives from it:
the dataclasses' defaults and the reference C{docs/configuration.md}.
"""

from __future__ import annotations

import dataclasses
import io
import os
from contextlib import redirect_stderr, redirect_stdout

from twisted.trial.unittest import SynchronousTestCase

from callback_tw.config import (
    CallbackConfig,
    ExternalLineConfig,
    HttpConfig,
    LogConfig,
    MediaConfig,
    PeerConfig,
    SipConfig,
    StoreConfig,
)
from callback_tw.config.__main__ import main
from callback_tw.config.keys import KEYS, NO_DEFAULT, SECTIONS, keysOf
from callback_tw.config.reference import markdown
from callback_tw.config.values import Context

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(_REPO, "docs", "configuration.md")

_DATACLASSES = {
    "callback": CallbackConfig,
    "sip": SipConfig,
    "external_line": ExternalLineConfig,
    "media": MediaConfig,
    "peer NAME": PeerConfig,
    "store": StoreConfig,
    "http": HttpConfig,
    "log": LogConfig,
}


def _attributes(key) -> tuple[str, ...]:
    return key.attribute if isinstance(key.attribute, tuple) else (key.attribute,)


class KeyTableTests(SynchronousTestCase):
    """
    The table and the dataclasses agree, and every default is a good value.
    """

    def test_sections(self) -> None:
        """
        Every key belongs to a known section of fixed keys; free-form
        sections have none; no key is declared twice.
        """
        names = [s.name for s in SECTIONS]
        self.assertEqual(len(names), len(set(names)))
        for section in SECTIONS:
            if section.entries is None:
                self.assertIn(section.name, _DATACLASSES)
                self.assertNotEqual(keysOf(section.name), ())
            else:
                self.assertEqual(keysOf(section.name), ())
        self.assertTrue(all(key.section in names for key in KEYS))
        declared = [(key.section, key.name) for key in KEYS]
        self.assertEqual(len(declared), len(set(declared)))

    def test_everyFieldHasOneKey(self) -> None:
        """
        Each field of a section's dataclass is filled by exactly one key.
        """
        for section, cls in _DATACLASSES.items():
            filled = [a for key in keysOf(section) for a in _attributes(key)]
            fields = [f.name for f in dataclasses.fields(cls)]
            self.assertEqual(sorted(filled), sorted(fields), section)

    def test_dataclassDefaults(self) -> None:
        """
        A field's default is its key's default; a key without one fills a
        field without one (it must be given).
        """
        for key in KEYS:
            fields = {f.name: f for f in dataclasses.fields(_DATACLASSES[key.section])}
            for attribute in _attributes(key):
                default = fields[attribute].default
                if key.default is NO_DEFAULT:
                    self.assertIs(default, dataclasses.MISSING, attribute)
                else:
                    self.assertEqual(default, key.default, attribute)

    def test_defaultsParse(self) -> None:
        """
        Each default, written as text, reads back as itself (the prompts
        directory relative to the file's), so leaving a key out and writing
        its default mean the same.
        """
        base = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(base, "prompts"))

        def resolve(host: str) -> str:
            raise OSError(f"no look-up expected for {host!r}")

        context = Context(resolve=resolve, baseDir=base)
        for key in KEYS:
            if key.default is NO_DEFAULT:
                continue
            value = key.parser.parse(key.defaultText, context)
            if key.name == "prompts":
                self.assertEqual(value, os.path.join(base, key.default))
            elif key.name == "url":
                self.assertEqual(
                    value, "sqlite:///" + os.path.join(base, "callbacks.db")
                )
            else:
                self.assertEqual(value, key.default, key.name)

    def test_examplesSayTheDefault(self) -> None:
        """
        A key shown in the sample with an example instead of its default says
        in its help what the default is, or that there is none.
        """
        for key in KEYS:
            if key.example is None:
                continue
            if key.default is NO_DEFAULT:
                self.assertIn("No default.", key.help, key.name)
            else:
                shown = key.defaultText or "empty"
                self.assertIn(f"Default: {shown}.", key.help, key.name)


class ReferenceTests(SynchronousTestCase):
    """
    docs/configuration.md is generated from the table and kept up to date.
    """

    def test_committedIsGenerated(self) -> None:
        """
        The committed reference is exactly what the table generates; when
        this fails, run C{python3 -m callback_tw.config --markdown >
        docs/configuration.md}.
        """
        with open(REFERENCE, encoding="utf-8") as f:
            self.assertEqual(f.read(), markdown())

    def test_everyKeyListed(self) -> None:
        """
        Every section and key is in the reference, with its default.
        """
        text = markdown()
        for section in SECTIONS:
            self.assertIn(f"\n## [{section.name}]\n", text)
        self.assertIn("| `max_calls` | `1000` | a whole number >= 1 |", text)
        self.assertIn("| `registrar` | none |", text)
        self.assertIn("| `rtp_ports` | (empty) |", text)
        for key in KEYS:
            self.assertIn(f"| `{key.name}` |", text)

    def test_command(self) -> None:
        """
        C{python3 -m callback_tw.config --markdown} prints the reference;
        anything else prints the usage and exits with 2.
        """
        out = io.StringIO()
        with redirect_stdout(out):
            self.assertEqual(main(["--markdown"]), 0)
        self.assertEqual(out.getvalue(), markdown())
        err = io.StringIO()
        with redirect_stderr(err):
            self.assertEqual(main([]), 2)
        self.assertIn("--markdown", err.getvalue())
