# -*- test-case-name: tests.test_config -*-
"""
The configuration file: an INI file read once at start-up into frozen
dataclasses.

Everything that can be wrong with the file is found here, before the reactor
runs, so that a bad file stops start-up with one line that names the file, the
section and the key (L{ConfigError}) instead of failing later, half-started,
with a traceback.  Host names are resolved here for the same reason: a DNS
look-up is blocking, and doing it once at start-up keeps it off the call path.

This module imports nothing of ours (see ARCHITECTURE.md).
"""

from __future__ import annotations

import configparser
import difflib
import ipaddress
import math
import os
import re
import socket
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from callback_tw.syntax import isSipUser

__all__ = [
    "CallbackConfig",
    "Config",
    "ConfigError",
    "ExternalLineConfig",
    "MediaConfig",
    "PeerServer",
    "SipConfig",
    "WILDCARD_ADDRESSES",
    "loadConfig",
]

#: Addresses that mean "every local address": good for binding, useless in a
#: Via, Contact or SDP, which must carry an address a peer can reach.
WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0"})

_PEER_NAME = re.compile(r"[0-9a-z_.\-]+\Z")
_ANN_ID = re.compile(r"[0-9]{8}\Z")
_INTEGER = re.compile(r"[+-]?[0-9]+\Z")
_BOOLEANS = {
    "yes": True,
    "true": True,
    "on": True,
    "1": True,
    "no": False,
    "false": False,
    "off": False,
    "0": False,
}


class ConfigError(ValueError):
    """
    The configuration file cannot be used.

    C{str()} of the error is one line, C{"<file>: [<section>] <key>: <what>"}
    (section and key left out when the problem is not about one), meant to be
    shown to the operator as it is.

    @ivar path: the configuration file, as it was given.
    @ivar section: the section at fault, or L{None}.
    @ivar key: the key at fault, or L{None}.
    @ivar problem: what is wrong, without the location.
    """

    def __init__(
        self,
        path: str,
        problem: str,
        section: str | None = None,
        key: str | None = None,
    ) -> None:
        self.path = path
        self.section = section
        self.key = key
        self.problem = problem
        where = path
        if section is not None:
            where += f": [{section}]"
            if key is not None:
                where += f" {key}"
        # Values are quoted with repr() by the checks, but make sure that
        # nothing, not even an OS message, can break the one-line promise.
        super().__init__(" ".join(f"{where}: {problem}".split()))


@dataclass(frozen=True, kw_only=True)
class PeerServer:
    """
    A server we trust: IIF commands are accepted only from peer servers, and
    the outbound peer receives the SIP legs in server-to-server mode.

    @ivar name: the key in C{[peer_servers]} (lower case).
    @ivar host: an IPv4 address literal; a host name in the file is resolved
        when the file is loaded.
    @ivar port: the UDP port, or L{None} when the file gave none: then IIF
        datagrams are accepted from any port of C{host}, and SIP goes to
        L{sipPort}.
    """

    name: str
    host: str
    port: int | None = None

    @property
    def sipPort(self) -> int:
        """
        The port to send SIP to: the configured one, else the SIP default.
        """
        return 5060 if self.port is None else self.port

    def matches(self, host: str, port: int) -> bool:
        """
        Whether a datagram from C{(host, port)} comes from this peer server.

        The spec says the host and port "shall be configured rightly": the
        host must be equal and, when a port is configured, the port too.
        """
        return host == self.host and (self.port is None or port == self.port)


