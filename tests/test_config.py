"""
Tests for L{callback_tw.config}: what an operator sees when the file is good
(the values the server runs with) and when it is bad (one line naming file,
section and key): the INI syntax, the defaults, [callback] and [sip].  The
other sections: tests.test_config_sections; the sample file:
tests.test_config_sample; the key table: tests.test_config_keys.
"""

from __future__ import annotations

import dataclasses
import operator
import os

from twisted.trial.unittest import SynchronousTestCase

from callback_tw.config import (
    CallbackConfig,
    ConfigError,
    SipConfig,
    StoreConfig,
    loadConfig,
)
from tests.confighelpers import MINIMAL, ConfigTestMixin, render


class DefaultsTests(ConfigTestMixin, SynchronousTestCase):
    """
    Keys left out take the documented defaults.
    """

    def test_defaults(self) -> None:
        """
        A file with only the keys that have no default gets every other
        value from the defaults listed in the sample.
        """
        config = self.load()
        self.assertEqual(
            config.callback,
            CallbackConfig(defaultCaller="1000", outboundPeer="pss"),
        )
        self.assertEqual(config.callback.listenPort, 5080)
        self.assertEqual(config.store.requestMemory, 86400.0)
        self.assertEqual(config.store.retentionDays, 90)
        self.assertEqual(config.store.serverId, "")
        self.assertEqual(
            config.store.url,
            "sqlite:///"
            + os.path.join(
                os.path.dirname(os.path.abspath(config.path)), "callbacks.db"
            ),
        )
        self.assertEqual(config.callback.shutdownTimeout, 5.0)
        self.assertEqual(config.sip, SipConfig(address="127.0.0.1"))
        self.assertEqual(config.sip.port, 5060)
        self.assertEqual(config.media.defaultAnnId1, "00080002")
        self.assertEqual(config.media.ringbackCadence, (1.0, 4.0))
        self.assertIsNone(config.media.rtpPorts)

    def test_frozen(self) -> None:
        """
        The configuration cannot be changed in place, only replaced.
        """
        config = self.load()
        self.assertRaises(
            dataclasses.FrozenInstanceError, setattr, config.sip, "port", 1
        )
        self.assertRaises(TypeError, operator.setitem, config.peerServers, "x", None)
        changed = dataclasses.replace(
            config, sip=dataclasses.replace(config.sip, port=0)
        )
        self.assertEqual((changed.sip.port, config.sip.port), (0, 5060))


