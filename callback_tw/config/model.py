# -*- test-case-name: tests.test_config -*-
"""
What the server runs with: frozen dataclasses, one per section, and the
error that stops start-up when the file cannot be used.

The defaults of the fields that come from a key are the key table's
(L{callback_tw.config.keys}), so a default is written once.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from callback_tw.config.keys import key as _key

__all__ = [
    "CallbackConfig",
    "Config",
    "ConfigError",
    "ExternalLineConfig",
    "HttpConfig",
    "LogConfig",
    "MediaConfig",
    "PeerConfig",
    "PeerServer",
    "SipConfig",
    "StoreConfig",
]


def _default(section: str, name: str) -> Any:
    return _key(section, name).default


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
    @ivar user2Caller: whose number user2's leg shows (C{user2_caller}):
        C{"default"}, or C{"user1"} for user1's.
    @ivar assertIdentity: a leg that shows a caller also asserts it in
        C{P-Asserted-Identity} (C{assert_identity}).
    @ivar outboundPeer: the name of the peer server that receives the legs
        (C{outbound_peer}), a key of L{Config.peerServers}; may be empty in
        external line mode.
    @ivar noAnswerTimeout: seconds a leg may ring before it is CANCELled.
    @ivar joinTimeout: seconds each join re-INVITE may wait for its final
        answer before the callback ends (C{join_timeout}).
    @ivar maxDuration: the cap for C{duration}, in seconds.
    @ivar maxCalls: how many callbacks may run at once.
    @ivar shutdownTimeout: when the service stops, how long (seconds) to
        wait for the BYE/CANCEL of the released callbacks to be answered.
    @ivar maxLag: overload guard: while the reactor runs later than this
        (seconds) new callbacks are refused; 0 turns the guard off.
    @ivar signatureWindow: the largest C{|now - ts|}, in seconds, of a signed
        command (C{signature_window}).
    """

    listenAddress: str = _default("callback", "listen_address")
    listenPort: int = _default("callback", "listen_port")
    externalLineMode: bool = _default("callback", "external_line_mode")
    defaultCaller: str = _default("callback", "default_caller")
    user2Caller: str = _default("callback", "user2_caller")
    assertIdentity: bool = _default("callback", "assert_identity")
    outboundPeer: str = _default("callback", "outbound_peer")
    noAnswerTimeout: float = _default("callback", "no_answer_timeout")
    joinTimeout: float = _default("callback", "join_timeout")
    maxDuration: int = _default("callback", "max_duration")
    maxCalls: int = _default("callback", "max_calls")
    shutdownTimeout: float = _default("callback", "shutdown_timeout")
    maxLag: float = _default("callback", "max_lag")
    signatureWindow: float = _default("callback", "signature_window")