@dataclass(frozen=True, kw_only=True)
class CallbackConfig:
    """
    The C{[callback]} section: the IIF socket and the callback policy.

    @ivar listenAddress: the IIF bind address (C{listen_address}).
    @ivar listenPort: the IIF UDP port, 0 for any free port (C{listen_port}).
    @ivar externalLineMode: legs go through the external line
        (C{external_line_mode}); then L{Config.externalLine} is set.
    @ivar defaultCaller: the From user of both legs (C{default_caller}); in
        external line mode only when the line has no C{number} (may be
        empty then).
    @ivar outboundPeer: the name of the peer server that receives the legs
        (C{outbound_peer}), a key of L{Config.peerServers}; may be empty in
        external line mode.
    @ivar noAnswerTimeout: seconds a leg may ring before it is CANCELled.
    @ivar maxDuration: the cap for C{duration}, in seconds.
    @ivar maxCalls: how many callbacks may run at once.
    @ivar requestMemory: seconds a finished callback id is remembered, so a
        repeated REQUEST is answered again instead of calling twice.
    @ivar shutdownTimeout: when the service stops, how long (seconds) to
        wait for the BYE/CANCEL of the released callbacks to be answered.
    @ivar maxLag: overload guard: while the reactor runs later than this
        (seconds) new callbacks are refused; 0 turns the guard off.
    """

    listenAddress: str = "0.0.0.0"
    listenPort: int = 5080
    externalLineMode: bool = False
    defaultCaller: str = ""
    outboundPeer: str = ""
    noAnswerTimeout: float = 60.0
    maxDuration: int = 86400
    maxCalls: int = 1000
    requestMemory: float = 3600.0
    shutdownTimeout: float = 5.0
    maxLag: float = 0.1


@dataclass(frozen=True, kw_only=True)
class SipConfig:
    """
    The C{[sip]} section: the SIP socket.

    @ivar address: the SIP bind address, an IPv4 literal (C{address}).
    @ivar port: the SIP UDP port, 0 for any free port (C{port}).
    @ivar advertisedAddress: the address put in Via, Contact and SDP when it
        differs from C{address} (NAT, wildcard bind); empty when not set
        (C{advertised_address}).
    @ivar trace: log every SIP message sent and received (C{trace}).
    """

    address: str = "0.0.0.0"
    port: int = 5060
    advertisedAddress: str = ""
    trace: bool = False

    @property
    def sipHost(self) -> str:
        """
        The address peers can reach us at: what goes in Via, Contact and the
        SDP.  L{loadConfig} guarantees that it is not a wildcard.
        """
        return self.advertisedAddress or self.address


@dataclass(frozen=True, kw_only=True)
class ExternalLineConfig:
    """
    The C{[external_line]} section: a VoIP provider's account that the
    server registers and places every leg through (external line mode).

    @ivar registrarHost: the registrar's host as written in the file: the
        domain of the REGISTER R-URI, of To/From, and of every leg's R-URI
        (providers route and authenticate by that domain, not by our IP).
    @ivar registrarAddress: where REGISTER is sent: (IPv4 literal, port),
        resolved at load, port 5060 when the file gave none.
    @ivar proxy: where INVITEs (and REGISTERs) are sent instead, resolved,
        or L{None} to use L{registrarAddress} (C{proxy}).
    @ivar username: the digest user name, also the user of To/From in
        REGISTER (C{username}).
    @ivar password: the digest password (C{password}); never in a repr.
    @ivar number: the line's number, the From user of every leg; empty:
        C{[callback] default_caller} is used (C{number}).
    @ivar register: REGISTER the line at start (C{register}).
    @ivar expires: the registration lifetime asked for, in seconds
        (C{expires}); the registrar may grant another one.
    """

    registrarHost: str
    registrarAddress: tuple[str, int]
    proxy: tuple[str, int] | None = None
    username: str
    password: str = field(repr=False)
    number: str = ""
    register: bool = True
    expires: int = 3600

    @property
    def registrarPort(self) -> int:
        """The registrar's port (the one written, or 5060)."""
        return self.registrarAddress[1]

    @property
    def sendTo(self) -> tuple[str, int]:
        """Where requests for the provider actually go: the proxy or the
        registrar."""
        return self.proxy if self.proxy is not None else self.registrarAddress