class SyntaxTests(ConfigTestMixin, SynchronousTestCase):
    """
    The INI syntax: comments, case, duplicates, unknown names.
    """

    def test_unreadable(self) -> None:
        """
        A missing file is one line: the path and the OS reason.
        """
        path = os.path.join(self.mktemp(), "x.ini")
        error = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(
            str(error), f"{path}: cannot read: [Errno 2] No such file or directory"
        )

    def test_directory(self) -> None:
        """
        A directory is not a configuration file.
        """
        path = self.mktemp()
        os.makedirs(path)
        error = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(str(error), f"{path}: cannot read: [Errno 21] Is a directory")

    def test_notText(self) -> None:
        """
        Bytes that are not UTF-8 are reported, not a UnicodeDecodeError.
        """
        path = self.writeConfig("")
        with open(path, "wb") as f:
            f.write(b"[callback]\ndefault_caller = \xff\xfe\n")
        error = self.assertRaises(ConfigError, loadConfig, path)
        self.assertIn(f"{path}: cannot read: not UTF-8 text", str(error))

    def test_inlineComments(self) -> None:
        """
        C{;} and C{#} after whitespace start a comment; an empty value with
        a comment is empty; C{#} inside a value stays.
        """
        path = self.writeConfig(
            "# comment\n; comment\n"
            "[callback]\n"
            "default_caller = +1#00   ; the From user\n"
            "outbound_peer = pss # there\n"
            "[sip]\naddress = 127.0.0.1\n"
            "advertised_address =     ; empty\n"
            "[peer_servers]\npss = 127.0.0.1:5070 ; peer\n"
        )
        config = loadConfig(path)
        self.assertEqual(config.callback.defaultCaller, "+1#00")
        self.assertEqual(config.callback.outboundPeer, "pss")
        self.assertEqual(config.sip.advertisedAddress, "")
        self.assertEqual(config.outboundPeer.port, 5070)

    def test_keysCaseInsensitive(self) -> None:
        """
        Key names and peer names are case-insensitive.
        """
        config = self.load(
            {
                "callback": {"Max_Calls": "7", "outbound_peer": "PSS"},
                "peer_servers": {"pss": None, "PSS": "127.0.0.1:5070"},
            }
        )
        self.assertEqual(config.callback.maxCalls, 7)
        self.assertEqual(config.outboundPeer.name, "pss")

    def test_unknownSection(self) -> None:
        """
        A misspelt section is an error naming it.
        """
        error = self.assertConfigError(
            {"callbak": {"max_calls": "3"}}, ": [callbak]: unknown section"
        )
        self.assertEqual((error.section, error.key), ("callbak", None))

    def test_defaultSectionIsNotMagic(self) -> None:
        """
        [DEFAULT] is not silently merged into every section.
        """
        self.assertConfigError(
            {"DEFAULT": {"max_calls": "3"}}, "[DEFAULT]: unknown section"
        )

    def test_externalLineKeyUnknown(self) -> None:
        """
        A misspelt key in [external_line] is named, with a hint.
        """
        self.assertConfigError(
            {"external_line": {"user": "x"}},
            "[external_line] user: unknown key (did you mean username?)",
        )

    def test_unknownKey(self) -> None:
        """
        A misspelt key is an error naming section and key, with a hint.
        """
        error = self.assertConfigError(
            {"callback": {"max_call": "3"}},
            "[callback] max_call: unknown key (did you mean max_calls?)",
        )
        self.assertEqual((error.section, error.key), ("callback", "max_call"))

    def test_duplicateKey(self) -> None:
        """
        A key given twice in a section is an error, not "last one wins".
        """
        path = self.writeConfig("[callback]\ndefault_caller = 1\ndefault_caller = 2\n")
        error = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(
            str(error), f"{path}: [callback] default_caller: line 3: key given twice"
        )

    def test_duplicateSection(self) -> None:
        """
        A section given twice is an error.
        """
        path = self.writeConfig("[sip]\nport = 1\n[sip]\nport = 2\n")
        error = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(str(error), f"{path}: [sip]: line 3: section given twice")

    def test_keyBeforeSection(self) -> None:
        """
        A key before any section header is reported with its line.
        """
        path = self.writeConfig("port = 5060\n[sip]\n")
        error = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(
            str(error), f"{path}: line 1: a key before any [section]: 'port = 5060'"
        )

    def test_notKeyValue(self) -> None:
        """
        A line that is not C{key = value} is reported; C{:} does not separate
        keys from values (it separates host from port).
        """
        path = self.writeConfig("[sip]\nport: 5060\n")
        error = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(
            str(error), f"{path}: line 2: expected 'key = value', got 'port: 5060\\n'"
        )

    def test_continuationLineIsOneLineError(self) -> None:
        """
        An indented line continues the value above; the bad value it makes is
        still reported on one line.
        """
        path = self.writeConfig(
            render(MINIMAL).replace(
                "default_caller = 1000\n", "default_caller = 1000\n  2000\n"
            )
        )
        error = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(
            str(error),
            f"{path}: [callback] default_caller: must be 1-31 characters from"
            " digits, letters and + * # . - _, got '1000\\n2000'",
        )


