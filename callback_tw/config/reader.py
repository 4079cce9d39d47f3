# -*- test-case-name: tests.test_config -*-
"""
Reading the INI file: the key table drives every fixed section, the
free-form sections (C{[peer_servers]}, C{[users]}) keep their per-entry
rules, and the rules that tie keys together are checked last.

Everything that can be wrong with the file is found here, before the reactor
runs, so that a bad file stops start-up with one line that names the file, the
section and the key (L{ConfigError}) instead of failing later, half-started,
with a traceback.  Host names are resolved here for the same reason: a DNS
look-up is blocking, and doing it once at start-up keeps it off the call path.
"""

from __future__ import annotations

import configparser
import dataclasses
import difflib
import os
import re
import socket
import types
from collections.abc import Mapping
from typing import Any

from callback_tw.config import values
from callback_tw.config.keys import (
    MOVED,
    PEER_SECTION,
    SECTIONS,
    keysOf,
    templateOf,
)
from callback_tw.config.model import (
    CallbackConfig,
    Config,
    ConfigError,
    ExternalLineConfig,
    HttpConfig,
    LogConfig,
    MediaConfig,
    PeerConfig,
    PeerServer,
    SipConfig,
    StoreConfig,
)
from callback_tw.config.values import (
    WILDCARD_ADDRESSES,
    Context,
    Invalid,
    Resolver,
    parseHostPort,
)
from callback_tw.syntax import SIP_USER_CHARACTERS, isSipUser

__all__ = ["loadConfig"]

_PEER_NAME = re.compile(r"[0-9a-z_.\-]+\Z")
_SECTION_NAMES = tuple(s.name for s in SECTIONS if s.entryOf is None)
_KNOWN_SECTIONS = ", ".join(f"[{s.name}]" for s in SECTIONS)
_USER_PASSWORD = values.password(
    emptyProblem="must be the user's password, got ''",
    controlProblem="the password must not contain control characters",
)


def _resolveIPv4(host: str) -> str:
    """
    Resolve C{host} to one IPv4 address literal (blocking; start-up only).

    @raise OSError: when it cannot be resolved.
    """
    infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_DGRAM)
    return infos[0][4][0]


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
    parser = _readParser(path)
    for name in parser.sections():
        if name not in _SECTION_NAMES and templateOf(name) is None:
            raise ConfigError(
                path, f"unknown section (known sections: {_KNOWN_SECTIONS})", name
            )
    context = Context(
        resolve=_resolveIPv4 if resolve is None else resolve,
        baseDir=os.path.dirname(os.path.abspath(path)),
    )

    def fields(name: str) -> dict[str, Any]:
        return _readSection(path, parser, name, context)

    # In the order of the sample file, so the first problem reported is the
    # first one an operator reading from the top would meet.
    config = Config(
        path=path,
        callback=CallbackConfig(**fields("callback")),
        sip=SipConfig(**fields("sip")),
        peerServers=types.MappingProxyType(
            _readPeerServers(path, parser, context.resolve)
        ),
        externalLine=(
            ExternalLineConfig(**fields("external_line"))
            if parser.has_section("external_line")
            else None
        ),
        users=types.MappingProxyType(_readUsers(path, parser, context)),
        media=MediaConfig(**fields("media")),
        store=StoreConfig(**fields("store")),
        http=HttpConfig(**fields("http")),
        log=LogConfig(**fields("log")),
    )
    _checkAcrossKeys(config)
    peers = _readPeerSections(config, parser, context)
    return dataclasses.replace(config, peers=types.MappingProxyType(peers))


def _readSection(
    path: str,
    parser: configparser.ConfigParser,
    name: str,
    context: Context,
    template: str | None = None,
) -> dict[str, Any]:
    """
    The dataclass fields of the fixed section C{name}: every key of the table
    parsed from the file, or from its default when left out.

    @param template: the table's name of the section when C{name} is an
        instance of a template (C{"peer NAME"} for C{"peer as1"}).
    @raise ConfigError: for a key the table lacks (with the closest known
        one) or a value its parser refuses.
    """
    written = parser[name] if parser.has_section(name) else {}
    keys = keysOf(name if template is None else template)
    known = [key.name for key in keys]
    for unknown in written:
        moved = MOVED.get((template or name, unknown))
        if moved is not None:
            raise ConfigError(
                path, f"unknown key (moved to [{moved}] {unknown})", name, unknown
            )
        if unknown not in known:
            hint = difflib.get_close_matches(unknown, known, n=1)
            suggestion = (
                f"did you mean {hint[0]}?"
                if hint
                else f"known keys: {', '.join(known)}"
            )
            raise ConfigError(path, f"unknown key ({suggestion})", name, unknown)
    fields: dict[str, Any] = {}
    for key in keys:
        text = written[key.name].strip() if key.name in written else key.defaultText
        try:
            value = key.parser.parse(text, context)
        except Invalid as e:
            raise ConfigError(path, e.problem, name, key.name) from None
        if isinstance(key.attribute, tuple):
            fields.update(zip(key.attribute, value, strict=True))
        else:
            fields[key.attribute] = value
    return fields


