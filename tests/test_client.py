"""
Tests for L{callback_tw.client}: the AS-side library, on a L{Clock} and an
in-memory UDP port (one test of the blocking client uses a loopback socket).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import socket
import sys
import threading
from typing import Any

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from callback_tw.cli import client as cli
from callback_tw.client import (
    Ack,
    AckTimeout,
    BlockingCallbackClient,
    CallbackClient,
    CallbackRefused,
    Response,
    ResponseLost,
    RetryPolicy,
    formatCancel,
    formatRequest,
    parseReply,
)

SERVER = ("127.0.0.1", 5080)
KEY = b"0123456789abcdef-secret"
NOW = 1_800_000_000.0
REQUEST = b"REQUEST: id=7;user1=answer1;user2=hangup5;duration=60;"


class _FakePort:
    """
    A listening UDP port that records what is written.
    """

    def __init__(self, interface: str, port: int, protocol: Any) -> None:
        self.interface = interface
        self.protocol = protocol
        self.port = port
        self.written: list[tuple[bytes, tuple[str, int]]] = []
        self.stopped = False

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.written.append((data, addr))

    def stopListening(self) -> None:
        self.stopped = True


class _UDPClock(Clock):
    """
    A L{Clock} with C{listenUDP}: the reactor the client needs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rightNow = NOW
        self.ports: list[_FakePort] = []
        self.triggers: list[tuple[str, str, Any]] = []

    def addSystemEventTrigger(self, phase: str, event: str, f: Any) -> None:
        self.triggers.append((phase, event, f))

    def listenUDP(self, port: int, protocol: Any, interface: str = "") -> _FakePort:
        listening = _FakePort(interface, port, protocol)
        self.ports.append(listening)
        return listening


def _sign(data: bytes, key: bytes, ts: float) -> bytes:
    signed = data + b"ts=%d;" % int(ts)
    return (
        signed + b"sig=%s;" % hmac.new(key, signed, hashlib.sha256).hexdigest().encode()
    )


class _ClientTestCase(SynchronousTestCase):
    key: bytes | None = None

    def setUp(self) -> None:
        self.clock = _UDPClock()
        self.client = CallbackClient(
            self.clock, SERVER, bind=("127.0.0.1", 6000), key=self.key
        )
        self.client.start()
        self.port = self.clock.ports[0]

    def sent(self) -> list[bytes]:
        self.assertTrue(all(addr == SERVER for _, addr in self.port.written))
        return [data for data, _ in self.port.written]

    def sendTimes(self, run: float) -> list[float]:
        """
        Advance the clock in 0.05 s steps for C{run} seconds (one big
        L{Clock.advance} would run a timer set by a timer late); return the
        times (relative to the start) at which something was sent.
        """
        times: list[float] = []
        start = self.clock.seconds()
        count = len(self.port.written)
        for step in range(1, int(round(run / 0.05)) + 1):
            # Absolute targets (just past each step): no drift from summing 0.05s.
            self.clock.advance(start + step * 0.05 + 1e-6 - self.clock.seconds())
            if len(self.port.written) > count:
                times.append(round(self.clock.seconds() - start, 2))
                count = len(self.port.written)
        return times

    def reply(self, data: bytes, addr: tuple[str, int] = SERVER) -> None:
        if self.key is not None:
            data = _sign(data, self.key, self.clock.seconds())
        self.client.datagramReceived(data, addr)