class CallbackSectionTests(ConfigTestMixin, SynchronousTestCase):
    """
    [callback] values are checked.
    """

    def test_values(self) -> None:
        """
        Every [callback] key is read into its field with its type.
        """
        config = self.load(
            {
                "callback": {
                    "listen_address": "127.0.0.1",
                    "listen_port": "0",
                    "external_line_mode": "off",
                    "no_answer_timeout": "12.5",
                    "max_duration": "60",
                    "max_calls": "20",
                    "shutdown_timeout": "0.5",
                    "max_lag": "0.25",
                }
            }
        )
        self.assertEqual(
            config.callback,
            CallbackConfig(
                listenAddress="127.0.0.1",
                listenPort=0,
                externalLineMode=False,
                defaultCaller="1000",
                outboundPeer="pss",
                noAnswerTimeout=12.5,
                maxDuration=60,
                maxCalls=20,
                shutdownTimeout=0.5,
                maxLag=0.25,
            ),
        )

    def test_maxCallsNotANumber(self) -> None:
        """
        The error names file, section and key and quotes the value.
        """
        error = self.assertConfigError({"callback": {"max_calls": "abc"}}, "")
        self.assertEqual(
            str(error),
            f"{error.path}: [callback] max_calls: must be a whole number >= 1,"
            " got 'abc'",
        )

    def test_wholeNumbers(self) -> None:
        """
        max_calls and max_duration are whole numbers >= 1.
        """
        for key in ("max_calls", "max_duration"):
            for bad in ("0", "-1", "1.5", "", "1e3"):
                self.assertConfigError(
                    {"callback": {key: bad}},
                    f"[callback] {key}: must be a whole number >= 1, got {bad!r}",
                )

    def test_seconds(self) -> None:
        """
        Timeouts are numbers of seconds > 0; nan and inf are not numbers.
        """
        keys = (
            ("callback", "no_answer_timeout"),
            ("store", "request_memory"),
            ("callback", "shutdown_timeout"),
        )
        for section, key in keys:
            for bad in ("0", "-5", "soon", "nan", "inf"):
                self.assertConfigError(
                    {section: {key: bad}},
                    f"[{section}] {key}: must be a number of seconds > 0, got {bad!r}",
                )

    def test_maxLag(self) -> None:
        """
        max_lag (the overload guard) is seconds >= 0, 0 turning it off;
        0.1 by default.
        """
        for bad in ("-0.1", "soon", "nan"):
            self.assertConfigError(
                {"callback": {"max_lag": bad}},
                f"[callback] max_lag: must be a number of seconds >= 0, got {bad!r}",
            )
        self.assertEqual(self.load({"callback": {"max_lag": "0"}}).callback.maxLag, 0)
        self.assertEqual(self.load({}).callback.maxLag, 0.1)

    def test_listenPort(self) -> None:
        """
        listen_port is 0 (any free port) to 65535.
        """
        for bad in ("65536", "-1", "http", "80.5"):
            self.assertConfigError(
                {"callback": {"listen_port": bad}},
                "[callback] listen_port: must be a UDP port from 1 to 65535"
                f" (0: any free port), got {bad!r}",
            )
        self.assertEqual(
            self.load({"callback": {"listen_port": "65535"}}).callback.listenPort,
            65535,
        )

    def test_listenAddress(self) -> None:
        """
        listen_address is an IPv4 literal or a host name resolved at load.
        """
        config = self.load({"callback": {"listen_address": "localhost"}})
        self.assertEqual(config.callback.listenAddress, "127.0.0.1")
        self.assertConfigError(
            {"callback": {"listen_address": "::1"}},
            "[callback] listen_address: must be an IPv4 address or a host name,"
            " got '::1'",
        )

    def test_booleans(self) -> None:
        """
        Booleans are yes/no/true/false/on/off/1/0 in any case; anything
        else is an error.
        """
        for no in ("no", "NO", "false", "Off", "0"):
            config = self.load({"sip": {"trace": no}})
            self.assertIs(config.sip.trace, False)
        for yes in ("yes", "True", "ON", "1"):
            config = self.load({"sip": {"trace": yes}})
            self.assertIs(config.sip.trace, True)
        self.assertConfigError(
            {"sip": {"trace": "maybe"}},
            "[sip] trace: must be yes/no/true/false/on/off/1/0, got 'maybe'",
        )

    def test_externalLineModeNeedsSection(self) -> None:
        """
        external_line_mode = yes without an [external_line] section is
        refused with a clear reason.
        """
        error = self.assertConfigError({"callback": {"external_line_mode": "yes"}}, "")
        self.assertEqual(
            str(error),
            f"{error.path}: [callback] external_line_mode: yes needs an"
            " [external_line] section (registrar, username, password, number)",
        )

    def test_defaultCallerRequired(self) -> None:
        """
        default_caller may not be empty or missing in server-to-server mode.
        """
        for value in ("", None):
            self.assertConfigError(
                {"callback": {"default_caller": value}},
                "[callback] default_caller: must not be empty when"
                " external_line_mode = no",
            )

    def test_defaultCallerSipUserSafe(self) -> None:
        """
        default_caller is 1-31 SIP-user-safe characters.
        """
        good = "+Ab1*#.-_"
        config = self.load({"callback": {"default_caller": good}})
        self.assertEqual(config.callback.defaultCaller, good)
        for bad in ("10 00", "a@b", "x;y", "1" * 32, "caf\u00e9"):
            self.assertConfigError(
                {"callback": {"default_caller": bad}},
                "[callback] default_caller: must be 1-31 characters from digits,"
                f" letters and + * # . - _, got {bad!r}",
            )

    def test_outboundPeerUnknown(self) -> None:
        """
        outbound_peer must name a configured peer server.
        """
        self.assertConfigError(
            {"callback": {"outbound_peer": "psss"}},
            "[callback] outbound_peer: 'psss' is not in [peer_servers]"
            " (one of: as1, pss)",
        )

    def test_outboundPeerMissing(self) -> None:
        """
        outbound_peer has no default.
        """
        self.assertConfigError(
            {"callback": {"outbound_peer": None}},
            "[callback] outbound_peer: must name the peer server that receives"
            " the legs",
        )


