# -*- test-case-name: tests.test_config -*-
"""
The rules a single value must follow, one L{Parser} per kind of value.

A parser knows nothing of files, sections or keys: it turns the text of one
value into what the server runs with, or raises L{Invalid} with what is wrong
(the reader adds where).  It also writes a value back as text, so that the
key table can state each default once, as a value, and the sample file and
the reference can show it as it would be written.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from callback_tw.iif.signing import loadKey
from callback_tw.policy import parsePatterns
from callback_tw.store.url import parseURL, redact
from callback_tw.syntax import SIP_USER_CHARACTERS, SIP_USER_MAX_LENGTH, isSipUser

__all__ = [
    "WILDCARD_ADDRESSES",
    "Context",
    "HostPort",
    "Invalid",
    "PACKAGED_PROMPTS",
    "Parser",
    "Resolver",
    "parseHostPort",
]

#: Addresses that mean "every local address": good for binding, useless in a
#: Via, Contact or SDP, which must carry an address a peer can reach.
WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0"})

#: The prompts shipped inside the package (package data): the default
#: announcement 00080002, 00080003 and the digits.  Found beside the code
#: rather than through L{callback_tw.media}, which this module must not import.
PACKAGED_PROMPTS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "media", "prompts"
)

#: Turns a host name into one IPv4 address literal; raises L{OSError}.
Resolver = Callable[[str], str]

_INTEGER = re.compile(r"[+-]?[0-9]+\Z")
_ANN_ID = re.compile(r"[0-9]{8}\Z")
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


class Invalid(ValueError):
    """
    A value breaks its rule.

    @ivar problem: what is wrong, one line, the value quoted with C{repr()}.
    """

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


@dataclass(frozen=True)
class Context:
    """
    What parsing a value may need beyond its text.

    @ivar resolve: resolves host names (blocking, start-up only).
    @ivar baseDir: the configuration file's directory, for relative paths.
    """

    resolve: Resolver
    baseDir: str


@dataclass(frozen=True)
class Parser:
    """
    One kind of value.

    @ivar rule: what a value must be, in a few words, for the reference.
    @ivar parse: C{(text, context) -> value}; raises L{Invalid}.
    @ivar text: C{value -> text}, the value as written in a file.
    """

    rule: str
    parse: Callable[[str, Context], Any]
    text: Callable[[Any], str] = str


class HostPort(NamedTuple):
    """
    A C{host[:port]} value.

    @ivar host: the host as written (a SIP domain keeps its spelling).
    @ivar address: C{host} as an IPv4 literal, resolved.
    @ivar port: the port written, or the default asked for (maybe L{None}).
    """

    host: str
    address: str
    port: int | None


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _secondsText(value: float) -> str:
    """C{60.0} as C{"60"}, C{0.1} as C{"0.1"}: the way a person writes it."""
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def hostAddress(value: str, resolve: Resolver) -> str:
    """
    C{value} as an IPv4 literal: kept when it is one, else resolved.

    @raise Invalid: for an IPv6 literal or a name that does not resolve.
    """
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        pass
    if ":" in value or value.startswith("["):
        raise Invalid(f"must be an IPv4 address or a host name, got {value!r}")
    try:
        return resolve(value)
    except (OSError, UnicodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise Invalid(f"cannot resolve {value!r}: {reason}") from None


def parseHostPort(value: str, resolve: Resolver, defaultPort: int | None) -> HostPort:
    """
    The one reading of C{host[:port]} (peer servers, registrar, proxy): an
    IPv4 literal or host name, resolved, never a wildcard, and a port from
    1 to 65535 or C{defaultPort} when none is written.

    @raise Invalid: naming what is wrong with C{value}.
    """
    host, sep, portText = value.rpartition(":")
    if not sep:
        host, portText = value, ""
    if ":" in host or host.startswith("["):
        raise Invalid(f"must be host[:port] with an IPv4 host, got {value!r}")
    port = defaultPort
    if sep:
        if not (_INTEGER.match(portText) and 1 <= int(portText) <= 65535):
            raise Invalid(f"must be host[:port], port from 1 to 65535, got {value!r}")
        port = int(portText)
    if not host:
        raise Invalid(f"must be host[:port], got {value!r}")
    address = hostAddress(host, resolve)
    if address in WILDCARD_ADDRESSES:
        raise Invalid(f"must be a concrete address, got {value!r}")
    return HostPort(host, address, port)


def boolean() -> Parser:
    """yes/no, true/false, on/off, 1/0, in any case."""

    def parse(value: str, context: Context) -> bool:
        try:
            return _BOOLEANS[value.lower()]
        except KeyError:
            raise Invalid(
                f"must be yes/no/true/false/on/off/1/0, got {value!r}"
            ) from None

    return Parser("yes or no (also true/false, on/off, 1/0)", parse, _yesNo)


def _yesNo(value: bool) -> str:
    return "yes" if value else "no"


def optionalBoolean() -> Parser:
    """
    Like L{boolean}, or empty for L{None}: the reader then applies a rule of
    its own (C{[peer NAME] commands} depends on the peer).
    """
    strict = boolean()

    def parse(value: str, context: Context) -> bool | None:
        return None if not value else strict.parse(value, context)

    return Parser(
        strict.rule + ", or empty",
        parse,
        lambda value: "" if value is None else _yesNo(value),
    )


def secretKey() -> Parser:
    """
    An HMAC key (L{callback_tw.iif.signing.loadKey}): C{file:<path>}, relative
    to the configuration file's directory, or the secret itself; empty for
    none.  Errors never quote the secret, and the value is bytes that are
    never written back (its text is empty).
    """

    def parse(value: str, context: Context) -> bytes | None:
        if not value:
            return None
        try:
            return loadKey(value, context.baseDir)
        except ValueError as e:
            raise Invalid(str(e)) from None

    return Parser(
        "file:<path>, or the secret itself (at least 16 bytes), or empty",
        parse,
        lambda value: "",
    )


def storeURL() -> Parser:
    """
    A store URL (L{callback_tw.store.url.parseURL}): C{sqlite:///path},
    whose relative path is made absolute against the configuration file's
    directory here, so the server and C{callback-cdr --config} open the
    same file whatever their working directory; or C{postgresql://...},
    kept as written.  Errors show the URL without its password.
    """

    def parse(value: str, context: Context) -> str:
        try:
            parsed = parseURL(value, context.baseDir)
        except Exception as e:
            problem = str(e).split(": ", 1)[-1]
            raise Invalid(f"{problem}, got {redact(value)!r}") from None
        if parsed.dialect == "sqlite":
            return "sqlite:///" + str(parsed.path)
        return value

    return Parser(
        "sqlite:///path (relative to this file) or"
        " postgresql://user:password@host:port/dbname",
        parse,
    )


def serverId() -> Parser:
    """A server's name in the store: printable, no blanks, or empty."""

    def parse(value: str, context: Context) -> str:
        if len(value) > 100 or any(not c.isprintable() or c.isspace() for c in value):
            raise Invalid(
                f"must be at most 100 printable characters without blanks,"
                f" got {value!r}"
            )
        return value

    return Parser("a name without blanks, or empty (host name:SIP port)", parse)


def patterns() -> Parser:
    """
    Comma-separated shell patterns (L{callback_tw.policy.parsePatterns}),
    as a tuple; empty for none.
    """

    def parse(value: str, context: Context) -> tuple[str, ...]:
        try:
            found = parsePatterns(value)
        except ValueError as e:
            raise Invalid(str(e)) from None
        bad = [p for p in found if any(ord(c) < 33 or ord(c) == 127 for c in p)]
        if bad:
            raise Invalid(f"a pattern must not contain blanks, got {bad[0]!r}")
        return found

    return Parser(
        "comma-separated shell patterns (* ? [...]), or empty",
        parse,
        ", ".join,
    )


def rate() -> Parser:
    """Events per second, a finite number >= 0 (0: no limit)."""
    wanted = "a number of events per second >= 0 (0: no limit)"

    def parse(value: str, context: Context) -> float:
        number = _number(value)
        if number is None or number < 0:
            raise Invalid(f"must be {wanted}, got {value!r}")
        return number

    return Parser(wanted, parse, _secondsText)


def oneOf(words: tuple[str, ...]) -> Parser:
    """One of C{words}, in any case."""
    wanted = "one of " + ", ".join(words)

    def parse(value: str, context: Context) -> str:
        if value.lower() not in words:
            raise Invalid(f"must be {wanted}, got {value!r}")
        return value.lower()

    return Parser(wanted, parse)


def wholeNumber(low: int, high: int | None = None) -> Parser:
    """A whole number from C{low} (to C{high})."""
    if high is None:
        wanted = f"a whole number >= {low}"
    else:
        wanted = f"a whole number from {low} to {high}"

    def parse(value: str, context: Context) -> int:
        number = int(value) if _INTEGER.match(value) else None
        if number is None or number < low or (high is not None and number > high):
            raise Invalid(f"must be {wanted}, got {value!r}")
        return number

    return Parser(wanted, parse)


def seconds(*, allowZero: bool = False) -> Parser:
    """A finite number of seconds, > 0 (or >= 0 when C{allowZero})."""
    wanted = "a number of seconds " + (">= 0" if allowZero else "> 0")

    def parse(value: str, context: Context) -> float:
        number = _number(value)
        if number is None or number < 0 or (number == 0 and not allowZero):
            raise Invalid(f"must be {wanted}, got {value!r}")
        return number

    return Parser(wanted, parse, _secondsText)


def udpPort(*, allowAny: bool, zeroMeansOff: bool = False) -> Parser:
    """
    A port; 0 too when C{allowAny} (any free port) or C{zeroMeansOff} (the
    port is not opened at all).
    """
    wanted = "a UDP port from 1 to 65535"
    if allowAny:
        wanted += " (0: any free port)"
    elif zeroMeansOff:
        wanted = "a TCP port from 1 to 65535 (0: off)"

    def parse(value: str, context: Context) -> int:
        number = int(value) if _INTEGER.match(value) else None
        lowest = 0 if allowAny or zeroMeansOff else 1
        if number is None or not lowest <= number <= 65535:
            raise Invalid(f"must be {wanted}, got {value!r}")
        return number

    return Parser(wanted, parse)


def address(*, optional: bool = False, reachable: bool = False) -> Parser:
    """
    An IPv4 literal or a host name resolved to one; empty when C{optional};
    never a wildcard when C{reachable} (it is written for peers to use).
    """
    rule = "an IPv4 address or a host name"
    if optional:
        rule += ", or empty"

    def parse(value: str, context: Context) -> str:
        if not value:
            if optional:
                return ""
            raise Invalid("must be an IPv4 address or a host name, got ''")
        resolved = hostAddress(value, context.resolve)
        if reachable and resolved in WILDCARD_ADDRESSES:
            raise Invalid(f"must be an address peers can reach, got {resolved!r}")
        return resolved

    return Parser(rule, parse)


def hostPort(*, keepHost: bool, emptyProblem: str | None) -> Parser:
    """
    C{host[:port]}, port 5060 when not written (see L{parseHostPort}).

    @param keepHost: the value is C{(host as written, (address, port))}
        instead of C{(address, port)}.
    @param emptyProblem: the error for an empty value, or L{None} when empty
        means "not set" (the value is then L{None}).
    """

    def parse(value: str, context: Context) -> Any:
        if not value:
            if emptyProblem is not None:
                raise Invalid(emptyProblem)
            return None
        found = parseHostPort(value, context.resolve, 5060)
        sendTo = (found.address, found.port)
        return (found.host, sendTo) if keepHost else sendTo

    rule = "host[:port], port 5060 by default"
    if emptyProblem is None:
        rule += "; or empty"
    return Parser(rule, parse, lambda value: "" if value is None else value)


def sipUser(
    maxLength: int = SIP_USER_MAX_LENGTH,
    *,
    emptyProblem: str | None = None,
    sayEmpty: bool = False,
) -> Parser:
    """
    A SIP user (L{callback_tw.syntax}); empty allowed unless C{emptyProblem}
    says why not.  C{sayEmpty}: the error says that empty is allowed.
    """
    wanted = f"1-{maxLength} characters from {SIP_USER_CHARACTERS}"
    if sayEmpty:
        wanted = "empty or " + wanted

    def parse(value: str, context: Context) -> str:
        if not value:
            if emptyProblem is not None:
                raise Invalid(emptyProblem)
            return ""
        if not isSipUser(value, maxLength):
            raise Invalid(f"must be {wanted}, got {value!r}")
        return value

    rule = wanted if emptyProblem is not None or sayEmpty else wanted + ", or empty"
    return Parser(rule, parse)


def choice(*words: str) -> Parser:
    """One of C{words}, in any case; the value is the word in lower case."""

    def parse(value: str, context: Context) -> str:
        word = value.lower()
        if word not in words:
            raise Invalid(f"must be {' or '.join(words)}, got {value!r}")
        return word

    return Parser(" or ".join(words), parse)


def name(rule: str) -> Parser:
    """A name from a free-form section, case-insensitive like INI keys."""
    return Parser(rule, lambda value, context: value.lower())


def password(
    *,
    emptyProblem: str = "must not be empty",
    controlProblem: str = "must not contain control characters",
) -> Parser:
    """Any text but empty or with control characters (it goes in a digest)."""

    def parse(value: str, context: Context) -> str:
        if not value:
            raise Invalid(emptyProblem)
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise Invalid(controlProblem)
        return value

    return Parser("any text without control characters", parse)


def directory(empty: str | None = None) -> Parser:
    """
    An existing directory, relative to the configuration file's.

    @param empty: the directory an empty value means, written back as the
        empty text (the prompts shipped in the package, whose absolute path
        differs from one installation to the next); L{None}: a directory
        must be named.
    """

    def parse(value: str, context: Context) -> str:
        if not value:
            if empty is not None:
                return empty
            raise Invalid("must name a directory, got ''")
        path = os.path.join(context.baseDir, os.path.expanduser(value))
        path = os.path.normpath(path)
        if not os.path.isdir(path):
            raise Invalid(f"no such directory: {path!r}")
        return path

    def text(value: str) -> str:
        return "" if value == empty else value

    rule = "a directory, relative to the configuration file's"
    if empty is not None:
        rule += "; empty: the one shipped with callback_tw"
    return Parser(rule, parse, text)


def annId() -> Parser:
    """An 8-digit announcement id, or empty for none."""

    def parse(value: str, context: Context) -> str:
        if value and not _ANN_ID.match(value):
            raise Invalid(f"must be exactly 8 digits or empty, got {value!r}")
        return value

    return Parser("8 digits, or empty", parse)


def toneFrequency() -> Parser:
    """A tone in Hz below 4 kHz (G.711 carries up to 4 kHz), 0 for none."""

    def parse(value: str, context: Context) -> int:
        if not (_INTEGER.match(value) and 0 <= int(value) <= 3999):
            raise Invalid(
                "must be 0 (no ringback) or a tone from 1 to 3999 Hz," f" got {value!r}"
            )
        return int(value)

    return Parser("0, or 1 to 3999 Hz", parse)


def cadence() -> Parser:
    """C{on,off} seconds, on > 0 and off >= 0."""

    def parse(value: str, context: Context) -> tuple[float, float]:
        parts = [_number(p.strip()) for p in value.split(",")]
        if len(parts) == 2:
            on, off = parts
            if on is not None and off is not None and on > 0 and off >= 0:
                return (on, off)
        raise Invalid(f"must be 'on,off' seconds, on > 0 and off >= 0, got {value!r}")

    return Parser(
        "'on,off' seconds, on > 0, off >= 0",
        parse,
        lambda value: f"{value[0]!r},{value[1]!r}",
    )


def portRange() -> Parser:
    """C{low-high}, an inclusive range of unprivileged ports, or empty."""

    def parse(value: str, context: Context) -> tuple[int, int] | None:
        if not value:
            return None
        low, dash, high = (p.strip() for p in value.partition("-"))
        if not (
            dash
            and _INTEGER.match(low)
            and _INTEGER.match(high)
            and 1024 <= int(low) <= int(high) <= 65535
        ):
            raise Invalid(
                "must be empty (any free port) or 'low-high' with"
                f" 1024 <= low <= high <= 65535, got {value!r}"
            )
        return (int(low), int(high))

    return Parser(
        "'low-high' within 1024-65535, or empty",
        parse,
        lambda value: "" if value is None else f"{value[0]}-{value[1]}",
    )