@dataclass(frozen=True, kw_only=True)
class MediaConfig:
    """
    The C{[media]} section: announcements, ringback and RTP ports.

    @ivar prompts: the directory of announcement audio, absolute, existing
        (C{prompts}, relative to the configuration file's directory in the
        file).
    @ivar defaultAnnId1: the announcement played to user1 when the REQUEST has
        no C{ann_id1}; empty for none (C{default_ann_id1}).
    @ivar ringbackFrequency: the ringback tone in Hz, 0 for no ringback
        (C{ringback_frequency}).
    @ivar ringbackCadence: seconds on, seconds off (C{ringback_cadence}).
    @ivar rtpPorts: the inclusive range of local RTP ports, or L{None} for any
        free port (C{rtp_ports}).
    """

    prompts: str = "prompts"
    defaultAnnId1: str = "00080002"
    ringbackFrequency: int = 425
    ringbackCadence: tuple[float, float] = (1.0, 4.0)
    rtpPorts: tuple[int, int] | None = None


@dataclass(frozen=True, kw_only=True)
class Config:
    """
    The whole configuration.

    @ivar path: the file it was read from, as it was given.
    @ivar peerServers: peer servers by name (read-only mapping).
    @ivar externalLine: the C{[external_line]} section, or L{None} when the
        file has none (it is always set in external line mode).
    @ivar users: local users, number -> password (read-only mapping, empty
        without a C{[users]} section).
    """

    path: str
    callback: CallbackConfig = field(default_factory=CallbackConfig)
    sip: SipConfig = field(default_factory=SipConfig)
    peerServers: Mapping[str, PeerServer] = field(
        default_factory=lambda: types.MappingProxyType({})
    )
    media: MediaConfig = field(default_factory=MediaConfig)
    externalLine: ExternalLineConfig | None = None
    users: Mapping[str, str] = field(
        default_factory=lambda: types.MappingProxyType({}), repr=False
    )

    @property
    def outboundPeer(self) -> PeerServer:
        """
        The peer server that receives the legs in server-to-server mode.
        """
        return self.peerServers[self.callback.outboundPeer]

    def peerFor(self, host: str, port: int) -> PeerServer | None:
        """
        The peer server a datagram from C{(host, port)} comes from, or L{None}
        when it comes from a stranger.
        """
        for peer in self.peerServers.values():
            if peer.matches(host, port):
                return peer
        return None


# --- reading -----------------------------------------------------------------

Resolver = Callable[[str], str]


def _resolveIPv4(host: str) -> str:
    """
    Resolve C{host} to one IPv4 address literal (blocking; start-up only).

    @raise OSError: when it cannot be resolved.
    """
    infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_DGRAM)
    return infos[0][4][0]


class _Section:
    """
    Typed reading of one section, remembering which keys were used so that
    the ones left over (typos) can be reported.
    """

    def __init__(
        self, path: str, name: str, values: Mapping[str, str], known: tuple[str, ...]
    ) -> None:
        self._path = path
        self.name = name
        self._values = dict(values)
        for key in self._values:
            if key not in known:
                hint = difflib.get_close_matches(key, known, n=1)
                suggestion = (
                    f" (did you mean {hint[0]}?)"
                    if hint
                    else f" (known keys: {', '.join(known)})"
                )
                raise self.error(key, "unknown key" + suggestion)

    def error(self, key: str | None, problem: str) -> ConfigError:
        return ConfigError(self._path, problem, self.name, key)

    def raw(self, key: str, default: str) -> str:
        return self._values.get(key, default).strip()

    def has(self, key: str) -> bool:
        return key in self._values

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key, "yes" if default else "no")
        try:
            return _BOOLEANS[value.lower()]
        except KeyError:
            raise self.error(
                key, f"must be yes/no/true/false/on/off/1/0, got {value!r}"
            ) from None

    def integer(self, key: str, default: int, low: int, high: int | None = None) -> int:
        value = self.raw(key, str(default))
        number = int(value) if _INTEGER.match(value) else None
        if number is None or number < low or (high is not None and number > high):
            if high is None:
                wanted = f"a whole number >= {low}"
            else:
                wanted = f"a whole number from {low} to {high}"
            raise self.error(key, f"must be {wanted}, got {value!r}")
        return number

    def number(self, key: str, default: float, *, allowZero: bool = False) -> float:
        value = self.raw(key, repr(default))
        number = _parseNumber(value)
        if number is None or number < 0 or (number == 0 and not allowZero):
            wanted = "a number of seconds " + (">= 0" if allowZero else "> 0")
            raise self.error(key, f"must be {wanted}, got {value!r}")
        return number

    def port(self, key: str, default: int, *, allowAny: bool) -> int:
        value = self.raw(key, str(default))
        number = int(value) if _INTEGER.match(value) else None
        low = 0 if allowAny else 1
        if number is None or not low <= number <= 65535:
            wanted = "a UDP port from 1 to 65535"
            if allowAny:
                wanted += " (0: any free port)"
            raise self.error(key, f"must be {wanted}, got {value!r}")
        return number

    def address(
        self, key: str, default: str, resolve: Resolver, *, optional: bool = False
    ) -> str:
        """
        An IPv4 address literal, or a host name resolved to one.
        """
        value = self.raw(key, default)
        if not value:
            if optional:
                return ""
            raise self.error(key, "must be an IPv4 address or a host name, got ''")
        return _hostAddress(value, resolve, lambda problem: self.error(key, problem))


