#!/usr/bin/env python3
"""
Load benchmark for callback_tw (not a test): how many callbacks per second
the server sustains, and what each one costs.

It starts the real server (C{twistd -n callback}, SIP trace off) and one SIPp
UAS playing every phone (C{etc/sipp/phones.xml}: it answers every
leg and every join re-INVITE), then sends REQUESTs at C{--rate} per second for
C{--seconds} from a UDP application-server client, and prints:

  - callbacks requested; ACK latency p50/p99 (REQUEST sent -> ACK received)
  - callbacks completed with the right RESPONSE, failures by kind
  - sustained callbacks/s (completions per second once the load is steady)
  - server CPU seconds per callback (utime+stime from /proc/<pid>/stat)
  - peak RSS per concurrent callback ((peak RSS - idle RSS) / peak number of
    callbacks between ACK and RESPONSE)

Two ways to end each callback (C{--mode}):
  duration  user1=answer, user2=answer, duration=D: the server's duration
            timer ends it; real_duration must be D (rounded, the join takes
            milliseconds).  Cheapest for SIPp.  (default)
  hangup    user2=hangup<D>: user2 sends BYE D s after answering; real_duration
            must be D.  SIPp polls every 100 ms per call, so it costs SIPp more.

Run from the repository root:

    python3 bench/bench_callbacks.py --rate 100 --seconds 20

Every process it starts is stopped at the end; the whole run is bounded by
C{--seconds} + talk time + C{--drain} seconds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from benchrun import runBounded  # noqa: E402
from twisted.internet import defer, task  # noqa: E402
from twisted.internet.protocol import DatagramProtocol  # noqa: E402

from tests.e2e import harness  # noqa: E402

CLOCK_TICK = os.sysconf("SC_CLK_TCK")

# Every child process started, so the hard time limit can end them.
_children: list[Any] = []


def cpuSeconds(pid: int) -> float:
    """
    utime + stime of process C{pid}, seconds.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def rssKiB(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def udpReceiveDrops() -> int:
    """
    The kernel's count of UDP datagrams dropped for a full receive buffer
    (RcvbufErrors in /proc/net/snmp), machine-wide.
    """
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("RcvbufErrors")])


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


class BenchAS(DatagramProtocol):
    """
    The application server: sends REQUESTs, matches ACK and RESPONSE by id.
    """

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.sent: dict[str, float] = {}
        self.acks: dict[str, tuple[str, float]] = {}
        self.responses: dict[str, tuple[int, float]] = {}
        self.duplicates = Counter()
        self.garbage: list[str] = []

    def request(self, callbackId: str, user1: str, user2: str, duration: int) -> None:
        text = (
            f"REQUEST: id={callbackId};user1={user1};user2={user2};duration={duration};"
        )
        self.sent[callbackId] = time.monotonic()
        self.transport.write(text.encode("ascii"), self.server)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        now = time.monotonic()
        method, params = harness.parseIIF(data.decode("ascii", "replace"))
        callbackId = params.get("id", "")
        if method == "ACK":
            if callbackId in self.acks:
                self.duplicates["ACK"] += 1
            else:
                self.acks[callbackId] = (params.get("code", ""), now)
        elif method == "RESPONSE":
            if callbackId in self.responses:
                self.duplicates["RESPONSE"] += 1
            else:
                try:
                    self.responses[callbackId] = (
                        int(params.get("real_duration", "")),
                        now,
                    )
                except ValueError:
                    self.garbage.append(data.decode("ascii", "replace"))
        else:
            self.garbage.append(data.decode("ascii", "replace"))

    def active(self) -> int:
        """
        Callbacks ACKed ok and not yet finished.
        """
        return sum(
            1
            for i, (code, _) in self.acks.items()
            if code == "ok" and i not in self.responses
        )


