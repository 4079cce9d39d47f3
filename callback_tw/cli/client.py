# -*- test-case-name: tests.test_client -*-
"""
C{callback-client}: play the application server from a shell.

    callback-client request --server 127.0.0.1:5080 --id 1 --user1 100 --user2 101 \\
        --duration 60
    callback-client cancel --server 127.0.0.1:5080 --id 1

It prints the ACK as soon as it arrives and the RESPONSE when the callback
ends, with a live status line while it waits (on a terminal only, so logs and
pipes get plain lines); C{--json} prints one JSON object per event instead.
Everything on the wire is done by L{callback_tw.client}.

Exit codes: 0 the command was accepted (and, for C{request}, the RESPONSE
came); 1 C{code=fail}, no answer or C{--timeout}; 2 bad usage.
"""

from __future__ import annotations

import json
import socket
import sys
from typing import Any, TextIO

from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.task import LoopingCall
from twisted.python import usage

from callback_tw.client import (
    AckTimeout,
    CallbackClient,
    PendingCallback,
    ResponseLost,
)

__all__ = ["main"]

#: Shortest key accepted, as the server requires for a peer's key.
MIN_KEY_BYTES = 16


def _address(value: str, what: str) -> tuple[str, int]:
    """
    C{HOST:PORT} or C{[V6]:PORT} -> (IP address, port); a name is resolved.

    @raise usage.UsageError: for anything else.
    """
    host, colon, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise usage.UsageError(f"{what}: {value!r} is not HOST:PORT")
    if not host:
        return "", int(port)
    try:
        info = socket.getaddrinfo(host, int(port), type=socket.SOCK_DGRAM)
    except (OSError, UnicodeError) as e:
        raise usage.UsageError(f"{what}: cannot resolve {host!r}: {e}") from None
    return str(info[0][4][0]), int(port)


class _CommonOptions(usage.Options):
    optParameters = [
        ["server", None, None, "the server's IIF address, HOST:PORT (required)"],
        ["id", None, None, "the callback id (required)"],
        ["bind", None, None, "our address, HOST:PORT (the server's peer entry)"],
        ["key-file", None, None, "sign with the key in this file (issue 9 scheme)"],
        ["timeout", None, None, "give up after this many seconds in all", float],
    ]
    optFlags = [["json", None, "one JSON object per event"]]
    required: tuple[str, ...] = ("server", "id")

    def postOptions(self) -> None:
        for name in self.required:
            if self[name] is None:
                raise usage.UsageError(f"--{name} is required")
        self.server = _address(self["server"], "--server")
        self.bind = ("", 0)
        if self["bind"] is not None:
            self.bind = _address(self["bind"], "--bind")
        elif ":" in self.server[0]:
            self.bind = ("::", 0)
        self.key = None
        if self["key-file"] is not None:
            self.key = self._readKey(self["key-file"])
        if self["timeout"] is not None and self["timeout"] <= 0:
            raise usage.UsageError("--timeout must be > 0")

    def _readKey(self, path: str) -> bytes:
        try:
            with open(path, "rb") as f:
                key = f.read().rstrip(b"\r\n")
        except OSError as e:
            raise usage.UsageError(f"--key-file: {e.strerror}: {path}") from None
        if len(key) < MIN_KEY_BYTES:
            raise usage.UsageError(
                f"--key-file: the key must be at least {MIN_KEY_BYTES} bytes"
            )
        return key


class RequestOptions(_CommonOptions):
    synopsis = "--server HOST:PORT --id ID --user1 A --user2 B --duration N [...]"
    optParameters = [
        ["user1", None, None, "the first party called (required)"],
        ["user2", None, None, "the second party called (required)"],
        ["duration", None, None, "seconds of the call, 0 = the server's max", int],
        ["ann-id1", None, None, "8-digit announcement for user1"],
        ["ann-id2", None, None, "8-digit announcement for user2"],
        ["ann-digit2", None, None, "digits spoken to user2"],
    ]
    required = ("server", "id", "user1", "user2", "duration")

    def postOptions(self) -> None:
        super().postOptions()
        if self["duration"] < 0:
            raise usage.UsageError("--duration must be >= 0")


class CancelOptions(_CommonOptions):
    synopsis = "--server HOST:PORT --id ID [--bind HOST:PORT] [--key-file F]"


class Options(usage.Options):
    synopsis = "callback-client request|cancel [options]"
    subCommands = [
        ["request", None, RequestOptions, "start a callback and wait for its end"],
        ["cancel", None, CancelOptions, "release a running callback"],
    ]

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("a command is required: request or cancel")


class _Printer:
    """
    Events to the user: text lines or JSON objects, and on a terminal a
    status line rewritten in place (and erased before the next event).
    """

    def __init__(self, out: TextIO, asJson: bool, reactor: Any) -> None:
        self._out = out
        self._json = asJson
        self._reactor = reactor
        self._start = reactor.seconds()
        self._live = not asJson and out.isatty()
        self._statusShown = False

    def elapsed(self) -> float:
        return self._reactor.seconds() - self._start

    def event(self, kind: str, callbackId: str, text: str, **fields: Any) -> None:
        self._clearStatus()
        if self._json:
            record = {"event": kind, "id": callbackId, **fields}
            record["elapsed"] = round(self.elapsed(), 3)
            line = json.dumps(record)
        else:
            separator = ": " if kind in ("timeout", "interrupted") else " "
            line = f"{kind.upper()} id={callbackId}{separator}{text}"
        self._out.write(line + "\n")
        self._out.flush()

    def status(self, text: str) -> None:
        if self._live:
            self._out.write("\r\x1b[K" + text)
            self._out.flush()
            self._statusShown = True

    def _clearStatus(self) -> None:
        if self._statusShown:
            self._out.write("\r\x1b[K")
            self._statusShown = False


