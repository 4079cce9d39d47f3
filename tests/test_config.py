"""
Tests for L{callback_tw.config}: what an operator sees when the file is good
(the values the server runs with) and when it is bad (one line naming file,
section and key).
"""

from __future__ import annotations

import dataclasses
import operator
import os
import socket

from twisted.trial.unittest import SynchronousTestCase

from callback_tw.config import (
    CallbackConfig,
    Config,
    ConfigError,
    ExternalLineConfig,
    MediaConfig,
    PeerServer,
    SipConfig,
    loadConfig,
)

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(_REPO, "etc", "callback.ini")

# The smallest good file: every section/key not written takes its default.
MINIMAL = {
    "callback": {"default_caller": "1000", "outbound_peer": "pss"},
    "sip": {"address": "127.0.0.1"},
    "peer_servers": {"pss": "127.0.0.1:5070", "as1": "127.0.0.1:6000"},
}


def _render(sections: dict[str, dict[str, str]]) -> str:
    lines = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {value}" for key, value in keys.items())
    return "\n".join(lines) + "\n"


class _ConfigTestMixin:
    def writeConfig(self, text: str, name: str = "callback.ini") -> str:
        directory = self.mktemp()
        os.makedirs(directory)
        # The default [media] prompts: a "prompts" folder beside the file.
        os.makedirs(os.path.join(directory, "prompts"))
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def writeConfigIn(self, directory: str, text: str) -> str:
        """
        Write a configuration file into an existing C{directory}, under a
        relative path when the working directory allows it.
        """
        path = os.path.join(directory, "other.ini")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return os.path.relpath(path)

    def load(self, changes: dict[str, dict[str, str | None]] | None = None) -> Config:
        """
        Load MINIMAL with C{changes} applied (a value of None removes a key).
        """
        sections = {name: dict(keys) for name, keys in MINIMAL.items()}
        for name, keys in (changes or {}).items():
            section = sections.setdefault(name, {})
            for key, value in keys.items():
                if value is None:
                    section.pop(key, None)
                else:
                    section[key] = value
        return loadConfig(self.writeConfig(_render(sections)))

    def assertConfigError(
        self, changes: dict[str, dict[str, str | None]], expected: str
    ) -> ConfigError:
        """
        Loading MINIMAL with C{changes} fails with one line that names the
        file and contains C{expected}.
        """
        error = self.assertRaises(ConfigError, self.load, changes)
        message = str(error)
        self.assertNotIn("\n", message)
        self.assertTrue(message.startswith(error.path + ": "), message)
        self.assertIn(expected, message)
        return error


class DefaultsTests(_ConfigTestMixin, SynchronousTestCase):
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
        self.assertEqual(config.callback.requestMemory, 3600.0)
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


class SyntaxTests(_ConfigTestMixin, SynchronousTestCase):
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
            _render(MINIMAL).replace(
                "default_caller = 1000\n", "default_caller = 1000\n  2000\n"
            )
        )
        error = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(
            str(error),
            f"{path}: [callback] default_caller: must be 1-31 characters from"
            " digits, letters and + * # . - _, got '1000\\n2000'",
        )


