"""
End-to-end tests of local users: the real server (C{twistd -n callback})
with a C{[users]} section is the registrar of softphones played by SIPp
(C{scenarios/phone_register.xml} + C{scenarios/phone_uas.xml}: REGISTER with
digest authentication, then answer the INVITEs that arrive at the
registered contact), and a callback between two local numbers reaches them
there.  A SIPp UAS stands in as the outbound peer server, to show that
nothing meant for a local user goes there.

Direction in SIPp's log is SIPp's: "received" was sent by the server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from tests.e2e.loopback import pollUntil, sleep
from tests.e2e.peers import ASClient
from tests.e2e.processes import (
    SCENARIOS,
    SIPP,
    ServerProcess,
    SippUAS,
    logProcessOutput,
)
from tests.e2e.siplog import describeMessages, distinct, requestsOf, responsesOf

USERS = {"100": "secret100", "101": "secret101"}
REGISTER_SCENARIO = SCENARIOS / "phone_register.xml"
PHONE_UAS_SCENARIO = SCENARIOS / "phone_uas.xml"


class LocalUsersServer(ServerProcess):
    """L{ServerProcess} whose INI file also has a C{[users]} section."""

    def __init__(self, *args: Any, users: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.users = users

    def writeConfig(self) -> Path:
        path = super().writeConfig()
        lines = ["", "[users]"] + [f"{n} = {p}" for n, p in self.users.items()]
        path.write_text(path.read_text() + "\n".join(lines) + "\n")
        return path


class SippPhone(SippUAS):
    """
    One softphone: a SIPp process that REGISTERs C{number} with C{password}
    at the server, then answers the calls sent to the contact it registered
    (its own port) until it is stopped.
    """

    def __init__(
        self,
        directory: str,
        number: str,
        password: str,
        server: tuple[str, int],
        lifetime: float = 90.0,
    ) -> None:
        super().__init__(
            directory,
            scenario=REGISTER_SCENARIO,
            lifetime=lifetime,
            reactor=reactor,
            extraArgs=[
                "-oocsf", str(PHONE_UAS_SCENARIO),
                "-s", number,
                "-au", number,
                "-ap", password,
                "-m", "1",
                "-d", str(int(lifetime * 1000)),
                f"{server[0]}:{server[1]}",
            ],
        )  # fmt: skip
        self.number = number
        self.name = f"phone {number}"

    def registerAnswer(self) -> int | None:
        """
        The status of the server's final answer to the authenticated
        REGISTER (CSeq 2), or None while there is none.
        """
        for m in self.messages():
            if m.direction == "received" and m.header("cseq") == "2 REGISTER":
                if m.status is not None and m.status >= 200:
                    return m.status
        return None

    def invites(self) -> list[Any]:
        """The INVITEs the server sent to this phone, without retransmissions."""
        return requestsOf(distinct(self.messages()), "INVITE", "received")


class LocalUsersEndToEndTests(TestCase):
    """Softphones register with the server; callbacks reach them there."""

    timeout = 60

    if SIPP is None:
        skip = "sipp is not installed (Debian package sip-tester)"

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.directory = Path(self.mktemp())
        self.directory.mkdir(parents=True)
        # The outbound peer: must receive nothing for a local number.
        self.pss = SippUAS(str(self.directory), reactor=reactor)
        self.addCleanup(self._logOutput, self.pss)
        self.addCleanup(self.pss.stop)
        yield self.pss.start()
        self.client = ASClient(reactor)
        self.client.start()
        self.addCleanup(self.client.stop)
        self.server = LocalUsersServer(
            str(self.directory),
            self.pss.port,
            self.client.port,
            reactor=reactor,
            users=USERS,
        )
        self.client.defaultTarget = self.server.iifAddress
        self.addCleanup(self._logOutput, self.server)
        self.addCleanup(self.server.stop)
        yield self.server.start()

    def _logOutput(self, process: Any) -> None:
        if process.pid:
            logProcessOutput(process, self.id())

    @defer.inlineCallbacks
    def startPhone(self, number: str, password: str) -> Any:
        """Start a softphone; fire with it once the server answered its REGISTER."""
        phone = SippPhone(
            str(self.directory), number, password, ("127.0.0.1", self.server.sipPort)
        )
        # Cleanups run last-in first-out: phones stop after the server.
        self.addCleanup(self._logOutput, phone)
        self.addCleanup(phone.stop)
        yield phone.start()
        try:
            yield pollUntil(reactor, phone.registerAnswer, 10.0)
        except defer.TimeoutError:
            self.fail(
                f"phone {number}: no answer to its REGISTER; log:\n"
                f"{describeMessages(phone.messages())}\n{phone.errors()}"
            )
        return phone

    @defer.inlineCallbacks
    def requestOk(self, callbackId: str, user1: str, user2: str, duration: int) -> Any:
        self.client.request(callbackId, user1, user2, duration)
        code = yield self.client.expectAck(callbackId)
        self.assertEqual(code, "ok", f"REQUEST {callbackId} refused")

    def assertNothingAtPeer(self) -> None:
        invites = requestsOf(self.pss.messages(), "INVITE")
        self.assertEqual(invites, [], describeMessages(invites))

    # -- the tests

    @defer.inlineCallbacks
    def test_callbackBetweenRegisteredPhones(self) -> Any:
        """
        100 and 101 register (401, then 200 with digest credentials); the
        callback user1=100;user2=101 INVITEs each at the contact it
        registered (R-URI sip:<number>@127.0.0.1:<its port>, received on
        that port), user2 only after user1 answered; both are joined by a
        re-INVITE carrying the other side's SDP; after duration=2 both get
        a BYE and the RESPONSE says real_duration=2.  The peer server
        receives nothing.
        """
        phone100 = yield self.startPhone("100", "secret100")
        phone101 = yield self.startPhone("101", "secret101")
        for phone in (phone100, phone101):
            log = describeMessages(phone.messages())
            self.assertEqual(phone.registerAnswer(), 200, log)
            challenges = responsesOf(phone.messages(), "REGISTER", 401, "received")
            self.assertEqual(len(challenges), 1, log)
            self.assertIn('qop="auth"', challenges[0].header("www-authenticate"))
            ok = [
                m
                for m in phone.messages()
                if m.status == 200 and m.cseqMethod == "REGISTER"
            ]
            self.assertEqual(
                ok[0].header("contact"),
                f"<sip:{phone.number}@127.0.0.1:{phone.port}>;expires=3600",
            )

        yield self.requestOk("lu1", "100", "101", duration=2)
        realDuration, _ = yield self.client.expectResponse("lu1", timeout=20)

        def ended() -> bool:
            return all(
                responsesOf(distinct(p.messages()), "BYE", 200, "sent")
                for p in (phone100, phone101)
            )

        yield pollUntil(reactor, ended, 10.0)
        leg1, leg2 = distinct(phone100.messages()), distinct(phone101.messages())
        log = describeMessages(leg1 + leg2)
        invites1, invites2 = phone100.invites(), phone101.invites()
        self.assertEqual(len(invites1), 2, log)
        self.assertEqual(len(invites2), 2, log)
        self.assertEqual(
            invites1[0].firstLine, f"INVITE sip:100@127.0.0.1:{phone100.port} SIP/2.0"
        )
        self.assertEqual(
            invites2[0].firstLine, f"INVITE sip:101@127.0.0.1:{phone101.port} SIP/2.0"
        )
        self.assertRegex(invites1[0].header("from"), r"<sip:1000@[^>]*>")
        ok1 = responsesOf(leg1, "INVITE", 200, "sent")
        ok2 = responsesOf(leg2, "INVITE", 200, "sent")
        # user2 is called only after user1's 200. The two phones are two SIPp
        # processes that stamp their logs independently (one when it has
        # sent, the other when it reads), so their clocks may disagree by a
        # fraction of a millisecond: 2 ms of slack, far below any real gap.
        self.assertGreaterEqual(invites2[0].time, ok1[0].time - 0.002, log)
        # The join: each phone is re-INVITEd with the other phone's SDP.
        self.assertEqual(invites1[1].mediaAddress(), ok2[0].mediaAddress(), log)
        self.assertEqual(invites2[1].mediaAddress(), ok1[-1].mediaAddress(), log)
        for leg in (leg1, leg2):
            self.assertEqual(len(requestsOf(leg, "BYE", "received")), 1, log)
        self.assertEqual(realDuration, 2)
        self.assertNothingAtPeer()

    @defer.inlineCallbacks
    def test_wrongPasswordAndUnregisteredUser(self) -> Any:
        """
        101 registering with a wrong password gets 401, then 403, and is not
        registered; a callback user1=101;user2=100 (100 registered) fails at
        once: RESPONSE real_duration=0, and no INVITE reaches either phone
        or the peer server.
        """
        phone100 = yield self.startPhone("100", "secret100")
        phone101 = yield self.startPhone("101", "n0t-the-Pa55word")
        log = describeMessages(phone101.messages())
        self.assertEqual(len(responsesOf(phone101.messages(), "REGISTER", 401)), 1, log)
        self.assertEqual(phone101.registerAnswer(), 403, log)
        refusals = self.server.logLines("REGISTER 101 from 127.0.0.1")
        self.assertTrue(any("403" in line for line in refusals), refusals)
        self.assertNotIn("n0t-the-Pa55word", self.server.output)

        yield self.requestOk("lu2", "101", "100", duration=10)
        realDuration, _ = yield self.client.expectResponse("lu2", timeout=5)
        self.assertEqual(realDuration, 0)
        # Give a stray INVITE the time to arrive, then check there was none.
        yield sleep(reactor, 0.5)
        self.assertEqual(phone100.invites(), [], describeMessages(phone100.messages()))
        self.assertEqual(phone101.invites(), [], describeMessages(phone101.messages()))
        self.assertNothingAtPeer()
        self.assertTrue(self.server.logLines("480"), "the leg's 480 is not logged")