class Sampler:
    """
    Samples the server's RSS, CPU time and the number of active callbacks.
    """

    def __init__(self, pid: int, client: BenchAS) -> None:
        self.pid = pid
        self.client = client
        self.peakRss = 0
        self.peakActive = 0
        self.samples: list[tuple[float, int, int]] = []
        self.cpu: list[tuple[float, float]] = []

    def sample(self) -> None:
        try:
            rss = rssKiB(self.pid)
            cpu = cpuSeconds(self.pid)
        except OSError:
            return
        active = self.client.active()
        now = time.monotonic()
        self.samples.append((now, rss, active))
        self.cpu.append((now, cpu))
        self.peakRss = max(self.peakRss, rss)
        self.peakActive = max(self.peakActive, active)


def cpuShare(samples: list[tuple[float, float]], start: float, end: float) -> float:
    """
    The fraction of one core used between C{start} and C{end}, from
    (monotonic time, CPU seconds) samples; NaN without two samples there.
    """
    inside = [(t, cpu) for t, cpu in samples if start <= t <= end]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return float("nan")
    return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


class BenchServer(harness.ServerProcess):
    """
    The server as the end-to-end tests start it, on the reactor chosen by
    C{twistdReactor}: a name for twistd's C{--reactor}, or C{"uvloop"}
    (Twisted's asyncio reactor on a uvloop event loop); C{None}: twistd's
    default (epoll).  C{root}: the source tree it runs from (default: this
    one), so that two versions can be measured in one run.  C{logLevel}: the
    lowest level twistd writes (L{bench.benchlog}); default: all.
    C{prelude}: a module the server imports first (a measurement aid such
    as L{bench.sippyfast}).
    """

    twistdReactor: str | None = None
    root: str | None = None
    logLevel: str | None = None
    prelude: str | None = None

    def _spawn(self, argv: Any, cwd: str, env: Any = None) -> None:
        # The server runs from its working directory (first on sys.path):
        # another source tree, e.g. a baseline commit, runs its own code.
        super()._spawn(argv, self.root or cwd, env)

    def argv(self) -> list[str]:
        argv = super().argv()
        if self.prelude is not None:
            # A module imported before twistd starts (bench.sippyfast...).
            argv[2] = f"import {self.prelude}; " + argv[2]
        if self.logLevel is not None:
            # The repository root is the server's working directory, first on
            # its sys.path: bench/ imports as a namespace package.
            argv.insert(argv.index("-n"), f"--logger=bench.benchlog.{self.logLevel}")
        if self.twistdReactor is None:
            return argv
        name = self.twistdReactor
        if name == "uvloop":
            argv[2] = "import uvloop; uvloop.install(); " + argv[2]
            name = "asyncio"
        argv.insert(argv.index("-n"), f"--reactor={name}")
        return argv


def startProfiler(
    reactor: Any, pid: int, svg: str, delay: float, until: float
) -> defer.Deferred:
    """
    Sample process C{pid} with py-spy from C{delay} to C{until} seconds from
    now (the steady part of the load) into the flame graph C{svg}; fire when
    py-spy has written it.
    """
    from twisted.internet.utils import getProcessOutputAndValue

    pyspy = shutil.which("py-spy")
    if pyspy is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    seconds = max(1, int(until - delay))

    def record() -> defer.Deferred:
        d = getProcessOutputAndValue(
            pyspy,
            [
                "record",
                "--nonblocking",
                "-o",
                svg,
                "--pid",
                str(pid),
                "--duration",
                str(seconds),
            ],
            env=dict(os.environ),
            reactor=reactor,
        )

        def done(result: tuple[bytes, bytes, int]) -> None:
            out, err, code = result
            print(
                f"py-spy exit {code}: {(out + err).decode(errors='replace')[-300:]}",
                flush=True,
            )

        return d.addCallback(done)

    return task.deferLater(reactor, delay, record)


