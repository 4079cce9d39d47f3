"""
The sample file C{etc/callback.ini} and the key table
(L{callback_tw.config.keys}) say the same thing: a test fails as soon as one
of them changes without the other.
"""

from __future__ import annotations

import os
import re

from twisted.trial.unittest import SynchronousTestCase

from callback_tw.config import (
    CallbackConfig,
    ExternalLineConfig,
    MediaConfig,
    PeerServer,
    SipConfig,
    StoreConfig,
    loadConfig,
)
from callback_tw.config.keys import KEYS, SECTIONS, keysOf, templateOf
from callback_tw.config.values import PACKAGED_PROMPTS

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(_REPO, "etc", "callback.ini")

# Commented ("; ") or not: optional sections are shown commented out; a
# template section ([peer NAME]) by an example of it ([peer as1]).
_SECTION = re.compile(r"(?:; )?\[([0-9a-z_]+(?: [0-9a-z_.\-]+)?)\]\s*\Z")
_KEY = re.compile(r"(?:; )?([0-9a-z_]+) =(.*)\Z")
# configparser's inline comments: ";" or "#" after whitespace.
_INLINE_COMMENT = re.compile(r"\s[;#]")


def _words(text: str) -> str:
    return " ".join(text.split())


class _Sample:
    """
    What the sample file says about each key and section.

    @ivar sections: section names in the order written.
    @ivar keys: C{(section, key) -> (value, comment)}: the value written
        (commented out or not) and the comment that documents it, the comment
        lines just above it and the comment after it, in single spaces.
    @ivar comments: section name -> all its comment text, in single spaces.
    """

    def __init__(self, text: str) -> None:
        self.sections: list[str] = []
        self.keys: dict[tuple[str, str], tuple[str, str]] = {}
        self.comments: dict[str, str] = {}
        fixed = {s.name for s in SECTIONS if s.entries is None}
        section = None
        above: list[str] = []
        for line in text.splitlines():
            found = _SECTION.match(line)
            if found:
                section = found.group(1)
                template = templateOf(section)
                if template is not None:
                    section = template.name
                self.sections.append(section)
                self.comments[section] = ""
                above = []
                continue
            found = _KEY.match(line)
            if found and section in fixed:
                parts = _INLINE_COMMENT.split(found.group(2), maxsplit=1)
                value = parts[0].strip()
                comment = parts[1] if len(parts) > 1 else ""
                self.keys[(section, found.group(1))] = (
                    value,
                    _words(" ".join(above + [comment])),
                )
                self._comment(section, comment)
                above = []
            elif line.startswith((";", "#")):
                above.append(line.lstrip(";#"))
                self._comment(section, line.lstrip(";#"))
            elif not line.strip():
                above = []

    def _comment(self, section: str | None, text: str) -> None:
        if section is not None:
            self.comments[section] = _words(self.comments[section] + " " + text)


class SampleMatchesTableTests(SynchronousTestCase):
    """
    Every key of the table is in the sample, in its section, with its help
    and its default; the sample has no key the table lacks.
    """

    def setUp(self) -> None:
        with open(SAMPLE, encoding="utf-8") as f:
            self.sample = _Sample(f.read())

    def written(self, section: str, name: str) -> tuple[str, str]:
        """
        The value and comment of C{[section] name} in the sample; fails the
        test when it is not written.
        """
        if (section, name) not in self.sample.keys:
            self.fail(f"[{section}] {name} is not in {SAMPLE}")
        return self.sample.keys[(section, name)]

    def test_sections(self) -> None:
        """
        The sample shows every section, in the table's order, each with its
        help.
        """
        self.assertEqual(self.sample.sections, [s.name for s in SECTIONS])
        for section in SECTIONS:
            self.assertIn(_words(section.help), self.sample.comments[section.name])
            if section.entries is not None:
                self.assertIn(section.entries, self.sample.comments[section.name])

    def test_everyKey(self) -> None:
        """
        Every key of the table is written in its section.
        """
        missing = [
            f"[{key.section}] {key.name}"
            for key in KEYS
            if (key.section, key.name) not in self.sample.keys
        ]
        self.assertEqual(missing, [])

    def test_noUnknownKey(self) -> None:
        """
        The sample has no key that the table lacks (it would not load once
        uncommented).
        """
        known = {(key.section, key.name) for key in KEYS}
        self.assertEqual(sorted(set(self.sample.keys) - known), [])

    def test_help(self) -> None:
        """
        Each key's comment (the lines just above it and the one after it)
        contains its help text.
        """
        for key in KEYS:
            _, comment = self.written(key.section, key.name)
            self.assertIn(_words(key.help), comment, f"[{key.section}] {key.name}")

    def test_defaults(self) -> None:
        """
        Each key is written with its default, or with its example when the
        table gives one (the help then says what the default is).
        """
        for key in KEYS:
            value, _ = self.written(key.section, key.name)
            expected = key.defaultText if key.example is None else key.example
            self.assertEqual(value, expected, f"[{key.section}] {key.name}")


