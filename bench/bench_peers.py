#!/usr/bin/env python3
"""
callback_tw against sippy's own B2BUA, side by side in one run (not a test;
loopback only, bounded in time): the benchmark the README quotes.

Two systems, each driven by SIPp, one step (one offered rate) at a time,
the steps of the two interleaved so that both see the same machine:

  - sippy C{b2bua_simple} (it ships with sippy) between SIPp's built-in UAC
    and the SIPp phone farm: one unit = one proxied call (2 dialogs, ~14
    SIP messages), held C{--talk} seconds;
  - our server (C{twistd -n callback}, SIP trace off, settings as shipped)
    with the SIPp phone farm and a UDP AS client: one unit = one callback
    (2 dialogs + 2 join re-INVITEs, ~20 messages), C{duration=--talk}.

For every step: done right (SIPp's successful calls; callbacks with the
right RESPONSE, refusals counted as not right), achieved units/s over the
steady window, the server's CPU (utime + stime from /proc/<pid>/stat, so
other processes do not inflate it) per unit and as a share of one core, and
the overload guard's refusals.  Then the two ratios of issue 12:

  1. CPU per unit: b2bua_simple's / ours, at the rates both ran (goal >= 2);
  2. capacity: our highest offered rate with <= 0.1 % not right, over
     b2bua_simple's highest with >= 99.9 % right (goal >= 2).

Run from the repository root:

    python3 bench/bench_peers.py            # 4 + 4 steps of 15 s, ~5 min
    python3 bench/bench_peers.py --quick    # 2 + 2 steps of 8 s, ~1.5 min

Each step starts its processes fresh and stops them after; the whole run is
bounded (C{--hard-limit}, killed after that).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

import bench_callbacks  # noqa: E402
import sippyside  # noqa: E402
from benchrun import runBounded  # noqa: E402
from twisted.internet import defer  # noqa: E402

from tests.e2e import harness  # noqa: E402

SIPPY_RATES = "100,150,200,250"
OURS_RATES = "150,200,250,300"


def rates(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


@defer.inlineCallbacks
def runOurStep(
    reactor: Any, options: argparse.Namespace, rate: float, variant: dict[str, str]
) -> Any:
    """
    One step against our server, through L{bench_callbacks.run}.

    @param variant: what differs from C{options}: C{root} (the source tree
        the server runs from), C{reactor}, C{log_level}, C{max_lag},
        C{prelude}.
    """
    stepOptions = argparse.Namespace(
        rate=rate,
        seconds=options.seconds,
        talk=options.talk,
        mode="duration",
        drain=options.drain,
        max_calls=100000,
        max_lag=float(variant.get("max_lag", options.max_lag)),
        request_memory=3600,
        trace=False,
        keep=False,
        quiet=True,
        reactor=variant.get("reactor", options.reactor),
        log_level=variant.get("log_level"),
        prelude=variant.get("prelude"),
        profile=(
            options.profile if rate == options.profile_rate and not variant else None
        ),
        root=variant.get("root"),
    )
    report = yield bench_callbacks.run(reactor, stepOptions)
    right = report["completed"]
    return {
        "offered": rate,
        "requested": report["requested"],
        "right": right,
        "refused": report["refused"],
        "achieved_per_s": report["sustained_per_s"],
        "cpu_s": report["cpu_s"],
        "cpu_ms_per_unit": report["cpu_ms_per_callback"],
        "cpu_steady_share": report["cpu_steady_share"],
        "ack_p99_ms": report["ack_p99_ms"],
        "failures": report["failures"],
    }


def acceptedWrong(step: dict[str, Any]) -> int:
    """Callbacks accepted (not refused) whose RESPONSE was not right."""
    return step["requested"] - step["right"] - step["refused"]


def notRefused(failures: dict[str, int]) -> dict[str, int]:
    """The failures by kind, refusals left out."""
    return {kind: n for kind, n in failures.items() if kind != "ACK code=fail"}


def parseVariant(text: str) -> tuple[str, dict[str, str]]:
    """
    C{LABEL:key=value,key=value} -> (label, settings).
    """
    label, _, rest = text.partition(":")
    settings = dict(item.split("=", 1) for item in rest.split(",") if item)
    unknown = set(settings) - {"root", "reactor", "log_level", "max_lag", "prelude"}
    if unknown:
        raise SystemExit(f"--variant {text}: unknown settings {sorted(unknown)}")
    return label, settings


def percent(part: float, whole: float) -> str:
    return f"{part / whole * 100:.1f} %" if whole else "-"


def row(system: str, step: dict[str, Any]) -> str:
    requested = step["requested"]
    refused = percent(step["refused"], requested) if system != "sippy" else "-"
    return (
        f"| {system} | {step['offered']:g} | {percent(step['right'], requested)}"
        f" | {step['achieved_per_s']:.0f} | {step['cpu_ms_per_unit']:.2f} ms"
        f" | {step['cpu_steady_share'] * 100:.0f} % | {refused} |"
    )


def ratios(sippy: list[dict[str, Any]], ours: list[dict[str, Any]]) -> list[str]:
    """
    The two ratios of issue 12, as lines of text.
    """
    lines = []
    sippyCpu = {s["offered"]: s["cpu_ms_per_unit"] for s in sippy}
    ourCpu = {s["offered"]: s["cpu_ms_per_unit"] for s in ours}
    common = sorted(set(sippyCpu) & set(ourCpu))
    if common:
        parts = [f"{r:g}/s {sippyCpu[r] / ourCpu[r]:.2f}" for r in common]
        lines.append(
            "CPU per unit, b2bua_simple / callback_tw (goal >= 2): " + ", ".join(parts)
        )
    else:
        mean = sum(s["cpu_ms_per_unit"] for s in sippy) / len(sippy)
        meanOurs = sum(s["cpu_ms_per_unit"] for s in ours) / len(ours)
        lines.append(
            "CPU per unit, b2bua_simple / callback_tw (goal >= 2), means over the"
            f" steps: {mean:.2f} / {meanOurs:.2f} ms = {mean / meanOurs:.2f}"
        )

    def clean(step: dict[str, Any]) -> bool:
        return step["right"] >= 0.999 * step["requested"]

    sippyBest = max((s["offered"] for s in sippy if clean(s)), default=None)
    ourBest = max((s["offered"] for s in ours if clean(s)), default=None)
    if sippyBest is None:
        lines.append(
            "capacity: b2bua_simple never completed >= 99.9 % at the rates run;"
            " achieved /s at equal offered load (callback_tw / b2bua_simple): "
            + (
                ", ".join(
                    f"{r:g}/s {o['achieved_per_s']:.0f}/{s['achieved_per_s']:.0f}"
                    for s in sippy
                    for o in ours
                    for r in [s["offered"]]
                    if o["offered"] == r
                )
                or "no common rate"
            )
        )
    else:
        ours_ = f"{ourBest:g}/s" if ourBest is not None else "none"
        ratio = ourBest / sippyBest if ourBest is not None else 0.0
        lines.append(
            "capacity (highest offered rate with >= 99.9 % right): callback_tw"
            f" {ours_}, b2bua_simple {sippyBest:g}/s: ratio {ratio:.2f} (goal >= 2;"
            " bounded by the rates run)"
        )
    return lines


@defer.inlineCallbacks
def runAll(reactor: Any, options: argparse.Namespace) -> Any:
    sippyRates, ourRates = rates(options.sippy_rates), rates(options.rates)
    sippy: list[dict[str, Any]] = []
    # Our variants and "callback_tw" (this tree, the options as given); the
    # order turns by one at each rate, so that none always runs first.
    variants = [*options.variants, ("callback_tw", {})]
    ours: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in variants}
    for index in range(max(len(sippyRates), len(ourRates))):
        if index < len(sippyRates):
            step = yield sippyside.runSippyStep(
                reactor, sippyRates[index], options.seconds, options.talk, options.drain
            )
            sippy.append(step)
            print(row("sippy", step), flush=True)
            if step["errors"] and options.verbose:
                print("  SIPp UAC errors (tail):", step["errors"], flush=True)
        if index >= len(ourRates):
            continue
        turn = index % len(variants)
        for label, variant in variants[turn:] + variants[:turn]:
            step = yield runOurStep(reactor, options, ourRates[index], variant)
            ours[label].append(step)
            print(row(label, step), flush=True)
            if options.verbose:
                print(
                    f"  ACK p99 {step['ack_p99_ms']:.1f} ms; failures"
                    f" {step['failures'] or 'none'}",
                    flush=True,
                )
    print()
    print(
        f"steps of {options.seconds:g} s offered, talk {options.talk:g} s;"
        f" callback_tw reactor {options.reactor or 'epoll (default)'},"
        f" max_lag {options.max_lag:g}; load average"
        f" {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    for label, variant in options.variants:
        print(f"  {label}: {variant}")
    print(
        "| system | offered /s | done right | achieved /s | server CPU per unit"
        " | server CPU, share of a core | overload refusals |"
    )
    print("|---|---|---|---|---|---|---|")
    for step in sippy:
        print(row("sippy", step).replace("| sippy |", "| sippy `b2bua_simple` |", 1))
    for label, _ in variants:
        for step in ours[label]:
            print(row(label, step))
    print()
    if sippy and ours["callback_tw"]:
        for line in ratios(sippy, ours["callback_tw"]):
            print(line)
    for label, _ in variants:
        ackP99 = ", ".join(
            f"{s['offered']:g}/s {s['ack_p99_ms']:.1f} ms" for s in ours[label]
        )
        if ackP99:
            print(f"{label} ACK p99: {ackP99}")
        wrong = "; ".join(
            f"{s['offered']:g}/s {acceptedWrong(s)}"
            + (f" {notRefused(s['failures'])}" if acceptedWrong(s) else "")
            for s in ours[label]
        )
        if wrong:
            print(f"{label} accepted but not right: {wrong}")
    return {"sippy": sippy, "ours": ours["callback_tw"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sippy-rates",
        default=SIPPY_RATES,
        dest="sippy_rates",
        help=f"b2bua_simple's offered rates, calls/s ({SIPPY_RATES})",
    )
    parser.add_argument(
        "--rates",
        default=OURS_RATES,
        help=f"our offered rates, callbacks/s ({OURS_RATES})",
    )
    parser.add_argument(
        "--seconds", type=float, default=15.0, help="seconds of load per step (15)"
    )
    parser.add_argument("--talk", type=int, default=2, help="seconds per unit (2)")
    parser.add_argument(
        "--drain", type=float, default=10.0, help="seconds for stragglers (10)"
    )
    parser.add_argument(
        "--max-lag",
        type=float,
        default=0.1,
        dest="max_lag",
        help="our overload guard, [callback] max_lag (0.1 as shipped; 0: off)",
    )
    parser.add_argument(
        "--reactor",
        default=None,
        help="our server's reactor: epoll (default), asyncio, or uvloop",
    )
    parser.add_argument(
        "--profile",
        metavar="SVG",
        default=None,
        help="py-spy flame graph of our server at --profile-rate",
    )
    parser.add_argument(
        "--profile-rate", type=float, default=200.0, dest="profile_rate"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 + 2 steps of 8 s (sippy 100,200; ours 150,250)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL:key=value,...",
        help="also run our server so at each rate, before ours: root=DIR (another"
        " source tree, e.g. `git archive main | tar -x -C DIR`), reactor=NAME"
        " (epoll, asyncio, uvloop), log_level=LEVEL (twistd writes only events"
        " at LEVEL and above), max_lag=S, prelude=MODULE (imported by the server"
        " first, e.g. bench.sippyfast); repeat for more",
    )
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        default=None,
        help="short for --variant baseline:root=DIR",
    )
    parser.add_argument("--verbose", action="store_true")
    options = parser.parse_args(argv)
    options.variants = [parseVariant(v) for v in options.variant]
    if options.baseline:
        options.variants.insert(0, ("baseline", {"root": options.baseline}))
    if options.quick:
        options.sippy_rates, options.rates = "100,200", "150,250"
        options.seconds, options.drain = 8.0, 6.0
    if harness.SIPP is None:
        print("sipp is not installed (Debian package sip-tester)", file=sys.stderr)
        return 2
    steps = len(rates(options.sippy_rates)) + len(rates(options.rates)) * (
        1 + len(options.variants)
    )
    hardLimit = steps * (options.seconds + options.talk + options.drain + 25) + 30

    result = runBounded(
        lambda reactor: runAll(reactor, options), hardLimit, bench_callbacks._children
    )
    if not isinstance(result, dict):
        return 1
    return 0 if not any(math.isnan(s["cpu_ms_per_unit"]) for s in result["ours"]) else 1


if __name__ == "__main__":
    sys.exit(main())