@defer.inlineCallbacks
def run(reactor: Any, options: argparse.Namespace) -> Any:
    """
    One load run; fire with the report (a dict of figures).  Prints the
    figures unless C{options.quiet}; C{options.reactor} picks the server's
    reactor (see L{BenchServer}).
    """
    quiet = getattr(options, "quiet", False)
    directory = Path(tempfile.mkdtemp(prefix="bench_callbacks-"))
    talk = options.talk
    uas = harness.SippUAS(
        str(directory),
        reactor=reactor,
        lifetime=options.seconds + talk + options.drain + 60,
        traceMessages=False,
        extraArgs=["-max_recv_loops", "10000", "-max_sched_loops", "10000"],
    )
    client = BenchAS(("127.0.0.1", 0))
    clientPort = harness.freePort()
    server = BenchServer(
        str(directory),
        uas.port,
        clientPort,
        reactor=reactor,
        trace=options.trace,
        max_calls=options.max_calls,
        no_answer_timeout=30,
        shutdown_timeout=5,
        request_memory=options.request_memory,
        max_lag=options.max_lag,
        url=getattr(options, "store", None) or "sqlite:///callbacks.db",
        # As shipped: one line per callback (the e2e harness writes debug).
        level="info",
    )
    server.twistdReactor = getattr(options, "reactor", None)
    server.root = getattr(options, "root", None)
    server.logLevel = getattr(options, "log_level", None)
    server.prelude = getattr(options, "prelude", None)
    client.server = server.iifAddress
    server.maxOutput = 500_000_000
    _children.extend([uas, server])
    listening = None
    report: dict[str, Any] = {}
    try:
        yield uas.start()
        listening = reactor.listenUDP(clientPort, client, interface="127.0.0.1")
        yield server.start()
        yield harness.sleep(reactor, 1.0)
        idleRss = rssKiB(server.pid)
        cpuStart = cpuSeconds(server.pid)
        sippCpuStart = cpuSeconds(uas.pid)
        dropsStart = udpReceiveDrops()
        sampler = Sampler(server.pid, client)
        sampling = task.LoopingCall(sampler.sample)
        sampling.start(0.1)

        total = int(options.rate * options.seconds)
        start = time.monotonic()
        if not quiet:
            print(
                f"driving {total} callbacks at {options.rate}/s for {options.seconds} s"
                f" (mode {options.mode}, talk {talk} s);"
                f" server pid {server.pid}, SIPp pid {uas.pid}",
                flush=True,
            )

        def send(n: int) -> None:
            if options.mode == "duration":
                client.request(f"b{n}", f"answer{n}", f"answer-{n}", talk)
            else:
                client.request(f"b{n}", f"answer{n}", f"hangup{talk}-{n}", 3600)

        for n in range(total):
            reactor.callLater(n / options.rate, send, n)
        profiler = None
        if getattr(options, "profile", None):
            profiler = startProfiler(
                reactor, server.pid, options.profile, talk + 1.0, options.seconds
            )

        deadline = options.seconds + talk + options.drain
        while time.monotonic() - start < deadline:
            yield harness.sleep(reactor, 0.25)
            if (
                len(client.sent) == total
                and len(client.responses)
                + sum(1 for code, _ in client.acks.values() if code != "ok")
                >= total
            ):
                break
        end = time.monotonic()
        sampling.stop()
        if profiler is not None:
            yield profiler
        cpu = cpuSeconds(server.pid) - cpuStart
        sippCpu = cpuSeconds(uas.pid) - sippCpuStart
        drops = udpReceiveDrops() - dropsStart

        # ---- figures
        ackLatency = [
            (when - client.sent[i]) * 1000
            for i, (code, when) in client.acks.items()
            if i in client.sent
        ]
        failures: Counter = Counter()
        failedIds: dict[str, list[str]] = {}
        completed = 0
        wrong: Counter = Counter()
        for i in client.sent:
            ack = client.acks.get(i)
            if ack is None:
                failures["no ACK"] += 1
                failedIds.setdefault("no ACK", []).append(i)
                continue
            if ack[0] != "ok":
                failures[f"ACK code={ack[0]}"] += 1
                failedIds.setdefault(f"ACK code={ack[0]}", []).append(i)
                continue
            response = client.responses.get(i)
            if response is None:
                failures["no RESPONSE"] += 1
                failedIds.setdefault("no RESPONSE", []).append(i)
            elif response[0] != talk:
                failures["wrong real_duration"] += 1
                failedIds.setdefault(f"real_duration={response[0]}", []).append(i)
                wrong[response[0]] += 1
            else:
                completed += 1
        # Steady state: completions between the first possible one (+1 s of
        # ramp) and the end of the offered load.
        windowStart = start + talk + 1.0
        windowEnd = start + options.seconds
        inWindow = [
            when
            for i, (duration, when) in client.responses.items()
            if duration == talk and windowStart <= when <= windowEnd
        ]
        window = windowEnd - windowStart
        sustained = len(inWindow) / window if window > 0 else float("nan")
        grownKiB = sampler.peakRss - idleRss
        # While concurrency is flat, RSS should be flat too; growth here is
        # memory kept per *finished* callback (the id memory, or a leak).
        steady = [
            (t, rss) for t, rss, _ in sampler.samples if windowStart <= t <= windowEnd
        ]
        steadyGrowth = None
        if len(steady) >= 2 and inWindow:
            steadyGrowth = (steady[-1][1] - steady[0][1]) / len(inWindow)

        report = {
            "requested": len(client.sent),
            "ack_p50_ms": percentile(ackLatency, 0.50),
            "ack_p99_ms": percentile(ackLatency, 0.99),
            "completed": completed,
            "failures": dict(failures),
            "sustained_per_s": sustained,
            "cpu_s": cpu,
            "cpu_ms_per_callback": (
                cpu / completed * 1000 if completed else float("nan")
            ),
            "peak_active": sampler.peakActive,
            "idle_rss_kib": idleRss,
            "peak_rss_kib": sampler.peakRss,
            "rss_kib_per_concurrent": (
                grownKiB / sampler.peakActive if sampler.peakActive else float("nan")
            ),
            "steady_rss_kib_per_finished": steadyGrowth,
            "udp_receive_drops": drops,
            "refused": sum(1 for code, _ in client.acks.values() if code != "ok"),
            "cpu_steady_share": cpuShare(sampler.cpu, windowStart, windowEnd),
            "run_s": end - start,
        }
        elapsed = end - start
        lines = [
            ("callbacks requested", f"{report['requested']}"),
            (
                "ACK latency p50 / p99",
                f"{report['ack_p50_ms']:.2f} / {report['ack_p99_ms']:.2f} ms",
            ),
            (
                "completed, right RESPONSE",
                f"{completed} ({completed / max(1, total) * 100:.1f}%)",
            ),
            ("failures by kind", f"{dict(failures) or 'none'}"),
        ]
        for kind, ids in failedIds.items():
            more = " ..." if len(ids) > 10 else ""
            lines.append((f"  {kind}", f"ids {' '.join(ids[:10])}{more}"))
        if wrong:
            lines.append(("  real_duration values", f"{dict(sorted(wrong.items()))}"))
        if client.duplicates:
            lines.append(("  duplicate datagrams", f"{dict(client.duplicates)}"))
        if client.garbage:
            lines.append(
                (
                    "  unparsable datagrams",
                    f"{len(client.garbage)}: {client.garbage[:3]}",
                )
            )
        lines += [
            ("offered rate", f"{options.rate:.1f} callbacks/s"),
            (
                "sustained (steady window)",
                f"{sustained:.1f} callbacks/s over {window:.1f} s",
            ),
            ("run time", f"{elapsed:.1f} s"),
            (
                "UDP receive-buffer drops",
                f"{drops} (machine-wide RcvbufErrors; lost SIP is retransmitted)",
            ),
            (
                "server CPU",
                f"{cpu:.2f} s = {report['cpu_ms_per_callback']:.2f} ms per callback"
                f" ({cpu / elapsed * 100:.0f}% of a core)",
            ),
            (
                "SIPp CPU (for context)",
                f"{sippCpu:.2f} s ({sippCpu / elapsed * 100:.0f}% of a core)",
            ),
            (
                "RSS idle / peak",
                f"{idleRss / 1024:.1f} / {sampler.peakRss / 1024:.1f} MiB;"
                f" peak concurrent callbacks {sampler.peakActive};"
                f" {report['rss_kib_per_concurrent']:.1f} KiB per concurrent callback",
            ),
        ]
        marks: list[tuple[float, int, int]] = []
        for t, rss, active in sampler.samples:
            if not marks or t - marks[-1][0] >= 10:
                marks.append((t, rss, active))
        lines.append(
            (
                "RSS every 10 s",
                ", ".join(
                    f"{t - start:.0f}s {rss / 1024:.0f} MiB/{active} active"
                    for t, rss, active in marks
                ),
            )
        )
        if steadyGrowth is not None:
            lines.append(
                (
                    "RSS growth, steady window",
                    f"{steadyGrowth:.2f} KiB per finished callback (held after the"
                    " end: sippy keeps a finished dialog ~32 s, plus the id memory;"
                    " run >= 60 s to see the plateau)",
                )
            )
        if not quiet:
            print()
            for label, value in lines:
                print(f"{label:<30}{value}")
    except Exception:
        print(
            "benchmark failed; server output tail:\n" + server.output[-4000:],
            file=sys.stderr,
        )
        print("SIPp errors:\n" + uas.errors()[-2000:], file=sys.stderr)
        raise
    finally:
        if listening is not None:
            yield listening.stopListening()
        yield server.stop()
        yield uas.stop()
        if options.keep:
            (directory / "server-output.log").write_text(server.output)
            print(f"files kept in {directory} (server-output.log: the server's log)")
        else:
            for path in directory.iterdir():
                path.unlink()
            directory.rmdir()
    return report


