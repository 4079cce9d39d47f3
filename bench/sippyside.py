"""
The sippy side of C{bench/bench_peers.py}: sippy's own C{b2bua_simple}
between a SIPp UAC and the SIPp phone farm, one load step at a time.

SIPp UAC (C{bench/scenarios/uac.xml}: SIPp's built-in C{uac}, INVITE, ACK,
hold C{talk} seconds, BYE, that also ACKs a repeated 200 during the hold)
-> C{b2bua_simple} (one proxied call = two dialogs, ~14 messages) -> SIPp
UAS (C{tests/e2e/scenarios/uas.xml}, user C{answer}: 100, 180, 200).
sippy's log goes nowhere (C{SIPLOG_BEND=none}), as our server runs with its
SIP trace off, so neither pays for a message log.
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_callbacks import _children, cpuSeconds, cpuShare
from twisted.internet import defer, task

from tests.e2e import harness
from tests.e2e.loopback import LOOPBACK, freePort
from tests.e2e.processes import ChildProcess

UAC_SCENARIO = Path(__file__).resolve().parent / "scenarios" / "uac.xml"


class B2BUAProcess(ChildProcess):
    """
    C{python -m sippy.b2bua_simple -f -l 127.0.0.1 -p PORT -n 127.0.0.1:UAS}.
    """

    def __init__(self, reactor: Any, nextHop: int) -> None:
        super().__init__(reactor, "b2bua_simple")
        self.port = freePort()
        self.nextHop = nextHop

    def start(self, directory: str) -> defer.Deferred:
        argv = [
            sys.executable,
            "-m",
            "sippy.b2bua_simple",
            "-f",
            "-l",
            LOOPBACK,
            "-p",
            str(self.port),
            "-n",
            f"{LOOPBACK}:{self.nextHop}",
        ]
        env = dict(os.environ, SIPLOG_BEND="none", PYTHONUNBUFFERED="1")
        return self._spawnUntilBound(argv, directory, env, self.port, 10.0)

    def stop(self) -> defer.Deferred:
        return self.terminate(3.0)


class SippUAC(ChildProcess):
    """
    SIPp (C{bench/scenarios/uac.xml}) placing C{total} calls to C{answer@target} at
    C{rate} per second, each held C{talk} seconds; it exits when they are
    done.  Its statistics file (C{-trace_stat}, one row a second) gives the
    successful and failed calls over time.
    """

    def __init__(
        self,
        reactor: Any,
        directory: Path,
        target: int,
        rate: float,
        total: int,
        talk: float,
        lifetime: float,
    ) -> None:
        super().__init__(reactor, "sipp-uac")
        self.port = freePort()
        self.statFile = directory / f"uac-{self.port}-stats.csv"
        self.errorFile = directory / f"uac-{self.port}-errors.log"
        scenario = directory / "uac.xml"
        scenario.write_text(
            UAC_SCENARIO.read_text().replace("HOLD_MS", str(int(talk * 1000)))
        )
        self.argvList = [
            harness.SIPP,
            "-sf",
            str(scenario),
            "-s",
            "answer",
            f"{LOOPBACK}:{target}",
            "-i",
            LOOPBACK,
            "-p",
            str(self.port),
            "-cp",
            str(freePort()),
            "-r",
            f"{rate:g}",
            "-m",
            str(total),
            "-l",
            str(int(rate * (talk + 30)) + 100),
            "-recv_timeout",
            "20000",
            "-timeout",
            f"{int(lifetime)}s",
            "-timeout_error",
            "-nostdin",
            "-trace_stat",
            "-stf",
            str(self.statFile),
            "-fd",
            "1",
            "-trace_err",
            "-error_file",
            str(self.errorFile),
            "-max_recv_loops",
            "10000",
            "-max_sched_loops",
            "10000",
        ]
        self.directory = directory

    def start(self) -> None:
        env = dict(os.environ, TERM="dumb")
        self._spawn(self.argvList, str(self.directory), env)

    def rows(self) -> list[dict[str, str]]:
        """
        The rows of SIPp's statistics file so far (cumulative counters).
        """
        try:
            text = self.statFile.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return list(csv.DictReader(text.splitlines(), delimiter=";"))


def _seconds(elapsed: str) -> float:
    """SIPp's C{ElapsedTime(C)} (C{HH:MM:SS:mmm...}) in seconds."""
    parts = elapsed.split(":")
    h, m, s = int(parts[0]), int(parts[1]), int(parts[2])
    fraction = float("0." + parts[3]) if len(parts) > 3 and parts[3] else 0.0
    return h * 3600 + m * 60 + s + fraction