def _parseNumber(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _hostAddress(
    value: str, resolve: Resolver, error: Callable[[str], ConfigError]
) -> str:
    """
    C{value} as an IPv4 literal: kept when it is one, else resolved.
    """
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        pass
    if ":" in value or value.startswith("["):
        raise error(f"must be an IPv4 address or a host name, got {value!r}")
    try:
        return resolve(value)
    except (OSError, UnicodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise error(f"cannot resolve {value!r}: {reason}") from None


_SECTIONS: dict[str, tuple[str, ...]] = {
    "callback": (
        "listen_address",
        "listen_port",
        "external_line_mode",
        "default_caller",
        "outbound_peer",
        "no_answer_timeout",
        "max_duration",
        "max_calls",
        "request_memory",
        "shutdown_timeout",
        "max_lag",
    ),
    "sip": ("address", "port", "advertised_address", "trace"),
    "peer_servers": (),
    "external_line": (
        "registrar",
        "proxy",
        "username",
        "password",
        "number",
        "register",
        "expires",
    ),
    "users": (),
    "media": (
        "prompts",
        "default_ann_id1",
        "ringback_frequency",
        "ringback_cadence",
        "rtp_ports",
    ),
}


def _readParser(path: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(
        # Only "=" separates, so "host:port" values cannot be misread.
        delimiters=("=",),
        comment_prefixes=("#", ";"),
        inline_comment_prefixes=("#", ";"),
        interpolation=None,
        empty_lines_in_values=False,
        # No magic [DEFAULT] section: one written in the file is reported as
        # unknown like any other typo.
        default_section="\x00no default section",
    )
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f, source=path)
    except OSError as e:
        raise ConfigError(
            path, f"cannot read: [Errno {e.errno}] {e.strerror}"
        ) from None
    except UnicodeDecodeError as e:
        raise ConfigError(path, f"cannot read: not UTF-8 text ({e.reason})") from None
    except configparser.MissingSectionHeaderError as e:
        raise ConfigError(
            path, f"line {e.lineno}: a key before any [section]: {e.line.strip()!r}"
        ) from None
    except configparser.DuplicateSectionError as e:
        raise ConfigError(
            path, f"line {e.lineno}: section given twice", e.section
        ) from None
    except configparser.DuplicateOptionError as e:
        raise ConfigError(
            path, f"line {e.lineno}: key given twice", e.section, e.option
        ) from None
    except configparser.ParsingError as e:
        lineno, line = e.errors[0]
        raise ConfigError(
            path, f"line {lineno}: expected 'key = value', got {line.strip()}"
        ) from None
    return parser


def loadConfig(path: str, *, resolve: Resolver | None = None) -> Config:
    """
    Read and check the configuration file at C{path}.

    @param path: the INI file; relative paths in it (C{[media] prompts}) are
        relative to its directory.
    @param resolve: turns a host name into an IPv4 literal; defaults to a
        blocking C{getaddrinfo}, which is why this runs before the reactor.
    @return: the configuration, every value checked.
    @raise ConfigError: on the first problem found, naming file, section and
        key.
    """
    if resolve is None:
        resolve = _resolveIPv4
    parser = _readParser(path)

    for name in parser.sections():
        if name not in _SECTIONS:
            raise ConfigError(
                path,
                "unknown section (known sections: "
                + ", ".join(f"[{s}]" for s in _SECTIONS)
                + ")",
                name,
            )

    def section(name: str) -> _Section:
        values = parser[name] if parser.has_section(name) else {}
        return _Section(path, name, values, _SECTIONS[name])

    # In the order of the sample file, so the first problem reported is the
    # first one an operator reading from the top would meet.
    callbackSection = section("callback")
    callback = _readCallback(callbackSection, resolve)
    sip = _readSip(section("sip"), resolve)
    peerServers = _readPeerServers(path, parser, resolve)
    if callback.outboundPeer or not callback.externalLineMode:
        _checkOutboundPeer(callbackSection, callback.outboundPeer, peerServers)
    externalLine = None
    if parser.has_section("external_line"):
        externalLine = _readExternalLine(section("external_line"), resolve)
    if callback.externalLineMode:
        _checkExternalLineMode(callbackSection, callback, externalLine)
    users = _readUsers(path, parser)
    media = _readMedia(section("media"), os.path.dirname(os.path.abspath(path)))
    return Config(
        path=path,
        callback=callback,
        sip=sip,
        peerServers=types.MappingProxyType(peerServers),
        media=media,
        externalLine=externalLine,
        users=types.MappingProxyType(users),
    )


def _hostPort(
    value: str, resolve: Resolver, error: Callable[[str], ConfigError]
) -> tuple[str, str, int]:
    """
    C{host[:port]} as (host as written, resolved IPv4 literal, port), the
    port 5060 when not given.
    """
    host, sep, portText = value.rpartition(":")
    if not sep:
        host, portText = value, "5060"
    if not host or host.count(":") or host.startswith("["):
        raise error(f"must be host[:port] with an IPv4 host, got {value!r}")
    if not (_INTEGER.match(portText) and 1 <= int(portText) <= 65535):
        raise error(f"must be host[:port], port from 1 to 65535, got {value!r}")
    address = _hostAddress(host, resolve, error)
    if address in WILDCARD_ADDRESSES:
        raise error(f"must be a concrete address, got {value!r}")
    return host, address, int(portText)


def _readExternalLine(s: _Section, resolve: Resolver) -> ExternalLineConfig:
    registrar = s.raw("registrar", "")
    if not registrar:
        raise s.error("registrar", "must be the provider's host[:port], got ''")
    registrarHost, registrarIP, registrarPort = _hostPort(
        registrar, resolve, lambda problem: s.error("registrar", problem)
    )
    proxyText = s.raw("proxy", "")
    proxy: tuple[str, int] | None = None
    if proxyText:
        _, proxyIP, proxyPort = _hostPort(
            proxyText, resolve, lambda problem: s.error("proxy", problem)
        )
        proxy = (proxyIP, proxyPort)

    username = s.raw("username", "")
    if not username:
        raise s.error("username", "must be the provider account's user name, got ''")
    if not isSipUser(username, 64):
        raise s.error(
            "username",
            "must be 1-64 characters from digits, letters and + * # . - _,"
            f" got {username!r}",
        )
    password = s.raw("password", "")
    if not password:
        raise s.error("password", "must not be empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        raise s.error("password", "must not contain control characters")

    number = s.raw("number", "")
    if number and not isSipUser(number):
        raise s.error(
            "number",
            "must be empty or 1-31 characters from digits, letters and"
            f" + * # . - _, got {number!r}",
        )
    return ExternalLineConfig(
        registrarHost=registrarHost,
        registrarAddress=(registrarIP, registrarPort),
        proxy=proxy,
        username=username,
        password=password,
        number=number,
        register=s.boolean("register", True),
        expires=s.integer("expires", 3600, 10, 86400),
    )


def _checkExternalLineMode(
    s: _Section, callback: CallbackConfig, line: ExternalLineConfig | None
) -> None:
    if line is None:
        raise s.error(
            "external_line_mode",
            "yes needs an [external_line] section (registrar, username,"
            " password, number)",
        )
    if not line.number and not callback.defaultCaller:
        raise s.error(
            "default_caller",
            "must not be empty when external_line_mode = yes and [external_line]"
            " number is empty (the legs need a caller number)",
        )


def _readUsers(path: str, parser: configparser.ConfigParser) -> dict[str, str]:
    values = parser["users"] if parser.has_section("users") else {}
    users: dict[str, str] = {}
    for name, raw in values.items():
        password = raw.strip()

        def error(problem: str, name: str = name) -> ConfigError:
            return ConfigError(path, problem, "users", name)

        if not isSipUser(name):
            raise error(
                "a local user's number must be 1-31 characters from digits,"
                " letters and + * # . - _"
            )
        if not password:
            raise error("must be the user's password, got ''")
        if any(ord(c) < 32 or ord(c) == 127 for c in password):
            raise error("the password must not contain control characters")
        users[name] = password
    return users


def _readPeerServers(
    path: str, parser: configparser.ConfigParser, resolve: Resolver
) -> dict[str, PeerServer]:
    values = parser["peer_servers"] if parser.has_section("peer_servers") else {}
    peers: dict[str, PeerServer] = {}
    for name, raw in values.items():
        value = raw.strip()

        def error(problem: str, name: str = name) -> ConfigError:
            return ConfigError(path, problem, "peer_servers", name)

        if not _PEER_NAME.match(name):
            raise error("a peer server name may use only letters, digits, _ . -")
        host, sep, portText = value.rpartition(":")
        if not sep:
            host, portText = value, ""
        if sep and host.count(":"):
            raise error(f"must be host[:port] with an IPv4 host, got {value!r}")
        port: int | None = None
        if sep:
            if not (_INTEGER.match(portText) and 1 <= int(portText) <= 65535):
                raise error(f"must be host[:port], port from 1 to 65535, got {value!r}")
            port = int(portText)
        if not host:
            raise error(f"must be host[:port], got {value!r}")
        address = _hostAddress(host, resolve, error)
        if address in WILDCARD_ADDRESSES:
            raise error(f"must be a concrete address, got {value!r}")
        peers[name] = PeerServer(name=name, host=address, port=port)
    if not peers:
        raise ConfigError(
            path,
            "at least one peer server is needed: IIF commands are accepted only"
            " from them (name = host[:port])",
            "peer_servers",
        )
    return peers


def _readCallback(s: _Section, resolve: Resolver) -> CallbackConfig:
    listenAddress = s.address("listen_address", "0.0.0.0", resolve)
    listenPort = s.port("listen_port", 5080, allowAny=True)
    externalLineMode = s.boolean("external_line_mode", False)

    defaultCaller = s.raw("default_caller", "")
    if not defaultCaller and not externalLineMode:
        raise s.error(
            "default_caller",
            "must not be empty when external_line_mode = no"
            " (some VOIP providers reject a call with no caller number)",
        )
    if defaultCaller and not isSipUser(defaultCaller):
        raise s.error(
            "default_caller",
            "must be 1-31 characters from digits, letters and + * # . - _,"
            f" got {defaultCaller!r}",
        )

    return CallbackConfig(
        listenAddress=listenAddress,
        listenPort=listenPort,
        externalLineMode=externalLineMode,
        defaultCaller=defaultCaller,
        outboundPeer=s.raw("outbound_peer", "").lower(),
        noAnswerTimeout=s.number("no_answer_timeout", 60.0),
        maxDuration=s.integer("max_duration", 86400, 1),
        maxCalls=s.integer("max_calls", 1000, 1),
        requestMemory=s.number("request_memory", 3600.0),
        shutdownTimeout=s.number("shutdown_timeout", 5.0),
        maxLag=s.number("max_lag", 0.1, allowZero=True),
    )


def _checkOutboundPeer(
    s: _Section, outboundPeer: str, peers: Mapping[str, PeerServer]
) -> None:
    if outboundPeer not in peers:
        known = ", ".join(sorted(peers))
        if not outboundPeer:
            problem = "must name the peer server that receives the legs"
        else:
            problem = f"{outboundPeer!r} is not in [peer_servers]"
        raise s.error("outbound_peer", f"{problem} (one of: {known})")


def _readSip(s: _Section, resolve: Resolver) -> SipConfig:
    address = s.address("address", "0.0.0.0", resolve)
    advertised = s.address("advertised_address", "", resolve, optional=True)
    if s.raw("advertised_address", "") and advertised in WILDCARD_ADDRESSES:
        raise s.error(
            "advertised_address",
            f"must be an address peers can reach, got {advertised!r}",
        )
    sip = SipConfig(
        address=address,
        port=s.port("port", 5060, allowAny=True),
        advertisedAddress=advertised,
        trace=s.boolean("trace", False),
    )
    if sip.sipHost in WILDCARD_ADDRESSES:
        raise s.error(
            "advertised_address",
            f"must be set when address is {address!r}: Via, Contact and SDP need"
            " an address peers can reach (or set address to a local IP)",
        )
    return sip


def _readMedia(s: _Section, baseDir: str) -> MediaConfig:
    prompts = s.raw("prompts", "prompts")
    if not prompts:
        raise s.error("prompts", "must name a directory, got ''")
    prompts = os.path.normpath(os.path.join(baseDir, os.path.expanduser(prompts)))
    if not os.path.isdir(prompts):
        raise s.error("prompts", f"no such directory: {prompts!r}")

    annId = s.raw("default_ann_id1", "00080002")
    if annId and not _ANN_ID.match(annId):
        raise s.error(
            "default_ann_id1", f"must be exactly 8 digits or empty, got {annId!r}"
        )

    frequency = s.raw("ringback_frequency", "425")
    if not (_INTEGER.match(frequency) and 0 <= int(frequency) <= 3999):
        raise s.error(
            "ringback_frequency",
            f"must be 0 (no ringback) or a tone from 1 to 3999 Hz, got {frequency!r}",
        )

    cadenceText = s.raw("ringback_cadence", "1.0,4.0")
    parts = [_parseNumber(p.strip()) for p in cadenceText.split(",")]
    if (
        len(parts) != 2
        or parts[0] is None
        or parts[1] is None
        or parts[0] <= 0
        or parts[1] < 0
    ):
        raise s.error(
            "ringback_cadence",
            "must be 'on,off' seconds, on > 0 and off >= 0," f" got {cadenceText!r}",
        )

    rtpText = s.raw("rtp_ports", "")
    rtpPorts: tuple[int, int] | None = None
    if rtpText:
        low, dash, high = (p.strip() for p in rtpText.partition("-"))
        if not (
            dash
            and _INTEGER.match(low)
            and _INTEGER.match(high)
            and 1024 <= int(low) <= int(high) <= 65535
        ):
            raise s.error(
                "rtp_ports",
                "must be empty (any free port) or 'low-high' with"
                f" 1024 <= low <= high <= 65535, got {rtpText!r}",
            )
        rtpPorts = (int(low), int(high))

    return MediaConfig(
        prompts=prompts,
        defaultAnnId1=annId,
        ringbackFrequency=int(frequency),
        ringbackCadence=(parts[0], parts[1]),
        rtpPorts=rtpPorts,
    )