def makeParser() -> argparse.ArgumentParser:
    """The options of this benchmark (bench_store.py reuses them)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rate", type=float, default=50.0, help="callbacks requested per second (50)"
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="how long to offer load (10)"
    )
    parser.add_argument(
        "--talk", type=int, default=2, help="seconds each callback talks (2)"
    )
    parser.add_argument("--mode", choices=("duration", "hangup"), default="duration")
    parser.add_argument(
        "--drain", type=float, default=15.0, help="seconds to wait for stragglers (15)"
    )
    parser.add_argument("--max-calls", type=int, default=100000, dest="max_calls")
    parser.add_argument(
        "--max-lag",
        type=float,
        default=0.1,
        dest="max_lag",
        help="the server's overload guard, [callback] max_lag"
        " (default 0.1 as shipped; 0: off)",
    )
    parser.add_argument(
        "--request-memory",
        type=float,
        default=3600,
        dest="request_memory",
        help="server's request_memory, seconds a finished id is remembered (3600)",
    )
    parser.add_argument(
        "--store",
        default=None,
        help="the server's [store] url (default: an SQLite file in the run's"
        " temporary directory)",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="server SIP trace on (off: the figures are for production)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary directory (config, server log, SIPp errors)",
    )
    parser.add_argument(
        "--reactor",
        default=None,
        help="the server's reactor: a twistd --reactor name (epoll, asyncio...)"
        " or uvloop (asyncio reactor on uvloop); default: twistd's (epoll)",
    )
    parser.add_argument(
        "--log-level",
        dest="log_level",
        choices=("debug", "info", "warn"),
        default=None,
        help="twistd writes only log events at this level and above (default:"
        " every event, as twistd -l - does)",
    )
    parser.add_argument(
        "--profile",
        metavar="SVG",
        default=None,
        help="sample the server with py-spy over the steady window; write a"
        " flame graph to SVG",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    options = makeParser().parse_args(argv)
    if harness.SIPP is None:
        print("sipp is not installed (Debian package sip-tester)", file=sys.stderr)
        return 2

    # Hard bound on the whole run, whatever happens.
    hardLimit = options.seconds + options.talk + options.drain + 60
    result = runBounded(lambda reactor: run(reactor, options), hardLimit, _children)
    if not isinstance(result, dict):
        return 1
    return 0 if result["completed"] == result["requested"] else 1


if __name__ == "__main__":
    sys.exit(main())
