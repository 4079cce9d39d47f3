"""
A real VoIP provider for the external line tests: Kamailio (Debian package
C{kamailio}) on loopback, as registrar with digest authentication and as the
proxy that challenges the legs (407) and relays them to the SIPp UAS.

The configuration is a template kept beside this file
(C{kamailio/provider.cfg}); L{KamailioProvider} renders it into the test's
directory, starts C{kamailio} in the foreground (bounded by C{timeout}, so it
cannot outlive a crashed test run) and parses the C{KAM|...} lines its
script logs to stderr into L{KamEvent}s: what the provider received and what
it decided.

L{ExternalLineServer} is the callback server with an C{[external_line]}
section; L{startExternalLineWorld} starts SIPp, Kamailio, an AS client and
the server for one test, and stops them server first (so its unregistration
reaches Kamailio).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred

from tests.e2e.loopback import LOOPBACK, freePort
from tests.e2e.peers import ASClient
from tests.e2e.processes import (
    ChildProcess,
    ServerProcess,
    SippUAS,
    startManaged,
)

KAMAILIO = shutil.which("kamailio") or (
    "/usr/sbin/kamailio" if os.access("/usr/sbin/kamailio", os.X_OK) else None
)
CONFIG_TEMPLATE = Path(__file__).resolve().parent / "kamailio" / "provider.cfg"

#: What each kind of C{KAM|<kind>|...} line carries (see provider.cfg).
_FIELDS = {
    "req": ("method", "ruri", "fromUri", "cseq", "expires", "authUser", "callId"),
    "challenge": ("code", "method", "callId"),
    "authfail": ("method", "authUser", "rc", "callId"),
    "saved": ("toUri", "expires", "callId"),
    "relay": ("ruri", "fromUri", "callId"),
}


def _modulesDirectory() -> str | None:
    for pattern in ("/usr/lib/*/kamailio/modules", "/usr/lib/kamailio/modules"):
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return None


@dataclass(frozen=True)
class KamEvent:
    """
    One C{KAM|...} line: C{kind} (req, challenge, authfail, saved, relay),
    its fields by name (Kamailio writes C{<null>} for a missing value), and
    when this process read it (C{time.time()}).
    """

    kind: str
    fields: Mapping[str, str]
    time: float

    def __getitem__(self, name: str) -> str:
        return self.fields[name]

    def describe(self) -> str:
        return f"{self.time:.3f} {self.kind} " + " ".join(
            f"{k}={v}" for k, v in self.fields.items()
        )


class KamailioProvider(ChildProcess):
    """
    Kamailio playing the provider of one account.

    @ivar port: its SIP port on 127.0.0.1 (the line's registrar and proxy).
    @ivar username: the account; C{password} its password.
    @ivar maxExpires: the longest registration it grants (short, so that a
        test sees refreshes).
    @ivar events: every L{KamEvent} so far, in order.
    """

    #: the configuration template rendered for each run
    template = CONFIG_TEMPLATE

    stopGrace = 5.0

    def __init__(
        self,
        directory: str,
        uasPort: int,
        username: str = "line1",
        password: str = "pw1",
        maxExpires: int = 8,
        port: int | None = None,
        lifetime: float = 150.0,
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor  # type: ignore[no-redef]
        super().__init__(reactor, "kamailio")
        if KAMAILIO is None:
            raise RuntimeError("kamailio is not installed (Debian package kamailio)")
        self.directory = Path(directory).resolve()
        self.uasPort = uasPort
        self.username = username
        self.password = password
        self.maxExpires = maxExpires
        self.port = port or freePort()
        self.lifetime = lifetime
        self.events: list[KamEvent] = []
        self._partial = ""
        self.configPath = self.directory / f"kamailio-{self.port}.cfg"
        self.runDirectory = self.directory / f"kamailio-{self.port}-run"

    def render(self) -> Path:
        """Write the configuration for this account and ports."""
        text = self.template.read_text()
        values = {
            "LISTEN_PORT": self.port,
            "UAS_PORT": self.uasPort,
            "USERNAME": self.username,
            "PASSWORD": self.password,
            "MAX_EXPIRES": self.maxExpires,
        }
        for name, value in values.items():
            text = text.replace(f"@@{name}@@", str(value))
        left = re.findall(r"@@[A-Z_]+@@", text)
        if left:
            raise ValueError(f"{self.template}: {left[0]} was not replaced")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.runDirectory.mkdir(parents=True, exist_ok=True)
        self.configPath.write_text(text)
        return self.configPath

    def argv(self) -> list[str]:
        argv = [
            shutil.which("timeout") or "/usr/bin/timeout",
            "--kill-after=5",
            f"{int(self.lifetime)}",
            KAMAILIO,
            "-DD",  # foreground (children are still forked)
            "-E",  # log to stderr
            "-f", str(self.configPath),
            "-Y", str(self.runDirectory),
            "-P", str(self.runDirectory / "kamailio.pid"),
            "-m", "32",
            "-M", "4",
        ]  # fmt: skip
        modules = _modulesDirectory()
        if modules:
            argv += ["-L", modules]
        return argv

    def start(self, timeout: float = 10.0) -> Deferred:
        """Start Kamailio; fire with C{self} once its SIP port is bound."""
        self.render()
        return self._spawnUntilBound(
            self.argv(), str(self.directory), dict(os.environ), self.port, timeout
        )

    def stop(self) -> Deferred:
        return self.terminate(self.stopGrace)

    def outputReceived(self, text: str) -> None:
        now = time.time()
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            marker = line.find("KAM|")
            if marker < 0:
                continue
            kind, *values = line[marker + 4 :].rstrip("\r").split("|")
            names = _FIELDS.get(kind)
            if names is None or len(values) != len(names):
                continue
            self.events.append(
                KamEvent(kind, dict(zip(names, values, strict=True)), now)
            )

    def of(self, kind: str, **match: str) -> list[KamEvent]:
        """The events of C{kind} whose fields equal C{match}."""
        return [
            e
            for e in self.events
            if e.kind == kind and all(e.fields.get(k) == v for k, v in match.items())
        ]

    def describeEvents(self) -> str:
        return "\n".join(e.describe() for e in self.events) or "(no events)"


class ExternalLineServer(ServerProcess):
    """
    The callback server in external line mode: L{ServerProcess} plus an
    C{[external_line]} section (C{line}, key -> value).
    """

    def __init__(
        self,
        directory: str,
        peerPort: int,
        asPorts: int | Sequence[int],
        line: Mapping[str, Any],
        reactor: Any = None,
        **overrides: Any,
    ) -> None:
        overrides.setdefault("external_line_mode", True)
        super().__init__(directory, peerPort, asPorts, reactor=reactor, **overrides)
        self.sections["external_line"] = dict(line)


@dataclass
class ExternalLineWorld:
    server: ExternalLineServer
    provider: KamailioProvider
    uas: SippUAS
    client: ASClient


@defer.inlineCallbacks
def startExternalLineWorld(
    testCase: Any,
    reactor: Any = None,
    password: str = "pw1",
    maxExpires: int = 8,
    line: Mapping[str, Any] | None = None,
    providerClass: type[KamailioProvider] | None = None,
    scenario: Path | None = None,
    **overrides: Any,
) -> Any:
    """
    Start SIPp (the phones), Kamailio (the provider, account line1/pw1), an
    AS client and the server whose line uses C{password}, for C{testCase};
    teardown is registered server first, so its unregistration reaches
    Kamailio and its release reaches SIPp.

    @param line: C{[external_line]} values replacing the defaults (registrar
        and proxy = Kamailio, username line1, number 5551000).
    @param providerClass: the Kamailio to run (default L{KamailioProvider}).
    @param scenario: the phones' SIPp scenario (default the phone farm).
    @param overrides: other server config values, as for L{ServerProcess}.
    """
    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]
    directory = Path(testCase.mktemp())
    directory.mkdir(parents=True)
    uasArgs = {} if scenario is None else {"scenario": scenario}
    uas = SippUAS(str(directory), reactor=reactor, lifetime=150, **uasArgs)
    yield startManaged(testCase, uas)
    provider = (providerClass or KamailioProvider)(
        str(directory), uas.port, maxExpires=maxExpires, reactor=reactor
    )
    yield startManaged(testCase, provider)
    client = ASClient(reactor)
    client.start()
    testCase.addCleanup(client.stop)
    values = {
        "registrar": f"{LOOPBACK}:{provider.port}",
        "proxy": "",
        "username": "line1",
        "password": password,
        "number": "5551000",
        "register": True,
        "expires": 3600,
    }
    values.update(line or {})
    overrides.setdefault("outbound_peer", "")
    server = ExternalLineServer(
        str(directory), uas.port, client.port, values, reactor=reactor, **overrides
    )
    client.defaultTarget = server.iifAddress
    yield startManaged(testCase, server)
    return ExternalLineWorld(server, provider, uas, client)


# ------------------------------------------------ a record-routing provider

#: The record-routing provider (L{RecordRoutingProvider}).
RR_CONFIG_TEMPLATE = CONFIG_TEMPLATE.parent / "provider_rr.cfg"
#: The phones that copy Record-Route into their responses.
RR_UAS_SCENARIO = Path(__file__).resolve().parent / "scenarios" / "uas_rr.xml"

# The in-dialog lines of provider_rr.cfg (provider.cfg never logs them).
_FIELDS.update(
    {
        "dialog": ("method", "ruri", "route", "source", "callId"),
        "routed": ("method", "ruri", "dst", "callId"),
        "unrouted": ("method", "ruri", "callId"),
    }
)


class RecordRoutingProvider(KamailioProvider):
    """
    L{KamailioProvider} rendering C{kamailio/provider_rr.cfg}: it
    record-routes the INVITEs it relays and routes in-dialog requests only by
    their Route headers (C{loose_route()}), logging each one as C{dialog},
    then C{routed} or C{unrouted}.
    """

    template = RR_CONFIG_TEMPLATE


def startRecordRoutingWorld(
    testCase: Any, reactor: Any = None, **overrides: Any
) -> Deferred:
    """
    As L{startExternalLineWorld}, but the provider record-routes
    (L{RecordRoutingProvider}) and the phones echo Record-Route
    (C{scenarios/uas_rr.xml}).
    """
    return startExternalLineWorld(
        testCase,
        reactor,
        providerClass=RecordRoutingProvider,
        scenario=RR_UAS_SCENARIO,
        **overrides,
    )