def _readPeerSections(
    config: Config, parser: configparser.ConfigParser, context: Context
) -> dict[str, PeerConfig]:
    """
    A L{PeerConfig} for every peer server: its C{[peer NAME]} section, or the
    defaults; C{commands} left empty becomes "yes, unless it is the
    outbound peer".

    @raise ConfigError: for a section of a name that is not a peer server, a
        key or value of the table's refusing, or a C{max_duration} above the
        server's.
    """
    path = config.path
    written: dict[str, str] = {}
    for section in parser.sections():
        if templateOf(section) is None:
            continue
        name = section.split(" ", 1)[1].strip().lower()
        if name not in config.peerServers:
            known = ", ".join(sorted(config.peerServers))
            raise ConfigError(
                path, f"{name!r} is not in [peer_servers] (one of: {known})", section
            )
        if name in written:
            raise ConfigError(path, f"section given twice ([{written[name]}])", section)
        written[name] = section
    peers: dict[str, PeerConfig] = {}
    for name in config.peerServers:
        section = written.get(name)
        if section is None:
            peer = PeerConfig()
        else:
            peer = PeerConfig(
                **_readSection(path, parser, section, context, PEER_SECTION)
            )
            if peer.maxDuration > config.callback.maxDuration:
                raise ConfigError(
                    path,
                    f"must be at most [callback] max_duration"
                    f" ({config.callback.maxDuration}), got {peer.maxDuration}",
                    section,
                    "max_duration",
                )
        if peer.commands is None:
            commands = name != config.callback.outboundPeer
            peer = dataclasses.replace(peer, commands=commands)
        peers[name] = peer
    return peers


def _entries(parser: configparser.ConfigParser, name: str) -> Mapping[str, str]:
    return parser[name] if parser.has_section(name) else {}


def _readPeerServers(
    path: str, parser: configparser.ConfigParser, resolve: Resolver
) -> dict[str, PeerServer]:
    peers: dict[str, PeerServer] = {}
    for name, raw in _entries(parser, "peer_servers").items():
        try:
            if not _PEER_NAME.match(name):
                raise Invalid("a peer server name may use only letters, digits, _ . -")
            found = parseHostPort(raw.strip(), resolve, None)
        except Invalid as e:
            raise ConfigError(path, e.problem, "peer_servers", name) from None
        peers[name] = PeerServer(name=name, host=found.address, port=found.port)
    if not peers:
        raise ConfigError(
            path,
            "at least one peer server is needed: IIF commands are accepted only"
            " from them (name = host[:port])",
            "peer_servers",
        )
    return peers


def _readUsers(
    path: str, parser: configparser.ConfigParser, context: Context
) -> dict[str, str]:
    users: dict[str, str] = {}
    for name, raw in _entries(parser, "users").items():
        try:
            if not isSipUser(name):
                raise Invalid(
                    "a local user's number must be 1-31 characters from"
                    f" {SIP_USER_CHARACTERS}"
                )
            users[name] = _USER_PASSWORD.parse(raw.strip(), context)
        except Invalid as e:
            raise ConfigError(path, e.problem, "users", name) from None
    return users


def _checkAcrossKeys(config: Config) -> None:
    """
    The rules that tie keys together (each error names the key to change).

    @raise ConfigError: for the first rule broken, in the order of the
        sample file.
    """
    callback, line = config.callback, config.externalLine

    def error(section: str, key: str, problem: str) -> ConfigError:
        return ConfigError(config.path, problem, section, key)

    if not callback.externalLineMode and not callback.defaultCaller:
        raise error(
            "callback",
            "default_caller",
            "must not be empty when external_line_mode = no"
            " (some VOIP providers reject a call with no caller number)",
        )
    if config.sip.sipHost in WILDCARD_ADDRESSES:
        raise error(
            "sip",
            "advertised_address",
            f"must be set when address is {config.sip.address!r}: Via, Contact"
            " and SDP need an address peers can reach (or set address to a"
            " local IP)",
        )
    if callback.outboundPeer or not callback.externalLineMode:
        if callback.outboundPeer not in config.peerServers:
            known = ", ".join(sorted(config.peerServers))
            if not callback.outboundPeer:
                problem = "must name the peer server that receives the legs"
            else:
                problem = f"{callback.outboundPeer!r} is not in [peer_servers]"
            raise error("callback", "outbound_peer", f"{problem} (one of: {known})")
    if callback.externalLineMode:
        if line is None:
            raise error(
                "callback",
                "external_line_mode",
                "yes needs an [external_line] section (registrar, username,"
                " password, number)",
            )
        if not line.number and not callback.defaultCaller:
            raise error(
                "callback",
                "default_caller",
                "must not be empty when external_line_mode = yes and"
                " [external_line] number is empty (the legs need a caller"
                " number)",
            )
