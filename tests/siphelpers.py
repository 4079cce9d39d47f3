"""
Test helpers for the SIP layer: a reactor whose clock the test drives and
whose UDP ports record what is sent, and a tiny far end that answers the
requests the server sends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from twisted.internet.task import Clock

from callback_tw.sip import adapter
from callback_tw.sip.routing import Route
from callback_tw.sip.stack import SipStack

#: The route of a test leg: to the L{FarEnd}, From user 1000.
FAR_ROUTE = Route(("127.0.0.1", 5099), "1000", "far end")


@dataclass
class Sent:
    """One datagram the server sent."""

    time: float
    data: str
    addr: tuple[str, int]

    @property
    def firstLine(self) -> str:
        return self.data.split("\r\n", 1)[0]

    @property
    def method(self) -> str:
        first = self.firstLine
        return (
            first.split(" ", 2)[1]
            if first.startswith("SIP/2.0")
            else first.split(" ", 1)[0]
        )

    def header(self, name: str) -> str | None:
        return headerOf(self.data, name)


def headerOf(message: str, name: str) -> str | None:
    head = message.split("\r\n\r\n", 1)[0]
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return None


def bodyOf(message: str) -> str:
    return message.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in message else ""


class FakeUdpPort:
    """What C{adoptDatagramPort} returns: records writes, never sends."""

    def __init__(
        self, clock: Clock, protocol: object, fd: int, maxPacketSize: int
    ) -> None:
        self._clock = clock
        self.protocol = protocol
        self.maxPacketSize = maxPacketSize
        self.sent: list[Sent] = []
        self.closed = False

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append(Sent(self._clock.seconds(), data.decode(), addr))

    def stopListening(self):
        from twisted.internet.defer import succeed

        self.closed = True
        return succeed(None)


class FakeSipReactor(Clock):
    """
    A L{Clock} that sippy can use for both timers and UDP: the socket is
    really bound (sippy's constructor needs that) but datagrams go to a
    L{FakeUdpPort}, and the test delivers incoming ones with L{deliver}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ports: list[FakeUdpPort] = []

    def adoptDatagramPort(self, fd, family, protocol, maxPacketSize=8192):
        port = FakeUdpPort(self, protocol, fd, maxPacketSize)
        self.ports.append(port)
        return port

    def callFromThread(self, f, *a, **kw):
        f(*a, **kw)

    @property
    def sent(self) -> list[Sent]:
        return [s for p in self.ports for s in p.sent]

    def deliver(
        self, data: str | bytes, addr: tuple[str, int] = ("127.0.0.1", 5099)
    ) -> None:
        """A datagram arrives at the server's SIP port."""
        if isinstance(data, str):
            data = data.encode()
        self.ports[-1].protocol.datagramReceived(data, addr)

    def settle(self) -> None:
        """Run what is due now (events queued for a later turn)."""
        self.advance(0)
        self.advance(0)


def useFakeReactor(testCase) -> FakeSipReactor:
    """Install a L{FakeSipReactor} for sippy; restored after the test."""
    clock = FakeSipReactor()
    previous = adapter.useReactor(clock)

    def restore():
        adapter.ED2.cancelAll()
        adapter.useReactor(previous)

    testCase.addCleanup(restore)
    return clock


def startStack(testCase, **kwargs) -> tuple[FakeSipReactor, SipStack]:
    """
    A L{SipStack} on 127.0.0.1 (any free port) driven by a
    L{FakeSipReactor}, started now and stopped after the test.

    Without C{maxRequestsPerSource} in C{kwargs} the per-source limit is
    off: these tests send many requests from one address at one instant of
    the fake clock (the limit has its own tests).

    @param kwargs: more keywords for L{SipStack}.
    @return: the reactor and the stack.
    """
    clock = useFakeReactor(testCase)
    kwargs.setdefault("maxRequestsPerSource", 0)
    stack = SipStack("127.0.0.1", 0, reactor=clock, **kwargs)
    stack.startService()
    testCase.addCleanup(stack.stopService)
    return clock, stack


@dataclass
class FarEnd:
    """Builds responses and requests of a far-end UA from the server's messages."""

    host: str = "127.0.0.1"
    port: int = 5099
    transportParam: str = "UDP"
    tags: dict[str, str] = field(default_factory=dict)

    def response(
        self,
        request: str,
        code: int,
        reason: str,
        sdp: str | None = None,
        tag: str = "far1",
    ) -> str:
        callId = headerOf(request, "call-id")
        self.tags.setdefault(callId, tag)
        to = headerOf(request, "to")
        if ";tag=" not in to:
            to = f"{to};tag={self.tags[callId]}"
        lines = [
            f"SIP/2.0 {code} {reason}",
            f"Via: {headerOf(request, 'via')}",
            f"From: {headerOf(request, 'from')}",
            f"To: {to}",
            f"Call-ID: {callId}",
            f"CSeq: {headerOf(request, 'cseq')}",
            f"Contact: <sip:{self.host}:{self.port};transport={self.transportParam}>",
        ]
        body = sdp or ""
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return "\r\n".join(lines) + "\r\n\r\n" + body

    def inDialog(
        self, method: str, invite: str, cseq: int, target: str, sdp: str = ""
    ) -> str:
        """
        A request of the far end in the dialog our C{invite} created (after
        this far end answered it): From/To swapped, its tag on From.
        """
        ourFrom = headerOf(invite, "from")
        theirTo = self.response(invite, 200, "OK").split("To: ")[1].split("\r\n")[0]
        return self.request(
            method,
            dialogFrom=theirTo,
            dialogTo=ourFrom,
            callId=headerOf(invite, "call-id"),
            cseq=cseq,
            target=target,
            sdp=sdp,
        )

    def request(
        self,
        method: str,
        dialogFrom: str,
        dialogTo: str,
        callId: str,
        cseq: int,
        target: str,
        sdp: str = "",
    ) -> str:
        """An in-dialog request from the far end (From/To swapped by the caller)."""
        lines = [
            f"{method} {target} SIP/2.0",
            f"Via: SIP/2.0/UDP {self.host}:{self.port}"
            f";branch=z9hG4bK-far-{method}-{cseq}",
            "Max-Forwards: 70",
            f"From: {dialogFrom}",
            f"To: {dialogTo}",
            f"Call-ID: {callId}",
            f"CSeq: {cseq} {method}",
            f"Contact: <sip:{self.host}:{self.port};transport={self.transportParam}>",
        ]
        if sdp:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(sdp)}")
        return "\r\n".join(lines) + "\r\n\r\n" + sdp


