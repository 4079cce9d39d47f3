#!/usr/bin/env python3
"""
What a held joined callback keeps, by source line (not a test; run it under
the benchmark lock all the same, it takes a core): the whole server
(L{callback_tw.tap.buildService}) on a fake reactor and fake UDP ports, an
in-memory store, N REQUESTs whose legs a scripted far end answers (INVITE
and join re-INVITE: 200 with SDP), then 70 s of fake time past the 32-36 s
retransmission cache, then a tracemalloc comparison with the moment before
the first REQUEST.

    flock /tmp/bench.lock python3 bench/joined_tracemalloc.py --calls 500 --top 30

Prints the bytes kept per joined callback, in total and by line (or by
file with C{--by filename}), and the peak while setting up; the in-memory
store of the harness is left out (the server keeps its records in SQLite
or PostgreSQL), though what it refers to (its rows, ~1.5 KB per callback
with the fake RTP ports) is counted.  C{--trace FILE:LINE --frames 8}
shows the callers of a line, C{--timeline} the memory every 5 s of fake
time, C{--rss} the process's RSS instead (C{--mallocstats}: pymalloc's).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import tracemalloc
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from twisted.internet.defer import succeed  # noqa: E402
from twisted.logger import globalLogBeginner  # noqa: E402

from callback_tw.config import loadConfig  # noqa: E402
from callback_tw.config.values import PACKAGED_PROMPTS  # noqa: E402
from callback_tw.sip import adapter  # noqa: E402
from callback_tw.tap import buildService, loadPrompts  # noqa: E402
from tests.siphelpers import FarEnd, farSdp, headerOf  # noqa: E402
from tests.storehelpers import MemoryStore  # noqa: E402
from tests.test_service import ServiceReactor  # noqa: E402

CONFIG = """\
[callback]
listen_address = 127.0.0.1
listen_port = 5080
default_caller = 1000
outbound_peer = pss
max_duration = 86400
max_calls = 100000
no_answer_timeout = 60
shutdown_timeout = 2
max_lag = 0
[sip]
address = 127.0.0.1
port = 0
max_requests_per_source = 0
[peer_servers]
pss = 127.0.0.1:5070
as1 = 127.0.0.1:6000
[media]
prompts = {prompts}
default_ann_id1 =
ringback_frequency = 0
[store]
request_memory = 3600
"""

AS = ("127.0.0.1", 6000)
PROVIDER = ("127.0.0.1", 5070)


class Harness:
    """The server and a far end that answers every INVITE it sends."""

    def __init__(self) -> None:
        directory = tempfile.mkdtemp(prefix="joined_tracemalloc-")
        path = os.path.join(directory, "callback.ini")
        with open(path, "w", encoding="utf-8") as f:
            f.write(CONFIG.format(prompts=PACKAGED_PROMPTS))
        config = loadConfig(path)
        self.reactor = ServiceReactor()
        adapter.useReactor(self.reactor)
        self.store = MemoryStore(clock=self.reactor)
        self.service = buildService(
            config,
            self.reactor,
            loadPrompts(config),
            openStore=lambda: succeed(self.store),
        )
        self.far = FarEnd(port=PROVIDER[1])
        self._answered: set[str] = set()
        self._version = 1

    def start(self) -> None:
        self.service.startService()
        self.sip, self.iif = self.reactor.bound[:2]
        self.reactor.advance(0.1)

    def request(self, n: int) -> None:
        text = f"REQUEST: id=j{n};user1=answer{n};user2=answer-{n};duration=86400;"
        self.iif.protocol.datagramReceived(text.encode(), AS)

    def answerAll(self) -> None:
        """Answer every new INVITE sent since the last call: 200 with an SDP."""
        written, self.sip.written[:] = list(self.sip.written), []
        for data, _addr in written:
            text = data.decode()
            if not text.startswith("INVITE "):
                continue
            branch = headerOf(text, "via")
            if branch in self._answered:
                continue
            self._answered.add(branch)
            self._version += 1
            port = 20000 + self._version % 20000
            sdp = farSdp(port=port, version=self._version)
            self.sip.protocol.datagramReceived(
                self.far.response(text, 200, "OK", sdp).encode(), PROVIDER
            )
        self.iif.written[:] = []

    def joined(self) -> int:
        return sum(
            1
            for call in self.service.manager.active.values()
            if str(getattr(call, "state", "")) == "joined"
        )

    def run(self, seconds: float, step: float = 0.05) -> None:
        for _ in range(round(seconds / step)):
            self.reactor.advance(step)
            self.answerAll()
            # The in-memory store lists every write for tests to read.
            self.store.writes.clear()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--settle", type=float, default=70.0)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--by", default="lineno", choices=["lineno", "filename"])
    parser.add_argument("--frames", type=int, default=1)
    parser.add_argument(
        "--rss",
        action="store_true",
        help="no tracemalloc: print this process's RSS per joined callback,"
        " and after glibc's malloc_trim",
    )
    parser.add_argument(
        "--mallocstats",
        action="store_true",
        help="with --rss: print pymalloc's statistics (stderr) at the end",
    )
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="print the memory held every 5 s of (fake) time after the set-up",
    )
    parser.add_argument(
        "--trace",
        nargs="*",
        default=[],
        help="file:line whose allocations are shown with their callers"
        " (with --frames > 1)",
    )
    options = parser.parse_args()

    # The server logs through twistd's observers; unstarted, twisted.logger
    # would buffer every event in memory.
    globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)
    harness = Harness()
    harness.start()
    harness.run(1.0)
    gc.collect()
    if options.rss:
        return _rssOnly(harness, options)
    tracemalloc.start(options.frames)
    before = tracemalloc.take_snapshot()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    step = 1 / options.rate
    for n in range(options.calls):
        harness.request(n)
        harness.reactor.advance(step)
        harness.answerAll()
    harness.run(5.0)
    joined = harness.joined()
    per0 = max(joined, 1)
    for _ in range(int(options.settle // 5)):
        harness.run(5.0, step=0.5)
        if options.timeline:
            now, high = tracemalloc.get_traced_memory()
            print(
                f"  t={harness.reactor.seconds():6.1f} s: {(now - base) / per0:7.0f} B"
                f" now, {(high - base) / per0:7.0f} B peak per callback",
                flush=True,
            )
    gc.collect()
    peak = tracemalloc.get_traced_memory()[1] - base
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    exclude = [
        tracemalloc.Filter(False, f"*/{name}")
        for name in (
            "tests/storehelpers.py",
            "tests/siphelpers.py",
            "tests/test_service.py",
            "bench/joined_tracemalloc.py",
        )
    ]
    exclude.append(tracemalloc.Filter(False, tracemalloc.__file__))
    stats = after.filter_traces(exclude).compare_to(
        before.filter_traces(exclude), options.by
    )
    total = sum(s.size_diff for s in stats)
    count = sum(s.count_diff for s in stats)
    per = max(joined, 1)
    print(
        f"{joined} joined of {options.calls}; kept {total / per:.0f} B"
        f" ({count / per:.1f} blocks) per joined callback; peak while"
        f" setting up {peak / per:.0f} B per joined callback"
    )
    for s in stats[: options.top]:
        frame = s.traceback[0]
        name = frame.filename.split("site-packages/")[-1]
        where = name.replace(str(REPO_ROOT) + "/", "")
        if options.by == "lineno":
            where += f":{frame.lineno}"
        print(f"{s.size_diff / per:8.0f} B {s.count_diff / per:6.2f}  {where}")
    if options.trace:
        traced = after.filter_traces(exclude).compare_to(
            before.filter_traces(exclude), "traceback"
        )
        for s in traced:
            frame = s.traceback[-1]
            if any(
                f"{frame.filename}:{frame.lineno}".endswith(t) for t in options.trace
            ):
                if s.size_diff / per >= 16:
                    print(f"--- {s.size_diff / per:.0f} B {s.count_diff / per:.2f}")
                    print("\n".join(s.traceback.format()))
    return 0


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _rssOnly(harness: Harness, options: argparse.Namespace) -> int:
    """The same run, measured as the benchmark does: RSS."""
    import ctypes

    before = _rss()
    step = 1 / options.rate
    for n in range(options.calls):
        harness.request(n)
        harness.reactor.advance(step)
        harness.answerAll()
    harness.run(5.0)
    joined = max(harness.joined(), 1)
    peak = _rss()
    harness.run(options.settle, step=0.5)
    held = _rss()
    if options.mallocstats:
        sys._debugmallocstats()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    trimmed = _rss()
    print(
        f"{joined} joined; RSS per joined callback: {(peak - before) / joined:.1f} KiB"
        f" after set-up, {(held - before) / joined:.1f} KiB held,"
        f" {(trimmed - before) / joined:.1f} KiB after malloc_trim"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