class CallbackSectionTests(_ConfigTestMixin, SynchronousTestCase):
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
                    "request_memory": "10",
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
                requestMemory=10.0,
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
        keys = ("no_answer_timeout", "request_memory", "shutdown_timeout")
        for key in keys:
            for bad in ("0", "-5", "soon", "nan", "inf"):
                self.assertConfigError(
                    {"callback": {key: bad}},
                    f"[callback] {key}: must be a number of seconds > 0, got {bad!r}",
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


class SipSectionTests(_ConfigTestMixin, SynchronousTestCase):
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


class PeerServersTests(_ConfigTestMixin, SynchronousTestCase):
    """
    [peer_servers]: name = host[:port], resolved at load.
    """

    def test_hostWithoutPort(self) -> None:
        """
        Without a port, IIF datagrams are accepted from any port of the host
        and SIP goes to 5060.
        """
        config = self.load({"peer_servers": {"as2": "127.0.0.2"}})
        peer = config.peerServers["as2"]
        self.assertEqual(peer, PeerServer(name="as2", host="127.0.0.2", port=None))
        self.assertEqual(peer.sipPort, 5060)
        self.assertIs(config.peerFor("127.0.0.2", 40000), peer)

    def test_peerFor(self) -> None:
        """
        A configured port must match exactly; other hosts are strangers.
        """
        config = self.load()
        self.assertEqual(config.peerFor("127.0.0.1", 6000).name, "as1")
        self.assertEqual(config.peerFor("127.0.0.1", 5070).name, "pss")
        self.assertIsNone(config.peerFor("127.0.0.1", 6001))
        self.assertIsNone(config.peerFor("127.0.0.2", 6000))

    def test_hostNameResolved(self) -> None:
        """
        A host name is resolved to an IP literal at load.
        """
        config = self.load({"peer_servers": {"pss": "localhost:5070"}})
        self.assertEqual(
            config.outboundPeer, PeerServer(name="pss", host="127.0.0.1", port=5070)
        )

    def test_resolverUsedOnce(self) -> None:
        """
        Resolution goes through the given resolver, at load only.
        """
        asked = []

        def resolve(host: str) -> str:
            asked.append(host)
            return "192.0.2.1"

        path = self.writeConfig(
            _render(MINIMAL).replace("pss = 127.0.0.1", "pss = pss.example")
        )
        config = loadConfig(path, resolve=resolve)
        self.assertEqual(asked, ["pss.example"])
        self.assertEqual(config.outboundPeer.host, "192.0.2.1")

    def test_unresolvable(self) -> None:
        """
        A host that does not resolve is an error naming [peer_servers] <name>.
        """

        def resolve(host: str) -> str:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        path = self.writeConfig(
            _render(MINIMAL).replace("as1 = 127.0.0.1", "as1 = as.example")
        )
        error = self.assertRaises(ConfigError, loadConfig, path, resolve=resolve)
        self.assertEqual(
            str(error),
            f"{path}: [peer_servers] as1: cannot resolve 'as.example':"
            " Name or service not known",
        )

    def test_unresolvableForReal(self) -> None:
        """
        The default resolver turns a resolution failure into the same error.
        """
        self.assertConfigError(
            {"peer_servers": {"as1": "no-such-host.invalid:6000"}},
            "[peer_servers] as1: cannot resolve 'no-such-host.invalid':",
        )

    def test_badValues(self) -> None:
        """
        Ports are 1-65535, hosts IPv4, values not empty.
        """
        for bad in ("127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:", "127.0.0.1:x"):
            self.assertConfigError(
                {"peer_servers": {"as1": bad}},
                "[peer_servers] as1: must be host[:port], port from 1 to 65535,"
                f" got {bad!r}",
            )
        for bad in ("", ":6000"):
            self.assertConfigError(
                {"peer_servers": {"as1": bad}},
                f"[peer_servers] as1: must be host[:port], got {bad!r}",
            )
        self.assertConfigError(
            {"peer_servers": {"as1": "[::1]:6000"}},
            "[peer_servers] as1: must be host[:port] with an IPv4 host",
        )
        self.assertConfigError(
            {"peer_servers": {"as1": "0.0.0.0:6000"}},
            "[peer_servers] as1: must be a concrete address, got '0.0.0.0:6000'",
        )

    def test_badName(self) -> None:
        """
        Peer names are plain words, so outbound_peer can name them.
        """
        self.assertConfigError(
            {"peer_servers": {"my peer": "127.0.0.1"}},
            "[peer_servers] my peer: a peer server name may use only letters,"
            " digits, _ . -",
        )

    def test_atLeastOne(self) -> None:
        """
        A server without peer servers could never be used: error.
        """
        path = self.writeConfig(
            "[callback]\ndefault_caller = 1\noutbound_peer = pss\n"
            "[sip]\naddress = 127.0.0.1\n[peer_servers]\n"
        )
        error = self.assertRaises(ConfigError, loadConfig, path)
        self.assertIn(
            f"{path}: [peer_servers]: at least one peer server is needed", str(error)
        )


class MediaSectionTests(_ConfigTestMixin, SynchronousTestCase):
    """
    [media] values are checked.
    """

    def test_values(self) -> None:
        """
        Every [media] key is read into its field with its type.
        """
        prompts = os.path.abspath(self.mktemp())
        os.makedirs(prompts)
        config = self.load(
            {
                "media": {
                    "prompts": prompts,
                    "default_ann_id1": "",
                    "ringback_frequency": "0",
                    "ringback_cadence": "0.4, 0.2",
                    "rtp_ports": "10000-20000",
                }
            }
        )
        self.assertEqual(
            config.media,
            MediaConfig(
                prompts=prompts,
                defaultAnnId1="",
                ringbackFrequency=0,
                ringbackCadence=(0.4, 0.2),
                rtpPorts=(10000, 20000),
            ),
        )

    def test_promptsRelativeToFile(self) -> None:
        """
        A relative prompts path is relative to the configuration file's
        directory, whatever the working directory, and stored absolute.
        """
        config = self.load()
        directory = os.path.dirname(os.path.abspath(config.path))
        os.makedirs(os.path.join(directory, "sounds", "en"))
        cwd = os.getcwd()
        self.addCleanup(os.chdir, cwd)
        os.chdir(os.path.dirname(directory))
        config = loadConfig(
            self.writeConfigIn(
                directory, _render(MINIMAL) + "[media]\nprompts = sounds/en\n"
            )
        )
        self.assertEqual(config.media.prompts, os.path.join(directory, "sounds", "en"))
        self.assertTrue(os.path.isabs(config.media.prompts))

    def test_promptsMissing(self) -> None:
        """
        A prompts directory that does not exist is an error naming it.
        """
        error = self.assertConfigError({"media": {"prompts": "nowhere"}}, "")
        expected = os.path.join(os.path.dirname(os.path.abspath(error.path)), "nowhere")
        self.assertEqual(
            str(error),
            f"{error.path}: [media] prompts: no such directory: {expected!r}",
        )

    def test_annId(self) -> None:
        """
        default_ann_id1 is exactly 8 digits or empty.
        """
        for bad in ("0008000", "000800021", "0008000a"):
            self.assertConfigError(
                {"media": {"default_ann_id1": bad}},
                f"[media] default_ann_id1: must be exactly 8 digits or empty,"
                f" got {bad!r}",
            )

    def test_ringback(self) -> None:
        """
        ringback_frequency is 0..3999 Hz; ringback_cadence is on,off seconds.
        """
        self.assertConfigError(
            {"media": {"ringback_frequency": "4000"}},
            "[media] ringback_frequency: must be 0 (no ringback) or a tone from"
            " 1 to 3999 Hz, got '4000'",
        )
        for bad in ("1", "1,2,3", "0,4", "1,-1", "a,b"):
            self.assertConfigError(
                {"media": {"ringback_cadence": bad}},
                f"[media] ringback_cadence: must be 'on,off' seconds, on > 0 and"
                f" off >= 0, got {bad!r}",
            )

    def test_rtpPorts(self) -> None:
        """
        rtp_ports is empty or low-high within 1024-65535.
        """
        for bad in ("10000", "20000-10000", "80-90", "10000-70000", "a-b"):
            self.assertConfigError(
                {"media": {"rtp_ports": bad}},
                "[media] rtp_ports: must be empty (any free port) or 'low-high'",
            )


LINE = {
    "registrar": "127.0.0.1:5090",
    "username": "line1",
    "password": "pw1",
    "number": "5551000",
}


class ExternalLineSectionTests(_ConfigTestMixin, SynchronousTestCase):
    """
    [external_line]: the provider account used in external line mode.
    """

    def loadLine(
        self,
        line: dict[str, str | None] | None = None,
        callback: dict[str, str | None] | None = None,
    ) -> Config:
        return self.load(
            {
                "callback": {"external_line_mode": "yes", **(callback or {})},
                "external_line": {**LINE, **(line or {})},
            }
        )

    def assertLineError(
        self,
        line: dict[str, str | None],
        expected: str,
        callback: dict[str, str | None] | None = None,
    ) -> ConfigError:
        return self.assertConfigError(
            {
                "callback": {"external_line_mode": "yes", **(callback or {})},
                "external_line": {**LINE, **line},
            },
            expected,
        )

    def test_values(self) -> None:
        """
        Every key is read into its field; the registrar host is kept as
        written (it is the SIP domain) and also resolved; the password is
        never shown in a repr.
        """
        config = self.loadLine(
            {
                "registrar": "LocalHost",
                "proxy": "127.0.0.2:5070",
                "register": "no",
                "expires": "120",
                "password": "s3cr\u00e9t",
            }
        )
        self.assertTrue(config.callback.externalLineMode)
        line = config.externalLine
        self.assertEqual(
            line,
            ExternalLineConfig(
                registrarHost="LocalHost",
                registrarAddress=("127.0.0.1", 5060),
                proxy=("127.0.0.2", 5070),
                username="line1",
                password="s3cr\u00e9t",
                number="5551000",
                register=False,
                expires=120,
            ),
        )
        self.assertEqual(line.registrarPort, 5060)
        self.assertEqual(line.sendTo, ("127.0.0.2", 5070))
        self.assertNotIn("s3cr", repr(config))

    def test_defaults(self) -> None:
        """
        register defaults to yes, expires to 3600, proxy to the registrar.
        """
        line = self.loadLine().externalLine
        self.assertEqual((line.register, line.expires, line.proxy), (True, 3600, None))
        self.assertEqual(line.registrarAddress, ("127.0.0.1", 5090))
        self.assertEqual(line.sendTo, ("127.0.0.1", 5090))

    def test_outboundPeerOptional(self) -> None:
        """
        In external line mode outbound_peer may be left out, but if given it
        must still name a peer server.
        """
        config = self.loadLine(callback={"outbound_peer": None})
        self.assertEqual(config.callback.outboundPeer, "")
        self.assertLineError(
            {},
            "[callback] outbound_peer: 'nope' is not in [peer_servers]",
            callback={"outbound_peer": "nope"},
        )

    def test_defaultCallerOptionalWithNumber(self) -> None:
        """
        With a line number, default_caller may be empty; with neither, the
        error names default_caller.
        """
        config = self.loadLine(callback={"default_caller": None})
        self.assertEqual(config.callback.defaultCaller, "")
        self.assertEqual(config.externalLine.number, "5551000")
        config = self.loadLine({"number": ""})
        self.assertEqual(
            (config.externalLine.number, config.callback.defaultCaller),
            ("", "1000"),
        )
        self.assertLineError(
            {"number": None},
            "[callback] default_caller: must not be empty when"
            " external_line_mode = yes and [external_line] number is empty",
            callback={"default_caller": ""},
        )

    def test_required(self) -> None:
        """
        registrar, username and password have no default.
        """
        self.assertLineError(
            {"registrar": None},
            "[external_line] registrar: must be the provider's host[:port], got ''",
        )
        self.assertLineError(
            {"username": ""},
            "[external_line] username: must be the provider account's user name",
        )
        self.assertLineError(
            {"password": None}, "[external_line] password: must not be empty"
        )

    def test_badValues(self) -> None:
        """
        Bad host:port, user names, numbers, booleans and expiries name the
        key.
        """
        for bad in ("127.0.0.1:0", "127.0.0.1:x", "127.0.0.1:"):
            self.assertLineError(
                {"registrar": bad},
                "[external_line] registrar: must be host[:port], port from 1 to"
                f" 65535, got {bad!r}",
            )
        self.assertLineError(
            {"proxy": "[::1]:5060"},
            "[external_line] proxy: must be host[:port] with an IPv4 host",
        )
        self.assertLineError(
            {"proxy": "0.0.0.0"}, "[external_line] proxy: must be a concrete address"
        )
        self.assertLineError(
            {"registrar": "no-such-host.invalid"},
            "[external_line] registrar: cannot resolve 'no-such-host.invalid':",
        )
        self.assertLineError(
            {"username": "a b"},
            "[external_line] username: must be 1-64 characters",
        )
        self.assertLineError(
            {"number": "1@2"},
            "[external_line] number: must be empty or 1-31 characters",
        )
        self.assertLineError(
            {"register": "maybe"},
            "[external_line] register: must be yes/no",
        )
        for bad in ("9", "86401", "x"):
            self.assertLineError(
                {"expires": bad},
                "[external_line] expires: must be a whole number from 10 to"
                f" 86400, got {bad!r}",
            )

    def test_sectionWithoutMode(self) -> None:
        """
        The section is read (and checked) even when external_line_mode = no,
        so that switching the mode on never reveals an old typo; server-to-
        server rules still apply.
        """
        config = self.load({"external_line": dict(LINE)})
        self.assertFalse(config.callback.externalLineMode)
        self.assertEqual(config.externalLine.username, "line1")
        self.assertConfigError(
            {"external_line": {**LINE, "expires": "0"}},
            "[external_line] expires:",
        )

    def test_absent(self) -> None:
        """
        Without the section, externalLine is None.
        """
        self.assertIsNone(self.load().externalLine)


class UsersSectionTests(_ConfigTestMixin, SynchronousTestCase):
    """
    [users]: local users, number = password.
    """

    def test_values(self) -> None:
        """
        Each key is a user, each value its password; the mapping is
        read-only and not shown in a repr.
        """
        config = self.load({"users": {"100": "secret100", "101": "se=cret 101"}})
        self.assertEqual(dict(config.users), {"100": "secret100", "101": "se=cret 101"})
        self.assertRaises(TypeError, operator.setitem, config.users, "102", "x")
        self.assertNotIn("secret100", repr(config))

    def test_absent(self) -> None:
        """
        Without the section there are no local users.
        """
        self.assertEqual(dict(self.load().users), {})

    def test_badUser(self) -> None:
        """
        User names are SIP-user-safe, passwords not empty.
        """
        self.assertConfigError(
            {"users": {"10@0": "x"}},
            "[users] 10@0: a local user's number must be 1-31 characters",
        )
        self.assertConfigError(
            {"users": {"100": ""}}, "[users] 100: must be the user's password, got ''"
        )