class SampleConfigTests(SynchronousTestCase):
    """
    The shipped etc/callback.ini loads and means what the issue says.
    """

    def test_sampleLoads(self) -> None:
        """
        The sample works out of the box: SIP on 127.0.0.1:5060, IIF on 5080,
        legs to pss = 127.0.0.1:5070, AS as1 = 127.0.0.1:5090 (not
        SIPp's media port 6000), the prompts
        shipped in the package.
        """
        config = loadConfig(SAMPLE)
        self.assertEqual(config.path, SAMPLE)
        self.assertEqual(
            config.callback,
            CallbackConfig(
                listenAddress="0.0.0.0",
                listenPort=5080,
                externalLineMode=False,
                defaultCaller="1000",
                outboundPeer="pss",
                noAnswerTimeout=60.0,
                maxDuration=86400,
                maxCalls=1000,
                shutdownTimeout=5.0,
            ),
        )
        self.assertEqual(
            config.sip,
            SipConfig(
                address="127.0.0.1", port=5060, advertisedAddress="", trace=False
            ),
        )
        self.assertEqual(config.sip.sipHost, "127.0.0.1")
        self.assertEqual(
            config.store,
            StoreConfig(
                url="sqlite:///"
                + os.path.join(os.path.dirname(SAMPLE), "callbacks.db"),
                serverId="",
                requestMemory=86400.0,
                retentionDays=90,
            ),
        )
        self.assertEqual(
            dict(config.peerServers),
            {
                "pss": PeerServer(name="pss", host="127.0.0.1", port=5070),
                "as1": PeerServer(name="as1", host="127.0.0.1", port=5090),
            },
        )
        self.assertEqual(config.outboundPeer.name, "pss")
        self.assertEqual(
            config.media,
            MediaConfig(
                prompts=PACKAGED_PROMPTS,
                defaultAnnId1="00080002",
                ringbackFrequency=425,
                ringbackCadence=(1.0, 4.0),
                rtpPorts=None,
            ),
        )

    def test_sampleDocumentsEveryKey(self) -> None:
        """
        Every key the loader knows is written, with a comment, in the sample
        (the optional sections commented out, as C{; key =}).
        """
        from callback_tw.config.keys import SECTIONS

        with open(SAMPLE, encoding="utf-8") as f:
            text = f.read()
        for section in SECTIONS:
            self.assertIn(f"[{section.name}]", text)
            for key in keysOf(section.name):
                self.assertRegex(text, rf"(?m)^(; )?{key.name} =")

    def test_sampleOptionalSectionsLoad(self) -> None:
        """
        Uncommenting the sample's [external_line] and [users] (with a
        registrar that resolves) gives a working external line mode.
        """
        with open(SAMPLE, encoding="utf-8") as f:
            text = f.read()
        text = text.replace("external_line_mode = no", "external_line_mode = yes")
        head, sep, tail = text.partition("\n; [external_line]\n")
        lines, sep, media = tail.partition("\n[media]\n")
        lines = re.sub(r"(?m)^; (\[users\]$|[0-9a-z_]+ =)", r"\1", lines)
        text = head + "\n[external_line]\n" + lines + sep + media
        path = self.mktemp() + ".ini"
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        config = loadConfig(path, resolve=lambda host: "192.0.2.9")
        self.assertEqual(
            config.externalLine,
            ExternalLineConfig(
                registrarHost="sip.provider.example",
                registrarAddress=("192.0.2.9", 5060),
                proxy=None,
                username="1234567",
                password="secret",
                number="1234567",
                register=True,
                expires=3600,
            ),
        )
        self.assertEqual(dict(config.users), {"100": "secret100", "101": "secret101"})
