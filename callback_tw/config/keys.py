# -*- test-case-name: tests.test_config_keys -*-
"""
The configuration keys, each declared once: section, name, the dataclass
attribute it fills, default, parser (its rule) and help.

Everything else derives from this table: the reader (which keys exist,
"did you mean", the defaults of keys left out), the dataclasses' defaults,
the check of the sample file C{etc/callback.ini} and the reference
C{docs/configuration.md}.  To add a key: add a L{Key} here and a field to its
dataclass in L{callback_tw.config.model}, then write it in the sample and
regenerate the reference (C{python3 -m callback_tw.config --markdown}); the
tests say what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from callback_tw.config import values
from callback_tw.config.values import Parser

__all__ = [
    "KEYS",
    "MOVED",
    "NO_DEFAULT",
    "PEER_SECTION",
    "SECTIONS",
    "Key",
    "Section",
    "key",
    "keysOf",
    "templateOf",
]


class _NoDefault:
    def __repr__(self) -> str:
        return "NO_DEFAULT"


#: The default of a key that must be written: reading it when it is left out
#: parses the empty text, which the key's parser refuses with its reason.
NO_DEFAULT: Any = _NoDefault()


@dataclass(frozen=True)
class Section:
    """
    One INI section.

    @ivar name: as written between brackets.
    @ivar help: what the section is for.
    @ivar entries: for a free-form section (its keys are names the operator
        chooses), the form of one entry, e.g. C{"name = host[:port]"};
        L{None} for a section of fixed keys.
    @ivar optional: the section is read only when the file has it.
    @ivar entryOf: for a template section (C{"peer NAME"}), the free-form
        section whose entries may each have one: the file writes
        C{[peer as1]} for the entry C{as1}, and the keys are declared once,
        under the template's name.
    """

    name: str
    help: str
    entries: str | None = None
    optional: bool = False
    entryOf: str | None = None

    @property
    def prefix(self) -> str | None:
        """
        For a template section, what its instances start with
        (C{"peer "}); L{None} otherwise.
        """
        if self.entryOf is None:
            return None
        return self.name.split(" ", 1)[0] + " "


@dataclass(frozen=True)
class Key:
    """
    One configuration key.

    @ivar section: the section's name.
    @ivar name: the key as written (lower case).
    @ivar attribute: the dataclass field it fills; a tuple when the parsed
        value is a tuple spread over several fields.
    @ivar parser: its rule: text -> value, and value -> text.
    @ivar help: what it means, as the sample file and the reference say it.
    @ivar default: the value when the key is left out, or L{NO_DEFAULT}.
    @ivar example: what the sample file writes when that is not the
        default (keys the operator must or usually will set).
    """

    section: str
    name: str
    attribute: str | tuple[str, ...]
    parser: Parser
    help: str
    default: Any = NO_DEFAULT
    example: str | None = None

    @property
    def defaultText(self) -> str:
        """
        The default as written in a file; empty for L{NO_DEFAULT}.
        """
        if self.default is NO_DEFAULT:
            return ""
        return self.parser.text(self.default)


_S2S = "server-to-server mode"
_PEER = "peer NAME"

#: The name of the per-peer template section (C{[peer as1]} in a file).
PEER_SECTION = _PEER

#: Every section, in the order of the sample file (and of reading).
SECTIONS: tuple[Section, ...] = (
    Section(
        "callback",
        "The inner interface (IIF): where the application servers send"
        " REQUEST; and the callback policy.",
    ),
    Section(
        "sip",
        "The SIP socket.  sippy needs a concrete IP to write in Via, Contact"
        " and SDP: either give address a local IP, or bind the wildcard"
        " (0.0.0.0) and set advertised_address.  Both a wildcard is an error.",
    ),
    Section(
        "peer_servers",
        "The only sources of IIF commands (a datagram from anyone else gets no"
        " answer), and the targets of the legs (outbound_peer).  A host name is"
        " resolved once at start-up (IPv4).  When a port is given, an IIF"
        " datagram must come from exactly that port; without one, any port of"
        " the host is accepted and SIP goes to port 5060.  At least one is"
        " needed; names use letters, digits, _ . - and are case-insensitive.",
        entries="name = host[:port]",
    ),
    Section(
        "peer NAME",
        "What one peer server may do, for a NAME of [peer_servers] (one"
        " section per peer, all optional; a section for a name that is not"
        " in [peer_servers] is an error).  A peer with a key must sign every"
        " command (ts=<unix seconds>;sig=<hex HMAC-SHA256>; at its end, see"
        " docs/signing.md); its unsigned, badly signed or stale commands get"
        " no answer at all and place no call, and the server signs its ACK"
        " and RESPONSE to it.  A REQUEST refused by allow, deny, max_calls,"
        " rate or max_duration gets code=fail; only the peer that created a"
        " callback may CANCEL it or get its ACK/RESPONSE again.",
        optional=True,
        entryOf="peer_servers",
    ),
    Section(
        "external_line",
        "A VoIP provider's account (the spec's \"external line\"), used in"
        " external line mode (the section is read and checked whenever it is"
        " present).  The server REGISTERs the line at start, answers 401/407"
        " digest challenges (MD5, qop=auth), refreshes at half the granted"
        " expiry, retries with back-off (5 s doubling to 300 s) while the"
        " provider fails or does not answer, and unregisters (Expires: 0) when"
        " it stops.  Every leg goes to sip:<user>@<registrar host> through the"
        " proxy, From = number, answering the provider's INVITE challenges"
        " with the same credentials.",
        optional=True,
    ),
    Section(
        "users",
        "Local users (digest auth).  They REGISTER with this server; a leg to"
        " a local number goes to the user's registered contact, and fails at"
        " once (480) when the user is not registered.  Bindings live in memory:"
        " after a restart the phones must register again.  Numbers are 1-31"
        " characters from digits, letters and + * # . - _ (case-insensitive)."
        "  Phones register at this server's SIP address and port, username ="
        " number, digest MD5 with qop=auth, realm = the SIP host ([sip]"
        " advertised_address, else address).  Expiry: default 3600 s, at most"
        " 7200, less than 60 -> 423.  The contact a phone registers must be"
        " reachable from here (no NAT fix-up).",
        entries="number = password",
    ),
    Section("media", "Announcements, ringback and RTP ports."),
    Section(
        "store",
        "The durable callback store (docs/store.md): every accepted callback,"
        " its legs' dialogs and its call record, written before the ACK."
        "  An embedded SQLite file by default; PostgreSQL when several"
        " servers share one id space (an AS that fails over).  A store that"
        " cannot be opened or migrated stops start-up.",
    ),
    Section(
        "http",
        "The operator's HTTP port (docs/operations.md): /metrics in the"
        " Prometheus text format and /health (JSON: 200 when the SIP socket is"
        " up, the external line registered when one is configured, the store"
        " answers and the reactor is not late; 503 naming what fails).  It"
        " tells anyone who can reach it how busy the server is: keep it on"
        " the loopback or a management network.",
    ),
    Section(
        "log",
        "What the log says and how.  Rotation is the system's: run under"
        " systemd (journald) or send the output to a file rotated by"
        " logrotate with copytruncate (docs/operations.md).",
    ),
)

#: Every key of the fixed sections, in the order of the sample file.
# Over 600 lines on purpose: the table of every key, one entry each, is the
# single place a key is declared; splitting it would scatter that.
KEYS: tuple[Key, ...] = (
    # [callback]
    Key(
        "callback",
        "listen_address",
        "listenAddress",
        values.address(),
        "IIF bind address (IPv4 literal or host name)",
        "0.0.0.0",
    ),
    Key(
        "callback",
        "listen_port",
        "listenPort",
        values.udpPort(allowAny=True),
        'IIF UDP port, the spec\'s "Local listen port"; 0 = any free port',
        5080,
    ),
    Key(
        "callback",
        "external_line_mode",
        "externalLineMode",
        values.boolean(),
        "yes: legs go through the external line (a VoIP provider's account,"
        " see [external_line], which is then required); no: server-to-server"
        " mode, legs go to outbound_peer without registration.",
        False,
    ),
    Key(
        "callback",
        "default_caller",
        "defaultCaller",
        values.sipUser(),
        f"The From user of both legs in {_S2S}, where it must be set (some"
        " VoIP providers reject a call with no caller number); 1-31 characters"
        " from digits, letters and + * # . - _.  In external line mode it is"
        " used only when [external_line] number is empty.  Default: empty.",
        "",
        example="1000",
    ),
    Key(
        "callback",
        "user2_caller",
        "user2Caller",
        values.choice("default", "user1"),
        "Whose number user2 sees: default = the leg's usual From user"
        " (default_caller, the line's number, or a local user's caller);"
        " user1 = user1's number (an agent answering a click-to-call sees"
        " the customer).  In external line mode the From user stays the"
        " line's number unless [external_line] from_user = caller.",
        "default",
    ),
    Key(
        "callback",
        "assert_identity",
        "assertIdentity",
        values.boolean(),
        "yes: with user2_caller = user1, user2's INVITE also carries"
        " P-Asserted-Identity: <sip:user1@domain> (RFC 3325; for a provider"
        " or peer that trusts this server), even where the From user stays"
        " the line's number.",
        False,
    ),
    Key(
        "callback",
        "outbound_peer",
        "outboundPeer",
        values.name("a name from [peer_servers]"),
        "The name of the peer server (see [peer_servers]) that receives both"
        f" legs: INVITE sip:<user>@<its host:port>.  Must be set in {_S2S};"
        " not needed in external line mode.  Default: empty.",
        "",
        example="pss",
    ),
    Key(
        "callback",
        "no_answer_timeout",
        "noAnswerTimeout",
        values.seconds(),
        "seconds a leg may ring before it is CANCELled (> 0)",
        60.0,
    ),
    Key(
        "callback",
        "join_timeout",
        "joinTimeout",
        values.seconds(),
        "seconds (> 0) each join re-INVITE may wait for its final answer;"
        " then, or on a failure answer (491 is retried), both legs get a BYE,"
        ' the cause is "join failed" and real_duration is 0',
        8.0,
    ),
    Key(
        "callback",
        "max_duration",
        "maxDuration",
        values.wholeNumber(1),
        "cap for a REQUEST's duration, seconds (>= 1); duration=0 means" ' "this cap"',
        86400,
    ),
    Key(
        "callback",
        "max_calls",
        "maxCalls",
        values.wholeNumber(1),
        'callbacks at once (>= 1); one more gets "ACK: ...;code=fail;"',
        1000,
    ),
    Key(
        "callback",
        "shutdown_timeout",
        "shutdownTimeout",
        values.seconds(),
        "Stopping the service (SIGTERM, Ctrl-C) releases every callback"
        " (BYE/CANCEL) and sends its RESPONSE at once, then waits up to this"
        " many seconds (> 0) for those BYEs and CANCELs to be answered (a lost"
        " one is retransmitted).",
        5.0,
    ),
    Key(
        "callback",
        "max_lag",
        "maxLag",
        values.seconds(allowZero=True),
        "Overload guard, seconds (>= 0; 0 = off): while the server runs later"
        " than this behind its own clock for a sustained time (three 50 ms"
        " ticks in a row, most ticks of the last second, or one stall of three"
        " times this; a sign that the CPU is saturated), new REQUESTs get"
        ' "ACK: ...;code=fail;" instead of making every running callback late'
        " (late BYEs, durations that overrun).  Before that, once ticks later"
        " than half of this recur (two within a second), new callbacks are"
        " paced: at most four"
        " fifths of the rate admitted over the last second, growing by 5 % a"
        " second while the server runs on time; REQUESTs beyond that rate get"
        ' "code=fail" too.  Running callbacks are not touched.',
        0.1,
    ),
    Key(
        "callback",
        "signature_window",
        "signatureWindow",
        values.seconds(),
        "Signed IIF commands (a [peer NAME] with a key): the largest"
        " difference, in seconds (> 0), between the command's ts and this"
        " server's clock; an older or newer command is refused without an"
        " answer.  Keep both clocks synchronised (NTP).",
        30.0,
    ),
    # [sip]
    Key(
        "sip",
        "address",
        "address",
        values.address(),
        "SIP bind address (IPv4 literal or host name).  Default: 0.0.0.0.",
        "0.0.0.0",
        example="127.0.0.1",
    ),
    Key(
        "sip",
        "port",
        "port",
        values.udpPort(allowAny=True),
        "SIP UDP port; 0 = any free port",
        5060,
    ),
    Key(
        "sip",
        "advertised_address",
        "advertisedAddress",
        values.address(optional=True, reachable=True),
        "address for Via/Contact/SDP when it differs from address (NAT);"
        " empty = address",
        "",
    ),
    Key(
        "sip",
        "trace",
        "trace",
        values.boolean(),
        "yes: log every SIP message sent and received",
        False,
    ),
    Key(
        "sip",
        "max_requests_per_source",
        "maxRequestsPerSource",
        values.wholeNumber(0),
        "requests outside our calls (INVITE, OPTIONS, REGISTER, bad"
        " messages...) per second from one address before it is ignored"
        " for block_time; requests in our calls are never limited; 0 = no limit",
        50,
    ),
    Key(
        "sip",
        "block_time",
        "blockTime",
        values.seconds(),
        "seconds an address over max_requests_per_source is ignored",
        60.0,
    ),
    # [peer NAME]
    Key(
        _PEER,
        "commands",
        "commands",
        values.optionalBoolean(),
        "yes: this peer may send IIF commands; no: its datagrams are dropped"
        " like a stranger's.  Empty means yes, except for [callback]"
        " outbound_peer (the SIP peer must not become an application server"
        " by accident).  Default: empty.",
        None,
        example="yes",
    ),
    Key(
        _PEER,
        "key",
        "key",
        values.secretKey(),
        "The HMAC key this peer signs with: file:<path> (relative to the"
        " configuration file's directory; one trailing line end removed) or"
        " the secret itself, at least 16 bytes.  When set, every command"
        " must be signed.  Empty: unsigned commands.  Default: empty.",
        None,
        example="file:as1.key",
    ),
    Key(
        _PEER,
        "allow",
        "allow",
        values.patterns(),
        "Comma-separated shell patterns (* ? [...]) that user1 and user2 must"
        " both match; empty = any number.  Default: empty.",
        (),
        example="+49*, 0[1-9]*",
    ),
    Key(
        _PEER,
        "deny",
        "deny",
        values.patterns(),
        "Comma-separated shell patterns that neither user1 nor user2 may"
        " match; deny wins over allow.  Default: empty.",
        (),
        example="0900*, 00*, +882*, *#*",
    ),
    Key(
        _PEER,
        "max_calls",
        "maxCalls",
        values.wholeNumber(0),
        "callbacks of this peer at once; 0 = no limit but [callback]"
        " max_calls.  Default: 0.",
        0,
        example="100",
    ),
    Key(
        _PEER,
        "rate",
        "rate",
        values.rate(),
        "new REQUESTs per second from this peer (token bucket, burst = rate);"
        " 0 = no limit.  Default: 0.",
        0.0,
        example="20",
    ),
    Key(
        _PEER,
        "max_duration",
        "maxDuration",
        values.wholeNumber(0),
        "cap of this peer's durations, seconds (at most [callback]"
        " max_duration; duration=0 means this cap); 0 = [callback]"
        " max_duration.  Default: 0.",
        0,
        example="3600",
    ),
    Key(
        _PEER,
        "response_details",
        "responseDetails",
        values.boolean(),
        "yes: this peer's RESPONSEs carry, after real_duration, cause,"
        " answer1, answer2, joined, ended (unix ms) and status1, status2 (SIP"
        " codes), see docs/iif.md; no: the spec's exact RESPONSE.  Default:"
        " no.",
        False,
        example="yes",
    ),
    # [external_line]
    Key(
        "external_line",
        "registrar",
        ("registrarHost", "registrarAddress"),
        values.hostPort(
            keepHost=True, emptyProblem="must be the provider's host[:port], got ''"
        ),
        "where REGISTER goes: host[:port], port 5060 by default; the host as"
        " written is the domain of R-URI/From/To.  No default.",
        example="sip.provider.example:5060",
    ),
    Key(
        "external_line",
        "proxy",
        "proxy",
        values.hostPort(keepHost=False, emptyProblem=None),
        "where INVITEs (and REGISTERs) are sent, host[:port]; empty = the" " registrar",
        None,
    ),
    Key(
        "external_line",
        "username",
        "username",
        values.sipUser(
            64, emptyProblem="must be the provider account's user name, got ''"
        ),
        "the account's digest user name (also To/From user of REGISTER).  No"
        " default.",
        example="1234567",
    ),
    Key(
        "external_line",
        "password",
        "password",
        values.password(),
        "the account's digest password.  No default.",
        example="secret",
    ),
    Key(
        "external_line",
        "number",
        "number",
        values.sipUser(sayEmpty=True),
        "the line's number: From user of every leg; empty = [callback]"
        " default_caller.  Default: empty.",
        "",
        example="1234567",
    ),
    Key(
        "external_line",
        "from_user",
        "fromUser",
        values.choice("line", "caller"),
        "From user of a leg that shows a caller ([callback] user2_caller ="
        " user1): with line, the line's number as always (most providers"
        " refuse another one); with caller, the caller's number, for a"
        " provider that allows it.",
        "line",
    ),
    Key(
        "external_line",
        "register",
        "register",
        values.boolean(),
        "no: do not REGISTER (providers that authenticate each call only)",
        True,
    ),
    Key(
        "external_line",
        "expires",
        "expires",
        values.wholeNumber(10, 86400),
        "registration lifetime asked for, 10-86400 s (the provider may grant" " less)",
        3600,
    ),
    # [media]
    Key(
        "media",
        "prompts",
        "prompts",
        values.directory(empty=values.PACKAGED_PROMPTS),
        "Directory of announcement audio (<8-digit ann id>.wav,"
        " digits/0..9.wav); a relative path is relative to the directory of"
        " the configuration file.  Empty: the prompts shipped with callback_tw"
        " (the default announcement 00080002, 00080003 and the ten digits).",
        values.PACKAGED_PROMPTS,
    ),
    Key(
        "media",
        "default_ann_id1",
        "defaultAnnId1",
        values.annId(),
        "Announcement for user1 when a REQUEST has no ann_id1: exactly 8"
        ' digits (the spec\'s default "ann1" is 00080002), or empty for none.',
        "00080002",
    ),
    Key(
        "media",
        "ringback_frequency",
        "ringbackFrequency",
        values.toneFrequency(),
        "Hz of the ringback tone played while a leg rings; 0 = no ringback",
        425,
    ),
    Key(
        "media",
        "ringback_cadence",
        "ringbackCadence",
        values.cadence(),
        "ringback seconds on,off (on > 0, off >= 0)",
        (1.0, 4.0),
    ),
    Key(
        "media",
        "rtp_ports",
        "rtpPorts",
        values.portRange(),
        'Local RTP ports, "low-high" (inclusive, 1024-65535), e.g.'
        " 10000-20000; an empty value means any free port.  One port is used"
        " per leg while it is not joined.",
        None,
    ),
    # [store]
    Key(
        "store",
        "url",
        "url",
        values.storeURL(),
        "sqlite:///path/to/callbacks.db (a relative path is relative to this"
        " file's directory; four slashes for an absolute one) or"
        " postgresql://user:password@host:port/dbname (percent-escape @ : /"
        " in the password; it never appears in a log line)",
        "sqlite:///callbacks.db",
    ),
    Key(
        "store",
        "server_id",
        "serverId",
        values.serverId(),
        "this server's name in the store: the owner of the callbacks it"
        " accepts, the only ones its recovery touches after a restart.  Each"
        " server sharing one PostgreSQL database needs its own; keep it when"
        " the host is renamed.  Empty = the host name, a colon and [sip] port.",
        "",
    ),
    Key(
        "store",
        "request_memory",
        "requestMemory",
        values.seconds(),
        "Seconds (> 0) a finished callback's id is remembered, counted from"
        " its end: a REQUEST repeated within that time (UDP repeats"
        " datagrams, an AS repeats when a RESPONSE is missing) gets the same"
        " ACK and RESPONSE again and never a second call, across restarts"
        " too; after it, the id may be used again.",
        86400.0,
    ),
    Key(
        "store",
        "retention_days",
        "retentionDays",
        values.wholeNumber(1),
        "days (>= 1) a finished callback's record is kept; older ones are"
        " deleted by a daily job",
        90,
    ),
    # [http]
    Key(
        "http",
        "listen_address",
        "listenAddress",
        values.address(),
        "bind address of /metrics and /health (IPv4 literal or host name)",
        "127.0.0.1",
    ),
    Key(
        "http",
        "listen_port",
        "listenPort",
        values.udpPort(allowAny=False, zeroMeansOff=True),
        "TCP port of /metrics and /health; 0 = no HTTP port at all",
        9280,
    ),
    # [log]
    Key(
        "log",
        "level",
        "level",
        values.oneOf(("debug", "info", "warn", "error", "critical")),
        "the least severe events written: info writes one line per finished"
        " callback (its id, peer, users, each leg's outcome, real_duration and"
        " cause) and what needs an operator; debug adds every step of every"
        " callback",
        "info",
    ),
    Key(
        "log",
        "format",
        "format",
        values.oneOf(("text", "json")),
        "text: one line per event; json: one JSON object per line"
        " (twisted.logger's event format, with every field of the event)",
        "text",
    ),
)

#: Keys that moved: C{(section, name)} -> the section that has them now.  A
#: file still using the old place gets a one-line error saying where.
MOVED: dict[tuple[str, str], str] = {("callback", "request_memory"): "store"}

_BY_NAME = {(k.section, k.name): k for k in KEYS}


def key(section: str, name: str) -> Key:
    """
    The key C{name} of C{section}.

    @raise KeyError: when the table has no such key.
    """
    return _BY_NAME[(section, name)]


def templateOf(name: str) -> Section | None:
    """
    The template section a section written C{name} is an instance of
    (C{"peer as1"} -> the C{"peer NAME"} section), or L{None}.
    """
    for section in SECTIONS:
        prefix = section.prefix
        if prefix is not None and name.startswith(prefix):
            return section
    return None


def keysOf(section: str) -> tuple[Key, ...]:
    """
    The keys of C{section}, in the table's order (empty for a free-form
    section).
    """
    return tuple(k for k in KEYS if k.section == section)
