"""
Tests for L{callback_tw.config}: the per-peer sections C{[peer NAME]} and
C{[callback] signature_window}.
"""

from __future__ import annotations

import os
import re

from twisted.trial.unittest import SynchronousTestCase

from callback_tw.config import PeerConfig, loadConfig
from tests.confighelpers import ConfigTestMixin
from tests.test_config_sample import SAMPLE

SECRET = "as1-inline-secret-0123456789"


class PeerSectionTests(ConfigTestMixin, SynchronousTestCase):
    """
    C{[peer NAME]}: what one peer of C{[peer_servers]} may do.
    """

    def test_defaults(self) -> None:
        """
        Every peer has its settings, with the defaults when the file has no
        section for it: commands for every peer but the outbound peer, no key,
        no patterns, no limits of its own.
        """
        config = self.load()
        self.assertEqual(
            dict(config.peers),
            {
                "pss": PeerConfig(
                    commands=False,
                    key=None,
                    allow=(),
                    deny=(),
                    maxCalls=0,
                    rate=0.0,
                    maxDuration=0,
                ),
                "as1": PeerConfig(commands=True),
            },
        )
        self.assertEqual(config.callback.signatureWindow, 30.0)

    def test_values(self) -> None:
        """
        Every key of a section is read; patterns are split on commas.
        """
        config = self.load(
            {
                "peer as1": {
                    "commands": "yes",
                    "key": SECRET,
                    "allow": "+49*, 0[1-9]*",
                    "deny": "0900*,00*, +882*, *#*",
                    "max_calls": "100",
                    "rate": "2.5",
                    "max_duration": "3600",
                },
                "callback": {"signature_window": "5"},
            }
        )
        self.assertEqual(
            config.peers["as1"],
            PeerConfig(
                commands=True,
                key=SECRET.encode(),
                allow=("+49*", "0[1-9]*"),
                deny=("0900*", "00*", "+882*", "*#*"),
                maxCalls=100,
                rate=2.5,
                maxDuration=3600,
            ),
        )
        self.assertEqual(config.callback.signatureWindow, 5.0)

    def test_outboundPeerMayBeAllowed(self) -> None:
        """
        The outbound peer may send commands when its section says so, and any
        other peer may be refused them.
        """
        config = self.load(
            {"peer pss": {"commands": "yes"}, "peer as1": {"commands": "no"}}
        )
        self.assertTrue(config.peers["pss"].commands)
        self.assertFalse(config.peers["as1"].commands)

    def test_nameCaseInsensitive(self) -> None:
        """
        The name in the section's title is case-insensitive, like the names
        of C{[peer_servers]}.
        """
        config = self.load({"peer AS1": {"max_calls": "3"}})
        self.assertEqual(config.peers["as1"].maxCalls, 3)

    def test_unknownKey(self) -> None:
        """
        A misspelt key is named with its section and a hint.
        """
        error = self.assertConfigError(
            {"peer as1": {"alow": "1*"}},
            "[peer as1] alow: unknown key (did you mean allow?)",
        )
        self.assertEqual((error.section, error.key), ("peer as1", "alow"))

    def test_unknownPeer(self) -> None:
        """
        A section for a name that is not a peer server is an error listing
        the peer servers.
        """
        self.assertConfigError(
            {"peer as2": {"max_calls": "3"}},
            "[peer as2]: 'as2' is not in [peer_servers] (one of: as1, pss)",
        )

    def test_sameSectionTwice(self) -> None:
        """
        Two sections for one peer (names differing in case only) are an
        error, not "last one wins".
        """
        self.assertConfigError(
            {"peer as1": {"max_calls": "3"}, "peer AS1": {"max_calls": "4"}},
            "[peer AS1]: section given twice ([peer as1])",
        )

    def test_badValues(self) -> None:
        """
        Each key's rule is checked, with one line naming section and key.
        """
        cases = [
            ("commands", "maybe", "[peer as1] commands: must be yes/no"),
            ("max_calls", "-1", "[peer as1] max_calls: must be a whole number >= 0"),
            ("rate", "fast", "[peer as1] rate: must be a number of events per"),
            ("rate", "-2", "[peer as1] rate: must be a number of events per"),
            ("allow", "1*,,2*", "[peer as1] allow: empty pattern in '1*,,2*'"),
            ("deny", "0 900*", "[peer as1] deny: a pattern must not contain blanks"),
            ("max_duration", "x", "[peer as1] max_duration: must be a whole number"),
        ]
        for key, value, expected in cases:
            self.assertConfigError({"peer as1": {key: value}}, expected)

    def test_maxDurationCapped(self) -> None:
        """
        A peer's max_duration cannot exceed the server's.
        """
        self.assertConfigError(
            {"peer as1": {"max_duration": "601"}, "callback": {"max_duration": "600"}},
            "[peer as1] max_duration: must be at most [callback] max_duration"
            " (600), got 601",
        )
        config = self.load(
            {"peer as1": {"max_duration": "600"}, "callback": {"max_duration": "600"}}
        )
        self.assertEqual(config.peers["as1"].maxDuration, 600)

    def test_keyFileRelative(self) -> None:
        """
        C{key = file:NAME} reads the key from a file beside the configuration
        file; one trailing line end is removed.
        """
        path = self.writeConfig("")
        with open(os.path.join(os.path.dirname(path), "as1.key"), "wb") as f:
            f.write(b"0123456789abcdef-file\n")
        text = (
            "[callback]\ndefault_caller = 1000\noutbound_peer = pss\n"
            "[sip]\naddress = 127.0.0.1\n"
            "[peer_servers]\npss = 127.0.0.1:5070\nas1 = 127.0.0.1:6000\n"
            "[peer as1]\nkey = file:as1.key\n"
        )
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        config = loadConfig(path)
        self.assertEqual(config.peers["as1"].key, b"0123456789abcdef-file")

    def test_keyErrors(self) -> None:
        """
        A missing key file or a short key is a one-line error that never
        quotes the secret.
        """
        error = self.assertConfigError(
            {"peer as1": {"key": "file:nowhere.key"}}, "[peer as1] key: key file "
        )
        self.assertIn("nowhere.key", str(error))
        error = self.assertConfigError(
            {"peer as1": {"key": "short-secret"}},
            "[peer as1] key: inline key: 12 bytes, at least 16 are needed",
        )
        self.assertNotIn("short-secret", str(error))

    def test_secretNotInRepr(self) -> None:
        """
        The key is not shown in any repr of the configuration.
        """
        config = self.load({"peer as1": {"key": SECRET}})
        self.assertNotIn(SECRET, repr(config))
        self.assertNotIn(SECRET, repr(config.peers["as1"]))

    def test_signatureWindow(self) -> None:
        """
        C{signature_window} is a number of seconds > 0.
        """
        self.assertConfigError(
            {"callback": {"signature_window": "0"}},
            "[callback] signature_window: must be a number of seconds > 0",
        )


class SamplePeerSectionTests(SynchronousTestCase):
    """
    The sample's commented C{[peer as1]} example is a working section.
    """

    def test_exampleLoads(self) -> None:
        """
        Uncommenting the example (with its key file written) gives the
        settings its comments describe.
        """
        with open(SAMPLE, encoding="utf-8") as f:
            text = f.read()
        head, sep, tail = text.partition("\n; [peer as1]\n")
        section, sep2, rest = tail.partition("\n; [external_line]\n")
        section = re.sub(r"(?m)^; ([0-9a-z_]+ =)", r"\1", section)
        text = head + "\n[peer as1]\n" + section + sep2 + rest
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, "as1.key"), "w") as f:
            f.write("0123456789abcdef0123\n")
        path = os.path.join(directory, "callback.ini")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        config = loadConfig(path)
        self.assertEqual(
            config.peers["as1"],
            PeerConfig(
                commands=True,
                key=b"0123456789abcdef0123",
                allow=("+49*", "0[1-9]*"),
                deny=("0900*", "00*", "+882*", "*#*"),
                maxCalls=100,
                rate=20.0,
                maxDuration=3600,
                responseDetails=True,
            ),
        )
        self.assertFalse(config.peers["pss"].commands)