class RetransmissionTests(_ClientTestCase):
    """
    A command goes out again, the same bytes, with exponential back-off until
    its ACK, a bounded number of times.
    """

    def test_backOffThenAckTimeout(self) -> None:
        """
        Sends at 0, 0.5, 1.5, 3.5, 7.5, 11.5 and 15.5 s (waits 0.5, 1, 2, 4
        capped at 4 s), all the same bytes; 4 s after the seventh both
        Deferreds fail with AckTimeout and no timer is left.
        """
        pending = self.client.request("7", "answer1", "hangup5", 60)
        self.assertEqual(self.sent(), [REQUEST])
        self.assertEqual(self.sendTimes(19.4), [0.5, 1.5, 3.5, 7.5, 11.5, 15.5])
        self.assertEqual(self.sent(), [REQUEST] * 7)
        self.assertNoResult(pending.acked)
        self.clock.advance(0.1)
        self.failureResultOf(pending.acked, AckTimeout)
        self.failureResultOf(pending.finished, AckTimeout)
        self.assertEqual(len(self.sent()), 7)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_policy(self) -> None:
        """
        The back-off follows the client's L{RetryPolicy}.
        """
        self.client.retry = RetryPolicy(initial=1.0, cap=2.0, attempts=3)
        pending = self.client.request("7", "answer1", "hangup5", 60)
        self.assertEqual(self.sendTimes(4.9), [1.0, 3.0])
        self.clock.advance(0.1)
        self.failureResultOf(pending.acked, AckTimeout)
        self.failureResultOf(pending.finished, AckTimeout)

    def test_ackStopsRetransmission(self) -> None:
        """
        The ACK ok fires C{acked} with True and stops the retransmissions.
        """
        pending = self.client.request("7", "answer1", "hangup5", 60)
        self.clock.advance(0.6)
        self.reply(b"ACK: id=7;code=ok;")
        self.assertIs(self.successResultOf(pending.acked), True)
        self.assertEqual(self.sendTimes(60), [])
        self.assertEqual(len(self.sent()), 2)
        self.assertNoResult(pending.finished)