@dataclass(frozen=True, kw_only=True)
class PeerConfig:
    """
    A C{[peer NAME]} section: what one peer server may do.  Every peer of
    C{[peer_servers]} has one (L{Config.peers}), with the defaults when the
    file has no section for it.

    @ivar commands: the peer may send IIF commands (C{commands}); L{None}
        only as the key's default, which the reader replaces: yes for every
        peer but the C{outbound_peer}.
    @ivar key: the HMAC key the peer signs with, or L{None} for unsigned
        commands (C{key}); never in a repr.
    @ivar allow: patterns user1 and user2 must match; empty: any.
    @ivar deny: patterns neither may match; deny wins.
    @ivar maxCalls: its callbacks at once, 0 for no limit of its own.
    @ivar rate: its new REQUESTs per second, 0 for no limit.
    @ivar maxDuration: the cap of its durations, 0 for the server's.
    @ivar responseDetails: its RESPONSEs carry the callback's details
        (C{response_details}).
    """

    commands: bool | None = _default("peer NAME", "commands")
    key: bytes | None = field(default=_default("peer NAME", "key"), repr=False)
    allow: tuple[str, ...] = _default("peer NAME", "allow")
    deny: tuple[str, ...] = _default("peer NAME", "deny")
    maxCalls: int = _default("peer NAME", "max_calls")
    rate: float = _default("peer NAME", "rate")
    maxDuration: int = _default("peer NAME", "max_duration")
    responseDetails: bool = _default("peer NAME", "response_details")


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
    @ivar maxRequestsPerSource: requests outside our dialogs per second
        from one address before it is ignored, 0 for no limit
        (C{max_requests_per_source}).
    @ivar blockTime: seconds such an address is ignored (C{block_time}).
    """

    address: str = _default("sip", "address")
    port: int = _default("sip", "port")
    advertisedAddress: str = _default("sip", "advertised_address")
    trace: bool = _default("sip", "trace")
    maxRequestsPerSource: int = _default("sip", "max_requests_per_source")
    blockTime: float = _default("sip", "block_time")

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
    @ivar fromUser: the From user of a leg that shows a caller
        (C{from_user}): C{"line"} (the line's number) or C{"caller"}.
    @ivar register: REGISTER the line at start (C{register}).
    @ivar expires: the registration lifetime asked for, in seconds
        (C{expires}); the registrar may grant another one.
    """

    registrarHost: str
    registrarAddress: tuple[str, int]
    proxy: tuple[str, int] | None = _default("external_line", "proxy")
    username: str
    password: str = field(repr=False)
    number: str = _default("external_line", "number")
    fromUser: str = _default("external_line", "from_user")
    register: bool = _default("external_line", "register")
    expires: int = _default("external_line", "expires")

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
        file; by default the prompts shipped in the package).
    @ivar defaultAnnId1: the announcement played to user1 when the REQUEST has
        no C{ann_id1}; empty for none (C{default_ann_id1}).
    @ivar ringbackFrequency: the ringback tone in Hz, 0 for no ringback
        (C{ringback_frequency}).
    @ivar ringbackCadence: seconds on, seconds off (C{ringback_cadence}).
    @ivar rtpPorts: the inclusive range of local RTP ports, or L{None} for any
        free port (C{rtp_ports}).
    """

    prompts: str = _default("media", "prompts")
    defaultAnnId1: str = _default("media", "default_ann_id1")
    ringbackFrequency: int = _default("media", "ringback_frequency")
    ringbackCadence: tuple[float, float] = _default("media", "ringback_cadence")
    rtpPorts: tuple[int, int] | None = _default("media", "rtp_ports")


@dataclass(frozen=True, kw_only=True)
class StoreConfig:
    """
    The C{[store]} section: where callbacks are kept (docs/store.md).

    @ivar url: the store's URL; a relative SQLite path already made
        absolute against the configuration file's directory.  It may hold a
        password: never in a repr (log through
        L{callback_tw.store.redact}).
    @ivar serverId: this server's name in the store, empty for the default
        (host name, a colon and the SIP port, see
        L{callback_tw.tap.serverIdOf}).
    @ivar requestMemory: seconds a finished callback's id is remembered, so
        a repeated REQUEST is answered again instead of calling twice.
    @ivar retentionDays: days a finished callback's record is kept.
    """

    url: str = field(default=_default("store", "url"), repr=False)
    serverId: str = _default("store", "server_id")
    requestMemory: float = _default("store", "request_memory")
    retentionDays: int = _default("store", "retention_days")


@dataclass(frozen=True, kw_only=True)
class HttpConfig:
    """
    The C{[http]} section: the operator's port (L{callback_tw.http}).

    @ivar listenAddress: the bind address (C{listen_address}).
    @ivar listenPort: the TCP port, 0 for none (C{listen_port}).
    """

    listenAddress: str = _default("http", "listen_address")
    listenPort: int = _default("http", "listen_port")


@dataclass(frozen=True, kw_only=True)
class LogConfig:
    """
    The C{[log]} section.

    @ivar level: the name of the least severe L{twisted.logger.LogLevel}
        written (C{level}).
    @ivar format: C{"text"} or C{"json"} (C{format}).
    """

    level: str = _default("log", "level")
    format: str = _default("log", "format")


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
    @ivar peers: what each peer server may do, by the names of
        L{peerServers} (read-only mapping; every peer has an entry).
    """

    path: str
    callback: CallbackConfig = field(default_factory=CallbackConfig)
    sip: SipConfig = field(default_factory=SipConfig)
    peerServers: Mapping[str, PeerServer] = field(
        default_factory=lambda: types.MappingProxyType({})
    )
    media: MediaConfig = field(default_factory=MediaConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    log: LogConfig = field(default_factory=LogConfig)
    externalLine: ExternalLineConfig | None = None
    users: Mapping[str, str] = field(
        default_factory=lambda: types.MappingProxyType({}), repr=False
    )
    peers: Mapping[str, PeerConfig] = field(
        default_factory=lambda: types.MappingProxyType({})
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