class SipSectionTests(ConfigTestMixin, SynchronousTestCase):
    """
    [sip] values are checked; the address put on the wire is concrete.
    """

    def test_advertisedAddress(self) -> None:
        """
        Binding the wildcard is fine when advertised_address says what to
        write in Via/Contact/SDP.
        """
        config = self.load(
            {"sip": {"address": "0.0.0.0", "advertised_address": "192.0.2.7"}}
        )
        self.assertEqual(config.sip.address, "0.0.0.0")
        self.assertEqual(config.sip.sipHost, "192.0.2.7")

    def test_bothWildcard(self) -> None:
        """
        A wildcard address without advertised_address is an error naming
        advertised_address.
        """
        for changes in (
            {"address": "0.0.0.0"},
            {"address": None},
            {"address": "0.0.0.0", "advertised_address": ""},
        ):
            self.assertConfigError(
                {"sip": changes},
                "[sip] advertised_address: must be set when address is '0.0.0.0'",
            )

    def test_advertisedWildcard(self) -> None:
        """
        Advertising the wildcard is never right.
        """
        self.assertConfigError(
            {"sip": {"advertised_address": "0.0.0.0"}},
            "[sip] advertised_address: must be an address peers can reach,"
            " got '0.0.0.0'",
        )

    def test_addressResolved(self) -> None:
        """
        Host names are resolved to IPv4 literals when the file is loaded.
        """
        config = self.load({"sip": {"address": "localhost"}})
        self.assertEqual(config.sip.address, "127.0.0.1")

    def test_badAddress(self) -> None:
        """
        An address that does not resolve is an error naming the key.
        """
        self.assertConfigError(
            {"sip": {"address": "no-such-host.invalid"}},
            "[sip] address: cannot resolve 'no-such-host.invalid':",
        )

    def test_port(self) -> None:
        """
        port is 0 (any free port) to 65535.
        """
        self.assertEqual(self.load({"sip": {"port": "0"}}).sip.port, 0)
        self.assertConfigError(
            {"sip": {"port": "70000"}},
            "[sip] port: must be a UDP port from 1 to 65535 (0: any free port),"
            " got '70000'",
        )


class StoreSectionTests(ConfigTestMixin, SynchronousTestCase):
    """
    [store]: where callbacks are kept, checked at load.
    """

    def test_values(self) -> None:
        """
        Every [store] key is read into its field; a PostgreSQL URL is kept as
        written, and never shown by the configuration's repr.
        """
        url = "postgresql://cb:s3cret@db.example:5432/callback"
        config = self.load(
            {
                "store": {
                    "url": url,
                    "server_id": "cb-a:5060",
                    "request_memory": "600",
                    "retention_days": "30",
                }
            }
        )
        self.assertEqual(
            config.store,
            StoreConfig(
                url=url, serverId="cb-a:5060", requestMemory=600.0, retentionDays=30
            ),
        )
        self.assertNotIn("s3cret", repr(config))

    def test_relativeSqlite(self) -> None:
        """
        A relative SQLite path is relative to the configuration file's
        directory; an absolute one (four slashes) is kept.
        """
        config = self.load({"store": {"url": "sqlite:///data/cb.db"}})
        base = os.path.dirname(os.path.abspath(config.path))
        self.assertEqual(
            config.store.url, "sqlite:///" + os.path.join(base, "data", "cb.db")
        )
        config = self.load({"store": {"url": "sqlite:////var/lib/cb.db"}})
        self.assertEqual(config.store.url, "sqlite:////var/lib/cb.db")

    def test_badURL(self) -> None:
        """
        Another scheme is refused with one line that shows the URL without
        its password.
        """
        error = self.assertConfigError(
            {"store": {"url": "mysql://cb:s3cret@db/callback"}},
            "[store] url: ",
        )
        self.assertNotIn("s3cret", str(error))
        self.assertIn("mysql://cb:***@db/callback", str(error))
        self.assertNotIn("\n", str(error))

    def test_retentionDays(self) -> None:
        """
        retention_days is a whole number of days >= 1.
        """
        for bad in ("0", "1.5", "forever"):
            self.assertConfigError(
                {"store": {"retention_days": bad}},
                f"[store] retention_days: must be a whole number >= 1, got {bad!r}",
            )

    def test_serverIdNoBlanks(self) -> None:
        """
        A server_id with a blank is refused.
        """
        self.assertConfigError(
            {"store": {"server_id": "a b"}}, "[store] server_id: must be at most"
        )

    def test_requestMemoryMoved(self) -> None:
        """
        [callback] request_memory, from before the store, is refused with a
        line that says where the key is now.
        """
        error = self.assertConfigError(
            {"callback": {"request_memory": "3600"}},
            "[callback] request_memory: unknown key (moved to [store]"
            " request_memory)",
        )
        self.assertNotIn("\n", str(error))