class AckResponseTests(_ClientTestCase):
    """
    ACK ok then RESPONSE; ACK fail; CANCEL.
    """

    def test_okThenResponse(self) -> None:
        """
        ACK ok fires C{acked} with True, the RESPONSE fires C{finished} with
        real_duration; then no timer is left and the id can be used again.
        """
        pending = self.client.request("7", "answer1", "hangup5", 60)
        self.reply(b"ACK: id=7;code=ok;")
        self.clock.advance(10)
        self.reply(b"RESPONSE: id=7;real_duration=5;")
        self.assertIs(self.successResultOf(pending.acked), True)
        self.assertEqual(self.successResultOf(pending.finished), 5)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.client.request("7", "answer1", "hangup5", 60)

    def test_fail(self) -> None:
        """
        ACK fail fires C{acked} with False and fails C{finished} with
        CallbackRefused; nothing more is sent.
        """
        pending = self.client.request("7", "answer1", "hangup5", 60)
        self.reply(b"ACK: id=7;code=fail;")
        self.assertIs(self.successResultOf(pending.acked), False)
        self.failureResultOf(pending.finished, CallbackRefused)
        self.assertEqual(self.sendTimes(30), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_responseBeforeAck(self) -> None:
        """
        A RESPONSE that overtook its ACK counts as both.
        """
        pending = self.client.request("7", "answer1", "hangup5", 60)
        self.reply(b"RESPONSE: id=7;real_duration=0;")
        self.assertIs(self.successResultOf(pending.acked), True)
        self.assertEqual(self.successResultOf(pending.finished), 0)
        self.assertEqual(self.sendTimes(5), [])

    def test_annParameters(self) -> None:
        """
        The optional parameters go out in the IIF document's form and order.
        """
        self.client.request("8", "a", "b", 0, "00080002", "00080003", "42")
        self.assertEqual(
            self.sent(),
            [
                b"REQUEST: id=8;user1=a;user2=b;duration=0;"
                b"ann_id1=00080002;ann_id2=00080003;ann_digit2=42;"
            ],
        )

    def test_sameIdTwice(self) -> None:
        """
        A second REQUEST of an id in flight is a ValueError, not a datagram.
        """
        self.client.request("7", "answer1", "hangup5", 60)
        self.assertRaises(ValueError, self.client.request, "7", "x", "y", 1)
        self.assertEqual(len(self.sent()), 1)

    def test_abandon(self) -> None:
        """
        Cancelling C{finished} stops every timer of that callback.
        """
        pending = self.client.request("7", "answer1", "hangup5", 60)
        self.reply(b"ACK: id=7;code=ok;")
        pending.finished.cancel()
        self.failureResultOf(pending.finished, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cancel(self) -> None:
        """
        CANCEL is retransmitted until its ACK, and fires with its code.
        """
        d = self.client.cancel("7")
        self.assertEqual(self.sendTimes(1.0), [0.5])
        self.assertEqual(self.sent(), [b"CANCEL: id=7;"] * 2)
        self.reply(b"ACK: id=7;code=ok;")
        self.assertIs(self.successResultOf(d), True)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        d = self.client.cancel("8")
        self.reply(b"ACK: id=8;code=fail;")
        self.assertIs(self.successResultOf(d), False)

    def test_cancelTimeout(self) -> None:
        """
        An unanswered CANCEL fails with AckTimeout after the bounded attempts.
        """
        d = self.client.cancel("7")
        self.sendTimes(19.4)
        self.assertNoResult(d)
        self.sendTimes(0.2)
        self.failureResultOf(d, AckTimeout)
        self.assertEqual(self.sent(), [b"CANCEL: id=7;"] * 7)

    def test_cancelWaitsForRequestAck(self) -> None:
        """
        A CANCEL of a REQUEST still without its ACK goes out after that ACK
        (the first ACK answers the REQUEST), then the RESPONSE follows.
        """
        pending = self.client.request("7", "answer1", "hangup5", 60)
        d = self.client.cancel("7")
        self.assertEqual(self.sent(), [REQUEST])
        self.reply(b"ACK: id=7;code=ok;")
        self.assertIs(self.successResultOf(pending.acked), True)
        self.assertNoResult(d)
        self.assertEqual(self.sent(), [REQUEST, b"CANCEL: id=7;"])
        self.reply(b"ACK: id=7;code=ok;")
        self.assertIs(self.successResultOf(d), True)
        self.reply(b"RESPONSE: id=7;real_duration=3;")
        self.assertEqual(self.successResultOf(pending.finished), 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class OverdueResponseTests(_ClientTestCase):
    """
    A RESPONSE missing C{duration} + C{responseMargin} after the ACK ok is
    asked for again by sending the same REQUEST.
    """

    def test_requery(self) -> None:
        """
        At 60 + 90 s after the ACK the REQUEST goes out again; the server's
        ACK ok and RESPONSE for the finished id then end it.
        """
        pending = self.client.request("7", "answer1", "hangup5", 60)
        self.reply(b"ACK: id=7;code=ok;")
        self.assertEqual(self.sendTimes(150.0), [150.0])
        self.assertEqual(self.sent(), [REQUEST, REQUEST])
        self.assertEqual(pending.requeries, 1)
        self.reply(b"ACK: id=7;code=ok;")
        self.reply(b"RESPONSE: id=7;real_duration=60;")
        self.assertEqual(self.successResultOf(pending.finished), 60)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_requeryRetransmitted(self) -> None:
        """
        The requery is itself retransmitted until answered; while the server
        says ok (still running) it is asked again every requeryInterval.
        """
        pending = self.client.request("7", "answer1", "hangup5", 10)
        self.reply(b"ACK: id=7;code=ok;")
        self.assertEqual(self.sendTimes(101.0), [100.0, 100.5])
        self.reply(b"ACK: id=7;code=ok;")
        self.assertEqual(self.sendTimes(30.0), [30.0])
        self.assertEqual(pending.requeries, 2)
        self.assertNoResult(pending.finished)

    def test_requeryRefused(self) -> None:
        """
        ACK fail to a requery (the server forgot the id) fails C{finished}
        with ResponseLost.
        """
        pending = self.client.request("7", "answer1", "hangup5", 10)
        self.reply(b"ACK: id=7;code=ok;")
        self.clock.advance(100)
        self.reply(b"ACK: id=7;code=fail;")
        self.failureResultOf(pending.finished, ResponseLost)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_requeryUnanswered(self) -> None:
        """
        A requery never answered fails C{finished} with ResponseLost.
        """
        pending = self.client.request("7", "answer1", "hangup5", 10)
        self.reply(b"ACK: id=7;code=ok;")
        self.sendTimes(100 + 19.4)
        self.assertNoResult(pending.finished)
        self.sendTimes(0.2)
        self.failureResultOf(pending.finished, ResponseLost)
        self.assertEqual(len(self.sent()), 8)

    def test_lateAckOfRetransmission(self) -> None:
        """
        A second ACK (answering a retransmission) is not taken for a requery's.
        """
        pending = self.client.request("7", "answer1", "hangup5", 10)
        self.clock.advance(0.5)
        self.reply(b"ACK: id=7;code=ok;")
        self.reply(b"ACK: id=7;code=ok;")
        self.assertEqual(self.sendTimes(100.0), [100.0])
        self.assertEqual(pending.requeries, 1)


class StrangerTests(_ClientTestCase):
    """
    Only a well-formed reply from the server's address for an id in flight
    counts.
    """

    def test_ignored(self) -> None:
        """
        Another source, another id, and malformed replies change nothing.
        """
        pending = self.client.request("7", "answer1", "hangup5", 60)
        self.reply(b"ACK: id=7;code=ok;", ("127.0.0.1", 5081))
        self.reply(b"ACK: id=7;code=ok;", ("127.0.0.2", 5080))
        self.reply(b"ACK: id=8;code=ok;")
        for bad in (
            b"ACK: id=7;code=ok",
            b"ack: id=7;code=ok;",
            b"ACK: id=7;code=OK;",
            b"ACK:id=7;code=ok;",
            b"ACK: id=7;code=ok;\r\n",
            b"ACK: id=7;code=ok;x=1;",
            b"RESPONSE: id=7;real_duration=-1;",
            b"RESPONSE: id=7;real_duration=01;",
            b"\xff",
        ):
            self.reply(bad)
        self.assertNoResult(pending.acked)
        self.reply(b"ACK: id=7;code=ok;", ("::ffff:127.0.0.1", 5080))
        self.assertIs(self.successResultOf(pending.acked), True)

    def test_parseReply(self) -> None:
        """
        parseReply decodes exactly the server's two replies.
        """
        self.assertEqual(parseReply(b"ACK: id=a-1;code=fail;"), Ack("a-1", False))
        self.assertEqual(
            parseReply(b"RESPONSE: id=9;real_duration=180;"), Response("9", 180)
        )
        self.assertRaises(ValueError, parseReply, b"RESPONSE: id=9;real_duration=;")

    def test_formatting(self) -> None:
        """
        Values that would break the framing are refused before sending.
        """
        self.assertRaises(ValueError, formatRequest, "1;2", "a", "b", 1)
        self.assertRaises(ValueError, formatRequest, "1", "a b", "b", 1)
        self.assertRaises(ValueError, formatRequest, "1", "a", "b", -1)
        self.assertRaises(ValueError, formatRequest, "1", "a", "b", True)
        self.assertRaises(ValueError, formatCancel, "")
        self.assertEqual(formatCancel("x"), b"CANCEL: id=x;")


class SignedTests(_ClientTestCase):
    """
    With a key, every datagram sent is signed and only signed, fresh replies
    count.
    """

    key = KEY

    def test_signedRequest(self) -> None:
        """
        The REQUEST ends with ts=<now>;sig=<HMAC-SHA256 of what precedes
        sig=>; retransmissions repeat the same bytes.
        """
        self.client.request("7", "answer1", "hangup5", 60)
        self.clock.advance(0.5)
        first, second = self.sent()
        self.assertEqual(first, _sign(REQUEST, KEY, NOW))
        self.assertEqual(second, first)

    def test_signedReplies(self) -> None:
        """
        Unsigned, wrongly keyed, tampered and stale replies are dropped; a
        valid one is taken.
        """
        pending = self.client.request("7", "answer1", "hangup5", 60)
        ack = b"ACK: id=7;code=ok;"
        now = self.clock.seconds()
        for bad in (
            ack,
            _sign(ack, b"another key of 16 bytes", now),
            _sign(ack, KEY, now).replace(b"ok", b"OK"),
            _sign(ack, KEY, now - 31),
            _sign(ack, KEY, now + 31),
        ):
            self.client.datagramReceived(bad, SERVER)
        self.assertNoResult(pending.acked)
        self.client.datagramReceived(_sign(ack, KEY, now - 30), SERVER)
        self.assertIs(self.successResultOf(pending.acked), True)

    def test_requeryResigned(self) -> None:
        """
        A requery carries a fresh ts (the server refuses stale ones).
        """
        self.client.request("7", "answer1", "hangup5", 60)
        self.reply(b"ACK: id=7;code=ok;")
        self.clock.advance(150)
        self.assertEqual(self.sent()[-1], _sign(REQUEST, KEY, NOW + 150))

    def test_signedCancel(self) -> None:
        """
        A CANCEL is signed too.
        """
        self.client.cancel("7")
        self.assertEqual(self.sent(), [_sign(b"CANCEL: id=7;", KEY, NOW)])


class UnsignedTests(_ClientTestCase):
    """
    Without a key nothing is signed, and a signed reply is still understood.
    """

    def test_unsigned(self) -> None:
        """
        No ts/sig is sent; a reply with a signature is taken unchecked.
        """
        pending = self.client.request("7", "answer1", "hangup5", 60)
        self.assertEqual(self.sent(), [REQUEST])
        self.reply(_sign(b"ACK: id=7;code=ok;", b"whatever key", 0))
        self.assertIs(self.successResultOf(pending.acked), True)

    def test_stop(self) -> None:
        """
        stop() abandons what is in flight and closes the port.
        """
        pending = self.client.request("7", "answer1", "hangup5", 60)
        d = self.client.cancel("8")
        self.client.stop()
        self.failureResultOf(pending.finished, CancelledError)
        self.failureResultOf(pending.acked, CancelledError)
        self.failureResultOf(d, CancelledError)
        self.assertTrue(self.port.stopped)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class BlockingTests(SynchronousTestCase):
    """
    The blocking client on a loopback socket, against a scripted server in a
    thread that drops the first REQUEST.
    """

    def test_dropFirstRequest(self) -> None:
        """
        The first REQUEST is lost; the retransmission 0.5 s later gets ACK ok
        and RESPONSE; request() returns real_duration after calling onAck.
        """
        server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(server.close)
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        received: list[bytes] = []

        def serve() -> None:
            data, addr = server.recvfrom(2048)
            received.append(data)
            data, addr = server.recvfrom(2048)
            received.append(data)
            server.sendto(b"ACK: id=b1;code=ok;", addr)
            server.sendto(b"RESPONSE: id=b1;real_duration=4;", addr)

        thread = threading.Thread(target=serve)
        thread.start()
        self.addCleanup(thread.join)
        acks: list[bool] = []
        with BlockingCallbackClient(server.getsockname(), ("127.0.0.1", 0)) as client:
            result = client.request("b1", "answer1", "hangup5", 5, onAck=acks.append)
        self.assertEqual(result, 4)
        self.assertEqual(acks, [True])
        expected = b"REQUEST: id=b1;user1=answer1;user2=hangup5;duration=5;"
        self.assertEqual(received, [expected, expected])

    def test_serverIsAnAddress(self) -> None:
        """
        The server is given by IP address (replies are matched against it); a
        host name is a ValueError (C{callback-client} resolves names itself).
        """
        self.assertRaises(ValueError, BlockingCallbackClient, ("localhost", 5080))

    def test_timeout(self) -> None:
        """
        No answer within C{timeout}: TimeoutError.
        """
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(silent.close)
        silent.bind(("127.0.0.1", 0))
        with BlockingCallbackClient(silent.getsockname(), ("127.0.0.1", 0)) as client:
            self.assertRaises(TimeoutError, client.cancel, "x", timeout=0.2)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


ARGS = ["--server", "127.0.0.1:5080", "--id", "7"]
REQUEST_ARGS = ["request", *ARGS, "--user1", "answer1", "--user2", "hangup5"]


class CommandLineTests(SynchronousTestCase):
    """
    C{callback-client}: what a user sees and the exit status.
    """

    def runCommand(self, argv: list[str], out: io.StringIO | None = None) -> Any:
        self.clock = _UDPClock()
        self.out = out if out is not None else io.StringIO()
        options = cli.Options()
        options.parseOptions(argv)
        d = cli.run(self.clock, options, self.out)
        self.port = self.clock.ports[0]
        return d

    def reply(self, data: bytes) -> None:
        self.port.protocol.datagramReceived(data, SERVER)

    def exitCode(self, d: Any) -> int:
        return self.failureResultOf(d, SystemExit).value.code

    def test_request(self) -> None:
        """
        The ACK is printed when it arrives, the RESPONSE when it comes; exit 0.
        """
        d = self.runCommand(REQUEST_ARGS + ["--duration", "60", "--ann-digit2", "12"])
        self.assertEqual(
            self.port.written[0][0],
            b"REQUEST: id=7;user1=answer1;user2=hangup5;duration=60;ann_digit2=12;",
        )
        self.reply(b"ACK: id=7;code=ok;")
        self.assertEqual(self.out.getvalue(), "ACK id=7 code=ok\n")
        self.clock.advance(5)
        self.reply(b"RESPONSE: id=7;real_duration=5;")
        self.assertEqual(
            self.out.getvalue(), "ACK id=7 code=ok\nRESPONSE id=7 real_duration=5\n"
        )
        self.assertIsNone(self.successResultOf(d))
        self.assertTrue(self.port.stopped)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_json(self) -> None:
        """
        --json prints one JSON object per event.
        """
        d = self.runCommand(REQUEST_ARGS + ["--duration", "0", "--json"])
        self.reply(b"ACK: id=7;code=ok;")
        self.clock.advance(2)
        self.reply(b"RESPONSE: id=7;real_duration=2;")
        self.successResultOf(d)
        events = [json.loads(line) for line in self.out.getvalue().splitlines()]
        self.assertEqual(
            events,
            [
                {"event": "ack", "id": "7", "code": "ok", "elapsed": 0.0},
                {"event": "response", "id": "7", "real_duration": 2, "elapsed": 2.0},
            ],
        )

    def test_refused(self) -> None:
        """
        ACK fail is printed and the exit status is 1.
        """
        d = self.runCommand(REQUEST_ARGS + ["--duration", "60"])
        self.reply(b"ACK: id=7;code=fail;")
        self.assertEqual(self.out.getvalue(), "ACK id=7 code=fail\n")
        self.assertEqual(self.exitCode(d), 1)

    def test_ackTimeout(self) -> None:
        """
        No ACK within --timeout: a clear line and exit 1.
        """
        d = self.runCommand(REQUEST_ARGS + ["--duration", "60", "--timeout", "5"])
        self.clock.advance(5)
        self.assertEqual(
            self.out.getvalue(),
            "TIMEOUT id=7: no ACK from 127.0.0.1:5080 within 5.0 s\n",
        )
        self.assertEqual(self.exitCode(d), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_responseTimeout(self) -> None:
        """
        An ACK but no RESPONSE within --timeout: a clear line and exit 1.
        """
        d = self.runCommand(
            REQUEST_ARGS + ["--duration", "60", "--timeout", "30", "--json"]
        )
        self.reply(b"ACK: id=7;code=ok;")
        self.clock.advance(30)
        event = json.loads(self.out.getvalue().splitlines()[-1])
        self.assertEqual(event["event"], "timeout")
        self.assertEqual(event["waiting_for"], "response")
        self.assertEqual(self.exitCode(d), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_responseLost(self) -> None:
        """
        A requery refused by the server ends the wait with a line saying so.
        """
        d = self.runCommand(REQUEST_ARGS + ["--duration", "60"])
        self.reply(b"ACK: id=7;code=ok;")
        self.clock.advance(150)
        self.assertEqual(len(self.port.written), 2)
        self.reply(b"ACK: id=7;code=fail;")
        self.assertEqual(
            self.out.getvalue().splitlines()[-1],
            "TIMEOUT id=7: no RESPONSE after 150.0 s: the server refused the requery",
        )
        self.assertEqual(self.exitCode(d), 1)

    def test_liveStatus(self) -> None:
        """
        On a terminal a status line is rewritten while waiting and erased
        before the RESPONSE line.
        """
        d = self.runCommand(REQUEST_ARGS + ["--duration", "60"], _Terminal())
        self.reply(b"ACK: id=7;code=ok;")
        self.clock.advance(1)
        status = "\r\x1b[Kid=7 accepted, waiting for the RESPONSE: "
        self.assertEqual(
            self.out.getvalue(), f"ACK id=7 code=ok\n{status}0 s{status}1 s"
        )
        self.reply(b"RESPONSE: id=7;real_duration=1;")
        self.assertTrue(
            self.out.getvalue().endswith("1 s\r\x1b[KRESPONSE id=7 real_duration=1\n")
        )
        self.successResultOf(d)

    def test_interrupted(self) -> None:
        """
        Stopping the reactor (Ctrl-C) before the answer says so; exit 130.
        """
        d = self.runCommand(REQUEST_ARGS + ["--duration", "60"])
        [(phase, event, trigger)] = self.clock.triggers
        self.assertEqual((phase, event), ("before", "shutdown"))
        trigger()
        self.assertEqual(self.out.getvalue(), "INTERRUPTED id=7: before the answer\n")
        self.assertEqual(self.exitCode(d), 130)

    def test_cancel(self) -> None:
        """
        cancel prints the ACK; exit 0 for ok, 1 for fail.
        """
        d = self.runCommand(["cancel", *ARGS])
        self.assertEqual(self.port.written[0][0], b"CANCEL: id=7;")
        self.reply(b"ACK: id=7;code=ok;")
        self.assertEqual(self.out.getvalue(), "ACK id=7 code=ok\n")
        self.successResultOf(d)
        d = self.runCommand(["cancel", *ARGS])
        self.reply(b"ACK: id=7;code=fail;")
        self.assertEqual(self.exitCode(d), 1)

    def test_keyFile(self) -> None:
        """
        --key-file signs what is sent (the line end of the file is not key).
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(KEY + b"\n")
        d = self.runCommand(["cancel", *ARGS, "--key-file", path])
        self.assertEqual(self.port.written[0][0], _sign(b"CANCEL: id=7;", KEY, NOW))
        self.reply(_sign(b"ACK: id=7;code=ok;", KEY, NOW))
        self.successResultOf(d)

    def test_usage(self) -> None:
        """
        Bad usage is a one-line reason after the help, and exit status 2.
        """
        short = self.mktemp()
        with open(short, "wb") as f:
            f.write(b"short")
        for argv, reason in [
            ([], "a command is required"),
            (["request", *ARGS, "--user1", "a"], "--user2 is required"),
            (REQUEST_ARGS + ["--duration", "-1"], "--duration must be >= 0"),
            (
                ["cancel", "--id", "7", "--server", "5080"],
                "--server: '5080' is not HOST:PORT",
            ),
            (
                ["cancel", *ARGS, "--key-file", short],
                "--key-file: the key must be at least 16 bytes",
            ),
            (["cancel", *ARGS, "--timeout", "0"], "--timeout must be > 0"),
        ]:
            stderr = io.StringIO()
            self.patch(sys, "stderr", stderr)
            error = self.assertRaises(SystemExit, cli.main, argv)
            self.assertEqual(error.code, 2, argv)
            self.assertIn(f"callback-client: {reason}", stderr.getvalue(), argv)