def successesBetween(
    rows: list[dict[str, str]], start: float, end: float
) -> tuple[int, float]:
    """
    Calls completed successfully between C{start} and C{end} seconds of the
    UAC's run, from its cumulative counters; and the span actually covered
    by the rows used.
    """
    points = [
        (_seconds(row["ElapsedTime(C)"]), int(row["SuccessfulCall(C)"]))
        for row in rows
        if row.get("ElapsedTime(C)") and row.get("SuccessfulCall(C)")
    ]
    inside = [p for p in points if start <= p[0] <= end]
    if len(inside) < 2:
        return 0, 0.0
    return inside[-1][1] - inside[0][1], inside[-1][0] - inside[0][0]


@defer.inlineCallbacks
def runSippyStep(reactor: Any, rate: float, seconds: float, talk: float, drain: float):
    """
    One load step against C{b2bua_simple}; fire with a dict of figures:
    offered, requested, right, achieved_per_s, cpu_s, cpu_ms_per_unit,
    cpu_steady_share, refused (always 0: b2bua_simple has no guard).
    """
    directory = Path(tempfile.mkdtemp(prefix="bench_peers-sippy-"))
    lifetime = seconds + talk + drain + 40
    uas = harness.SippUAS(
        str(directory),
        reactor=reactor,
        lifetime=lifetime,
        traceMessages=False,
        extraArgs=["-max_recv_loops", "10000", "-max_sched_loops", "10000"],
    )
    b2bua = B2BUAProcess(reactor, uas.port)
    total = int(rate * seconds)
    uac = SippUAC(reactor, directory, b2bua.port, rate, total, talk, lifetime)
    _children.extend([uas, b2bua, uac])
    cpuSamples: list[tuple[float, float]] = []
    sampling = None
    try:
        yield uas.start()
        yield b2bua.start(str(directory))
        yield harness.sleep(reactor, 1.0)
        cpuStart = cpuSeconds(b2bua.pid)

        def sample() -> None:
            try:
                cpuSamples.append((time.monotonic(), cpuSeconds(b2bua.pid)))
            except OSError:
                pass

        sampling = task.LoopingCall(sample)
        sampling.start(0.1)
        start = time.monotonic()
        uac.start()
        deadline = start + seconds + talk + drain
        while uac.running and time.monotonic() < deadline:
            yield harness.sleep(reactor, 0.25)
        end = time.monotonic()
        cpu = cpuSeconds(b2bua.pid) - cpuStart
        sampling.stop()
        sampling = None
        if uac.running:
            yield uac.terminate(3.0)
        rows = uac.rows()
        last = rows[-1] if rows else {}
        right = int(last.get("SuccessfulCall(C)", 0) or 0)
        created = int(last.get("TotalCallCreated", 0) or 0)
        failed = int(last.get("FailedCall(C)", 0) or 0)
        windowStart, windowEnd = talk + 1.0, seconds
        inWindow, span = successesBetween(rows, windowStart, windowEnd)
        return {
            "offered": rate,
            "requested": total,
            "created": created,
            "right": right,
            "failed": failed,
            "refused": 0,
            "achieved_per_s": inWindow / span if span > 0 else float("nan"),
            "cpu_s": cpu,
            "cpu_ms_per_unit": cpu / right * 1000 if right else float("nan"),
            "cpu_steady_share": cpuShare(
                cpuSamples, start + windowStart, start + windowEnd
            ),
            "run_s": end - start,
            "errors": _tail(uac.errorFile),
        }
    finally:
        if sampling is not None:
            sampling.stop()
        for process in (uac, b2bua, uas):
            if process.running:
                yield process.terminate(3.0)
        shutil.rmtree(directory, ignore_errors=True)


def _tail(path: Path, size: int = 1500) -> str:
    """
    The end of SIPp's error log, without the end of every hold (a receive
    timeout by design).
    """
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    entries = text.split("\n20")
    kept = [e for e in entries if "receive timeout on message" not in e]
    return "\n20".join(kept)[-size:]