def _timeoutAfter(
    d: Deferred[Any], reactor: Any, printer: _Printer, timeout: float | None
) -> Deferred[Any]:
    if timeout is not None:
        d.addTimeout(max(timeout - printer.elapsed(), 0.0), reactor)
    return d


async def _request(reactor: Any, config: RequestOptions, printer: _Printer) -> int:
    client = _startClient(reactor, config)
    callbackId = config["id"]
    server = config["server"]
    pending = client.request(
        callbackId,
        config["user1"],
        config["user2"],
        config["duration"],
        config["ann-id1"],
        config["ann-id2"],
        config["ann-digit2"],
    )
    try:
        try:
            ok = await _timeoutAfter(pending.acked, reactor, printer, config["timeout"])
        except (AckTimeout, defer.TimeoutError):
            printer.event(
                "timeout",
                callbackId,
                f"no ACK from {server} within {printer.elapsed():.1f} s",
                waiting_for="ack",
            )
            return 1
        _printAck(printer, callbackId, ok)
        if not ok:
            return 1
        return await _awaitResponse(reactor, config, printer, pending)
    finally:
        # Its failure (refused, abandoned) was reported through acked already.
        pending.finished.addErrback(lambda _: None)
        await client.stop()


def _printAck(printer: _Printer, callbackId: str, ok: bool) -> None:
    code = "ok" if ok else "fail"
    printer.event("ack", callbackId, f"code={code}", code=code)


async def _awaitResponse(
    reactor: Any, config: RequestOptions, printer: _Printer, pending: PendingCallback
) -> int:
    callbackId = pending.callbackId
    ackedAt = printer.elapsed()

    def showStatus() -> None:
        asked = f", asked again {pending.requeries}x" if pending.requeries else ""
        printer.status(
            f"id={callbackId} accepted, waiting for the RESPONSE:"
            f" {printer.elapsed() - ackedAt:.0f} s{asked}"
        )

    ticker = LoopingCall(showStatus)
    ticker.clock = reactor
    ticker.start(1.0)
    try:
        realDuration = await _timeoutAfter(
            pending.finished, reactor, printer, config["timeout"]
        )
    except defer.TimeoutError:
        printer.event(
            "timeout",
            callbackId,
            f"no RESPONSE within {printer.elapsed():.1f} s",
            waiting_for="response",
        )
        return 1
    except ResponseLost as e:
        printer.event(
            "timeout",
            callbackId,
            f"no RESPONSE after {printer.elapsed():.1f} s: {e}",
            waiting_for="response",
            reason=str(e),
        )
        return 1
    finally:
        ticker.stop()
    printer.event(
        "response",
        callbackId,
        f"real_duration={realDuration}",
        real_duration=realDuration,
    )
    return 0


async def _cancel(reactor: Any, config: CancelOptions, printer: _Printer) -> int:
    client = _startClient(reactor, config)
    callbackId = config["id"]
    try:
        d = _timeoutAfter(
            client.cancel(callbackId), reactor, printer, config["timeout"]
        )
        ok = await d
    except (AckTimeout, defer.TimeoutError):
        printer.event(
            "timeout",
            callbackId,
            f"no ACK from {config['server']} within {printer.elapsed():.1f} s",
            waiting_for="ack",
        )
        return 1
    finally:
        await client.stop()
    _printAck(printer, callbackId, ok)
    return 0 if ok else 1


def _startClient(reactor: Any, config: _CommonOptions) -> CallbackClient:
    client = CallbackClient(reactor, config.server, config.bind, config.key)
    try:
        client.start()
    except CannotListenError as e:
        raise SystemExit(
            f"callback-client: cannot bind {e.interface}:{e.port}: {e.socketError}"
        ) from None
    return client


def run(reactor: Any, options: Options, out: TextIO) -> Deferred[None]:
    """
    Run the parsed command; fail with L{SystemExit} carrying a non-zero exit
    code (what L{task.react} turns into the process's exit status).
    """
    config = options.subOptions
    printer = _Printer(out, config["json"], reactor)
    command = _request if options.subCommand == "request" else _cancel

    async def main() -> None:
        try:
            code = await command(reactor, config, printer)
        except CancelledError:
            printer.event("interrupted", config["id"], "before the answer")
            code = 130
        if code:
            raise SystemExit(code)

    d = ensureDeferred(main())

    def interrupted() -> Deferred[None]:
        # Ctrl-C or SIGTERM: say so and exit non-zero, not 0 as task.react would.
        d.cancel()
        return d

    reactor.addSystemEventTrigger("before", "shutdown", interrupted)
    return d


def main(argv: list[str] | None = None) -> None:
    """
    The console script C{callback-client}.
    """
    from twisted.internet import reactor, task

    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        sys.stderr.write(f"{options}\ncallback-client: {e}\n")
        sys.exit(2)
    task.react(lambda r: run(r, options, sys.stdout), _reactor=reactor)
