"""
Tests for L{callback_tw.iif.peers} and what an AS sees of it through
L{callback_tw.iif.protocol.IIFProtocol}: signed commands, the policy of each peer,
ownership of callbacks, and refusals that cost at most one log line per interval.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import CannotListenError
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from callback_tw.callback.manager import CallbackManager
from callback_tw.config import Config, PeerConfig, PeerServer
from callback_tw.iif.message import Request
from callback_tw.iif.peers import Peer, PeerTable, peersFromConfig
from callback_tw.iif.signing import UnsignedError, sign, verify
from callback_tw.policy import Admission, PeerRules, Refusal, Rule
from tests.iifhelpers import makeProtocol

NOW = 1_780_000_000.0
KEY = b"as1-example-key-0123456789"
AS1 = ("127.0.0.1", 6000)
AS2 = ("127.0.0.1", 6002)
PSS = ("127.0.0.1", 5070)
REQUEST = b"REQUEST: id=1234;user1=100;user2=101;duration=3600;"


def _events(observer: EventLoggingObserver, word: str) -> list[dict]:
    return [e for e in observer if word in e.get("log_format", "")]


def _peers(**rules: Any) -> list[Peer]:
    """
    as1 (keyed when C{key} is given, with C{rules}), as2 (no rules) and pss (the
    outbound SIP peer, no commands).
    """
    key = rules.pop("key", None)
    return [
        Peer("as1", *AS1, key=key, rules=PeerRules(**rules)),
        Peer("as2", *AS2),
        Peer("pss", *PSS, commands=False),
    ]


def _request(callbackId: str, user1: str = "100", user2: str = "101") -> bytes:
    return b"REQUEST: id=%s;user1=%s;user2=%s;duration=60;" % (
        callbackId.encode(),
        user1.encode(),
        user2.encode(),
    )


class PeerTableTests(SynchronousTestCase):
    """
    The table alone: who a source is, signatures in and out, ownership.
    """

    def test_identify(self) -> None:
        """
        A peer configured with a port is matched on host and port; one without a
        port on its host only; an exact port wins over a host-wide entry.
        """
        table = PeerTable(
            [Peer("a", "10.0.0.1", 7000), Peer("b", "10.0.0.1"), Peer("c", "::1", 9)],
            Clock(),
        )
        self.assertEqual(table.identify(("10.0.0.1", 7000)).name, "a")
        self.assertEqual(table.identify(("10.0.0.1", 7001)).name, "b")
        self.assertEqual(table.identify(("0:0::1", 9, 0, 0)).name, "c")
        self.assertIsNone(table.identify(("10.0.0.2", 7000)))
        self.assertIsNone(table.identify(("not an address", 7000)))

    def test_sharedAddressPrefersCommands(self) -> None:
        """
        When two peers share an address, the one that may send commands is the one
        a datagram is attributed to.
        """
        table = PeerTable(
            [Peer("pss", *PSS, commands=False), Peer("as9", *PSS)], Clock()
        )
        self.assertEqual(table.identify(PSS).name, "as9")

    def test_addressPairsNamedByHost(self) -> None:
        """
        Plain C{(host, port)} pairs are peers without rules or key, named by their
        host, so the ports of one host are one peer.
        """
        table = PeerTable([("127.0.0.1", 6000), ("127.0.0.1", 6001)], Clock())
        self.assertEqual(
            table.identify(("127.0.0.1", 6001)), Peer("127.0.0.1", "127.0.0.1", 6001)
        )
        self.assertEqual(table.identify(("127.0.0.1", 6000)).name, "127.0.0.1")
        self.assertRaises(ValueError, PeerTable, [("pss.example", 5060)], Clock())

    def test_fromConfig(self) -> None:
        """
        The configuration's peers become L{Peer}s; 0 means "no limit of its own".
        """
        config = Config(
            path="x.ini",
            peerServers={
                "as1": PeerServer(name="as1", host="127.0.0.1", port=6000),
                "pss": PeerServer(name="pss", host="127.0.0.1", port=5070),
            },
            peers={
                "as1": PeerConfig(
                    commands=True, key=KEY, deny=("0900*",), maxCalls=5, rate=0.0
                ),
                "pss": PeerConfig(commands=False, maxDuration=60),
            },
        )
        as1, pss = peersFromConfig(config)
        self.assertEqual(
            as1,
            Peer(
                "as1",
                "127.0.0.1",
                6000,
                key=KEY,
                rules=PeerRules(deny=("0900*",), maxCalls=5),
            ),
        )
        self.assertEqual(as1.key, KEY)
        self.assertEqual(
            pss,
            Peer(
                "pss",
                "127.0.0.1",
                5070,
                commands=False,
                rules=PeerRules(maxDuration=60),
            ),
        )
        self.assertNotIn(KEY.decode(), repr(as1))

    def test_openAndSeal(self) -> None:
        """
        An unkeyed peer's datagrams pass as they are; a keyed peer's are verified
        and stripped of C{ts}/C{sig}, refusals counted by kind; what we send to a
        keyed peer is signed with our clock.
        """
        clock = Clock()
        clock.advance(NOW)
        table = PeerTable(_peers(key=KEY), clock, signatureWindow=30)
        as1, as2 = table.identify(AS1), table.identify(AS2)
        self.assertEqual(table.open(as2, REQUEST), REQUEST)
        self.assertEqual(table.open(as1, sign(REQUEST, KEY, NOW - 30)), REQUEST)
        self.assertRaises(UnsignedError, table.open, as1, REQUEST)
        for data in (sign(REQUEST, b"x" * 16, NOW), sign(REQUEST, KEY, NOW - 31)):
            self.assertRaises(ValueError, table.open, as1, data)
        self.assertEqual(
            dict(table.rejected),
            {
                ("as1", "unsigned"): 1,
                ("as1", "bad-signature"): 1,
                ("as1", "stale-ts"): 1,
            },
        )
        self.assertEqual(table.seal(as2, b"ACK: id=1;code=ok;"), b"ACK: id=1;code=ok;")
        sealed = table.seal(as1, b"ACK: id=1;code=ok;")
        self.assertEqual(verify(sealed, KEY, NOW, 0), b"ACK: id=1;code=ok;")

    def test_ownershipLastsAsLongAsTheMemory(self) -> None:
        """
        An ended callback stays its peer's for C{ownerMemory} seconds; then any
        peer may use the id again. A new admission of the id keeps it owned.
        """
        clock = Clock()
        table = PeerTable(_peers(), clock, ownerMemory=60)
        as1, as2 = table.identify(AS1), table.identify(AS2)
        request = Request("7", "100", "101", 60)
        self.assertEqual(table.admit(as1, request), Admission(60))
        self.assertEqual(table.running(as1), 1)
        self.assertEqual(table.check(as2, "7").rule, Rule.OWNER)
        table.ended("7")
        self.assertEqual(table.running(as1), 0)
        clock.advance(59)
        self.assertIsInstance(table.check(as2, "7"), Refusal)
        clock.advance(1)
        self.assertIsNone(table.check(as2, "7"))
        self.assertEqual(table.admit(as2, request), Admission(60))
        self.assertIsInstance(table.check(as1, "7"), Refusal)

    def test_ownersBounded(self) -> None:
        """
        At most C{maxOwners} ended callbacks keep their owner; the oldest go first.
        """
        table = PeerTable(_peers(), Clock(), maxOwners=2)
        as1, as2 = table.identify(AS1), table.identify(AS2)
        for callbackId in "123":
            table.admit(as1, Request(callbackId, "1", "2", 5))
            table.ended(callbackId)
        self.assertIsNone(table.check(as2, "1"))
        self.assertIsInstance(table.check(as2, "2"), Refusal)
        self.assertIsInstance(table.check(as2, "3"), Refusal)

    def test_refusedGivesBack(self) -> None:
        """
        An admitted REQUEST the manager refused gives back its slot and its id.
        """
        table = PeerTable(_peers(maxCalls=1), Clock())
        as1, as2 = table.identify(AS1), table.identify(AS2)
        table.admit(as1, Request("1", "1", "2", 5))
        self.assertEqual(table.admit(as1, Request("2", "1", "2", 5)).rule, "max_calls")
        table.refused("1")
        self.assertEqual(table.running(as1), 0)
        self.assertIsNone(table.check(as2, "1"))


class SignedCommandTests(SynchronousTestCase):
    """
    A keyed peer's commands must be signed; what it gets back is signed.
    """

    def setUp(self) -> None:
        self.observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        self.protocol, self.transport, self.manager, self.clock = makeProtocol(
            peers=_peers(key=KEY), now=NOW
        )

    def test_signedRequest(self) -> None:
        """
        A signed REQUEST places the call; its ACK and RESPONSE are signed with the
        time they are sent.
        """
        self.protocol.datagramReceived(sign(REQUEST, KEY, NOW - 5), AS1)
        self.assertEqual(
            [c.request for c in self.manager.calls],
            [Request("1234", "100", "101", 3600)],
        )
        [(ack, addr)] = self.transport.written
        self.assertEqual(addr, AS1)
        self.assertEqual(verify(ack, KEY, NOW, 0), b"ACK: id=1234;code=ok;")
        self.clock.advance(100)
        self.manager.calls[0].finish(90)
        response = self.transport.written[1][0]
        self.assertEqual(
            verify(response, KEY, NOW + 100, 0),
            b"RESPONSE: id=1234;real_duration=90;",
        )

    def test_forgedGetsNothing(self) -> None:
        """
        Unsigned, badly signed, stale, future and malformed-ts commands from a keyed
        peer place no call and get no datagram at all; each is counted.
        """
        forged = [
            REQUEST,
            b"CANCEL: id=1234;",
            sign(REQUEST, b"another-key-0123456", NOW),
            sign(REQUEST, KEY, NOW - 31),
            sign(REQUEST, KEY, NOW + 31),
            sign(REQUEST, KEY, NOW)[:-2] + b"0;",
            b"garbage",
        ]
        for data in forged:
            self.protocol.datagramReceived(data, AS1)
        self.assertEqual(self.transport.written, [])
        self.assertEqual(self.manager.requests, [])
        self.assertEqual(self.manager.cancelled, [])
        rejected = self.protocol.peers.rejected
        self.assertEqual(
            (rejected["as1", "unsigned"], rejected["as1", "bad-signature"]), (3, 2)
        )
        self.assertEqual(
            (rejected["as1", "stale-ts"], rejected["as1", "future-ts"]), (1, 1)
        )

    def test_forgedFloodLogsOneLine(self) -> None:
        """
        A flood of forged commands writes one line per interval for the peer; the
        next line counts the ones not written.
        """
        for _ in range(1000):
            self.protocol.datagramReceived(REQUEST, AS1)
        [line] = _events(self.observer, "no answer")
        self.assertEqual((line["peer"], line["kind"]), ("as1", "unsigned"))
        self.clock.advance(10)
        self.protocol.datagramReceived(REQUEST, AS1)
        lines = _events(self.observer, "no answer")
        self.assertEqual([e["suppressed"] for e in lines], [0, 999])

    def test_invalidSignedCommand(self) -> None:
        """
        A well-signed datagram that is not a valid command gets a signed
        C{code=fail}.
        """
        self.protocol.datagramReceived(sign(b"REQUEST: id=9;user1=1;", KEY, NOW), AS1)
        [(ack, _)] = self.transport.written
        self.assertEqual(verify(ack, KEY, NOW, 0), b"ACK: id=9;code=fail;")

    def test_unkeyedPeerUnchanged(self) -> None:
        """
        A peer without a key keeps sending and receiving unsigned datagrams.
        """
        self.protocol.datagramReceived(REQUEST, AS2)
        self.assertEqual(self.transport.written, [(b"ACK: id=1234;code=ok;", AS2)])

    def test_noCommandsFromOutboundPeer(self) -> None:
        """
        The outbound SIP peer (commands = no) is dropped like a stranger: no answer,
        no call, one log line per interval.
        """
        for _ in range(50):
            self.protocol.datagramReceived(REQUEST, PSS)
        self.assertEqual(self.transport.written, [])
        self.assertEqual(self.manager.requests, [])
        self.assertEqual(len(_events(self.observer, "may not send commands")), 1)
        self.assertEqual(self.protocol.peers.rejected["pss", "commands"], 50)


class PolicyTests(SynchronousTestCase):
    """
    A REQUEST refused by its peer's rules gets C{code=fail} before the manager.
    """

    def setUp(self) -> None:
        self.observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def test_deny(self) -> None:
        """
        A user matching a deny pattern is refused even when it matches allow, one
        matching no allow pattern too; the log lines name the rule; other peers are
        not concerned.
        """
        protocol, transport, manager, _ = makeProtocol(
            peers=_peers(allow=("0*",), deny=("0900*", "*#*"))
        )
        protocol.datagramReceived(_request("1", "0900123"), AS1)
        protocol.datagramReceived(_request("2", "01", "*21*0049301234#"), AS1)
        protocol.datagramReceived(_request("3", "0301"), AS1)
        protocol.datagramReceived(_request("4", "0900123"), AS2)
        self.assertEqual(
            [data for data, _ in transport.written],
            [
                b"ACK: id=1;code=fail;",
                b"ACK: id=2;code=fail;",
                b"ACK: id=3;code=fail;",
                b"ACK: id=4;code=ok;",
            ],
        )
        self.assertEqual([r.callbackId for r in manager.requests], ["4"])
        # One line per rule and interval: the second deny is counted, not logged.
        lines = _events(self.observer, "refused by rule")
        self.assertEqual(
            [(e["peer"], e["rule"]) for e in lines], [("as1", "deny"), ("as1", "allow")]
        )

    def test_allowed(self) -> None:
        """
        Numbers matching allow and no deny pattern are called.
        """
        protocol, transport, manager, _ = makeProtocol(
            peers=_peers(allow=("+49*", "0[1-9]*"), deny=("0900*",))
        )
        protocol.datagramReceived(_request("1", "+4930123", "0301"), AS1)
        self.assertEqual(transport.written, [(b"ACK: id=1;code=ok;", AS1)])

    def test_maxDuration(self) -> None:
        """
        A duration over the peer's cap is refused; C{duration=0} becomes the cap,
        and its repeat is still recognised as the same REQUEST.
        """
        protocol, transport, manager, _ = makeProtocol(peers=_peers(maxDuration=600))
        zero = b"REQUEST: id=2;user1=1;user2=2;duration=0;"
        protocol.datagramReceived(b"REQUEST: id=1;user1=1;user2=2;duration=601;", AS1)
        protocol.datagramReceived(zero, AS1)
        protocol.datagramReceived(zero, AS1)
        self.assertEqual(
            [data for data, _ in transport.written],
            [b"ACK: id=1;code=fail;", b"ACK: id=2;code=ok;", b"ACK: id=2;code=ok;"],
        )
        self.assertEqual([r.duration for r in manager.requests], [600])
        manager.calls[0].finish(3)
        protocol.datagramReceived(zero, AS1)
        self.assertEqual(transport.written[-1][0], b"RESPONSE: id=2;real_duration=3;")
        self.assertEqual(len(manager.requests), 1)

    def test_maxCalls(self) -> None:
        """
        Beyond C{max_calls} running callbacks of the peer, a REQUEST is refused;
        the slot comes back when a callback ends, and when the manager refused.
        """
        protocol, transport, manager, _ = makeProtocol(peers=_peers(maxCalls=2))
        for callbackId in "123":
            protocol.datagramReceived(_request(callbackId), AS1)
        protocol.datagramReceived(_request("9"), AS2)
        self.assertEqual(
            [data for data, _ in transport.written],
            [
                b"ACK: id=1;code=ok;",
                b"ACK: id=2;code=ok;",
                b"ACK: id=3;code=fail;",
                b"ACK: id=9;code=ok;",
            ],
        )
        manager.calls[0].finish(1)
        del transport.written[:]
        protocol.datagramReceived(_request("3"), AS1)
        self.assertEqual(transport.written, [(b"ACK: id=3;code=ok;", AS1)])
        self.assertEqual(protocol.peers.running(protocol.peers.identify(AS1)), 2)

    def test_rate(self) -> None:
        """
        Beyond C{rate} new REQUESTs per second (burst = rate) a REQUEST is refused;
        tokens come back with time.
        """
        protocol, transport, manager, clock = makeProtocol(peers=_peers(rate=2.0))
        for callbackId in "123":
            protocol.datagramReceived(_request(callbackId), AS1)
        clock.advance(0.5)
        protocol.datagramReceived(_request("4"), AS1)
        self.assertEqual(
            [data for data, _ in transport.written],
            [
                b"ACK: id=1;code=ok;",
                b"ACK: id=2;code=ok;",
                b"ACK: id=3;code=fail;",
                b"ACK: id=4;code=ok;",
            ],
        )

    def test_refusalFloodLogsOneLine(self) -> None:
        """
        A flood of refused REQUESTs answers each one but logs one line per
        interval, the next one with the count of the others.
        """
        protocol, transport, manager, clock = makeProtocol(peers=_peers(deny=("*",)))
        for i in range(500):
            protocol.datagramReceived(_request(str(i)), AS1)
        self.assertEqual(len(transport.written), 500)
        clock.advance(10)
        protocol.datagramReceived(_request("x"), AS1)
        lines = _events(self.observer, "refused by rule")
        self.assertEqual([e["suppressed"] for e in lines], [0, 499])


class OwnershipTests(SynchronousTestCase):
    """
    A callback belongs to the peer that created it.
    """

    def setUp(self) -> None:
        self.protocol, self.transport, self.manager, self.clock = makeProtocol(
            peers=_peers()
        )
        self.protocol.datagramReceived(REQUEST, AS1)
        del self.transport.written[:]

    def test_cancelByAnotherPeer(self) -> None:
        """
        Another peer's CANCEL gets C{code=fail} and never reaches the manager; the
        owner's CANCEL works.
        """
        self.protocol.datagramReceived(b"CANCEL: id=1234;", AS2)
        self.assertEqual(self.manager.cancelled, [])
        self.protocol.datagramReceived(b"CANCEL: id=1234;", AS1)
        self.assertEqual(self.manager.cancelled, ["1234"])
        self.assertEqual(
            self.transport.written,
            [(b"ACK: id=1234;code=fail;", AS2), (b"ACK: id=1234;code=ok;", AS1)],
        )

    def test_repeatByAnotherPeer(self) -> None:
        """
        The same REQUEST from another peer gets C{code=fail}, never the owner's ACK
        or RESPONSE, while the callback runs and after it finished.
        """
        self.protocol.datagramReceived(REQUEST, AS2)
        self.manager.calls[0].finish(12)
        self.protocol.datagramReceived(REQUEST, AS2)
        self.protocol.datagramReceived(REQUEST, AS1)
        self.assertEqual(
            self.transport.written,
            [
                (b"ACK: id=1234;code=fail;", AS2),
                (b"RESPONSE: id=1234;real_duration=12;", AS1),
                (b"ACK: id=1234;code=fail;", AS2),
                (b"ACK: id=1234;code=ok;", AS1),
                (b"RESPONSE: id=1234;real_duration=12;", AS1),
            ],
        )
        self.assertEqual(len(self.manager.requests), 1)


class _NoPorts:
    """
    RTP ports, all in use.
    """

    def openPort(self) -> Any:
        raise CannotListenError("127.0.0.1", (10000, 10001), "no free RTP port")


class RTPExhaustedTests(SynchronousTestCase):
    """
    With the RTP range used up, a REQUEST gets C{code=fail}: no traceback, and one
    line per interval however many REQUESTs come.
    """

    def test_refusedQuietly(self) -> None:
        """
        100 REQUESTs with no RTP port: 100 C{code=fail}, no callback left, and
        one log event of ours in all, without a traceback.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        clock = Clock()
        manager = CallbackManager(object(), _NoPorts(), 100, 3600, clock)
        protocol, transport, _, _ = makeProtocol(
            peers=_peers(maxCalls=1), manager=manager
        )
        for i in range(100):
            protocol.datagramReceived(_request(str(i)), AS1)
        self.assertEqual(
            [data for data, _ in transport.written],
            [b"ACK: id=%d;code=fail;" % (i,) for i in range(100)],
        )
        self.assertEqual(manager.active, {})
        [line] = _events(observer, "refused: {reason}")
        self.assertIn("no free RTP port", line["reason"])
        ours = [e for e in observer if e["log_namespace"].startswith("callback_tw")]
        self.assertEqual(ours, [line])


class ResponseDetailsSettingTests(SynchronousTestCase):
    """C{[peer NAME] response_details} reaches the IIF's L{Peer}."""

    def test_fromConfig(self) -> None:
        """yes for one peer: its L{Peer} asks for details, the others do not."""
        config = Config(
            path="x.ini",
            peerServers={
                "as1": PeerServer(name="as1", host="127.0.0.1", port=6000),
                "as2": PeerServer(name="as2", host="127.0.0.2", port=6000),
            },
            peers={
                "as1": PeerConfig(commands=True, responseDetails=True),
                "as2": PeerConfig(commands=True),
            },
        )
        as1, as2 = peersFromConfig(config)
        self.assertTrue(as1.responseDetails)
        self.assertFalse(as2.responseDetails)