def farSdp(
    port: int = 6000,
    codec: tuple[int, str] = (0, "PCMU"),
    version: int = 1,
    host: str = "127.0.0.1",
) -> str:
    pt, name = codec
    return (
        "v=0\r\n"
        f"o=far 42 {version} IN IP4 {host}\r\n"
        "s=-\r\n"
        f"c=IN IP4 {host}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP {pt}\r\n"
        f"a=rtpmap:{pt} {name}/8000\r\n"
    )


def originVersion(sdp: str) -> tuple[str, int]:
    m = re.search(r"^o=\S+ (\d+) (\d+) ", sdp, re.M)
    assert m, sdp
    return m.group(1), int(m.group(2))


def runUntil(clock: Clock, until: float) -> None:
    """
    Advance C{clock} from deadline to deadline up to C{until}, so every
    timer fires at its exact time (stepping by 0.1 s would add float error).
    """
    while True:
        pending = [c.getTime() for c in clock.getDelayedCalls()]
        nextTime = min(pending) if pending else None
        if nextTime is None or nextTime > until:
            clock.advance(max(until - clock.seconds(), 0))
            return
        clock.advance(max(nextTime - clock.seconds(), 0))


class RecordingListener:
    """
    A leg's owner that records what it is told, as (kind, data) tuples
    (dialog states apart, in C{dialogs}); re-INVITEs from the far end are
    answered with C{answerWith}, or refused 488 when it is None.
    """

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.answerWith: str | None = None
        #: the L{DialogState}s pushed, in order (not in C{events}).
        self.dialogs: list = []

    @property
    def ends(self) -> list:
        """The L{LegEnd}s reported, in order."""
        return [event[1] for event in self.events if event[0] == "ended"]

    def legRinging(self, leg) -> None:
        self.events.append(("ringing",))

    def legAnswered(self, leg, sdp) -> None:
        self.events.append(("answered", sdp))

    def legEnded(self, leg, end) -> None:
        self.events.append(("ended", end))

    def legDialogChanged(self, leg, state) -> None:
        self.dialogs.append(state)

    def legReInvited(self, leg, sdp):
        from twisted.internet import defer

        from callback_tw.sip.leg import ReInviteFailed

        self.events.append(("update", sdp))
        if self.answerWith is None:
            return defer.fail(ReInviteFailed(488, "Not Acceptable Here"))
        return defer.succeed(self.answerWith)
