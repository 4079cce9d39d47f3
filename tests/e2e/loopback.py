# -*- test-case-name: tests.e2e.test_peers,tests.e2e.test_processes -*-
"""
Loopback ports and bounded waiting, shared by every part of the end-to-end
harness.

Every port a test uses is found here (L{freePort}), and every wait is a
Deferred with a bound (L{pollUntil}, L{sleep}): a test never sleeps the
reactor, and a process that never gets ready fails the test instead of
hanging it.
"""

from __future__ import annotations

import errno
import random
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred

LOOPBACK = "127.0.0.1"

# Ports handed out by this process: freePort never gives one twice, so two
# parts of one test cannot race each other for the same port.
_givenPorts: set[int] = set()


#: Where L{freePort} looks: below the kernel's ephemeral range (Linux:
#: 32768-60999), which every C{bind(0)} on the machine draws from (our
#: server's RTP ports, SIPp's and Kamailio's own sockets).  A port picked
#: here stays free until its process binds it, unless another test run on
#: the same machine picks it too.
PORT_RANGE = (20000, 32000)


def freePort(kind: int = socket.SOCK_DGRAM) -> int:
    """
    A loopback port that is free now (UDP by default), outside the
    ephemeral range (L{PORT_RANGE}) so that no process's C{bind(0)} can take
    it before ours binds it.  Within this process no port is returned twice.
    """
    low, high = PORT_RANGE
    start = random.randrange(low, high)
    for offset in range(high - low):
        port = low + (start - low + offset) % (high - low)
        if port in _givenPorts or port + 1 in _givenPorts:
            continue
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                continue
        _givenPorts.add(port)
        return port
    raise RuntimeError("no free loopback port found")


def reservePort(port: int) -> None:
    """
    Never hand out C{port} from L{freePort}: a caller found it free by other
    means (SIPp's media port pair) and is about to use it.
    """
    _givenPorts.add(port)


def portIsBound(port: int, kind: int = socket.SOCK_DGRAM) -> bool:
    """
    Whether someone holds loopback C{port}: probed by trying to bind it.
    """
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def pollUntil(
    reactor: Any, predicate: Callable[[], Any], timeout: float, interval: float = 0.05
) -> Deferred:
    """
    Fire with the first true value of C{predicate()}, polled every
    C{interval} seconds; errback with L{defer.TimeoutError} after C{timeout}.
    """
    d: Deferred = Deferred()
    deadline = reactor.seconds() + timeout
    pending: list[Any] = []

    def check() -> None:
        pending.clear()
        try:
            value = predicate()
        except BaseException:
            d.errback()
            return
        if value:
            d.callback(value)
        elif reactor.seconds() >= deadline:
            d.errback(defer.TimeoutError(f"condition not met within {timeout} s"))
        else:
            pending.append(reactor.callLater(interval, check))

    def cancel(_: Deferred) -> None:
        for call in pending:
            if call.active():
                call.cancel()

    d.addBoth(lambda result: (cancel(d), result)[1])
    check()
    return d


def waitOrFail(
    testCase: Any,
    predicate: Callable[[], Any],
    what: str,
    describe: Callable[[], str],
    timeout: float = 10.0,
    reactor: Any = None,
) -> Deferred:
    """
    Poll C{predicate()} until it is true (an C{AssertionError} it raises
    counts as not yet); after C{timeout} seconds fail C{testCase} naming
    C{what}, followed by C{describe()}: what the peers logged, so a failure
    says what happened instead of only what did not.
    """
    if reactor is None:
        from twisted.internet import reactor  # type: ignore[no-redef]

    def check() -> Any:
        try:
            return predicate()
        except AssertionError:
            return False

    def timedOut(failure: Any) -> None:
        failure.trap(defer.TimeoutError)
        testCase.fail(f"{what}: not seen within {timeout} s\n{describe()}")

    return pollUntil(reactor, check, timeout).addErrback(timedOut)


def sleep(reactor: Any, seconds: float) -> Deferred:
    """
    A Deferred that fires with C{None} after C{seconds} of C{reactor} time.
    """
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)
