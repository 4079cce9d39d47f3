"""
Tests for L{callback_tw.config}: the sections [peer_servers], [media],
[external_line] and [users].
"""

from __future__ import annotations

import operator
import os
import socket

from twisted.trial.unittest import SynchronousTestCase

from callback_tw.config import (
    Config,
    ConfigError,
    ExternalLineConfig,
    MediaConfig,
    PeerServer,
    loadConfig,
)
from tests.confighelpers import MINIMAL, ConfigTestMixin, render


class PeerServersTests(ConfigTestMixin, SynchronousTestCase):
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
            render(MINIMAL).replace("pss = 127.0.0.1", "pss = pss.example")
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
            render(MINIMAL).replace("as1 = 127.0.0.1", "as1 = as.example")
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


class MediaSectionTests(ConfigTestMixin, SynchronousTestCase):
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
                directory, render(MINIMAL) + "[media]\nprompts = sounds/en\n"
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


class ExternalLineSectionTests(ConfigTestMixin, SynchronousTestCase):
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

    def test_hostPortLikePeerServers(self) -> None:
        """
        registrar, proxy and the peer servers read host[:port] with one rule:
        the same bad value gets the same reason, only the place differs.
        """
        for bad in (":5060", "[::1]:5060", "127.0.0.1:0", "0.0.0.0:5060"):
            peer = self.assertConfigError({"peer_servers": {"as1": bad}}, "")
            for name in ("registrar", "proxy"):
                line = self.assertLineError({name: bad}, "")
                self.assertEqual(
                    (line.section, line.key, line.problem),
                    ("external_line", name, peer.problem),
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


class UsersSectionTests(ConfigTestMixin, SynchronousTestCase):
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
