#!/usr/bin/env python3
"""
Where the time goes, in text, from a py-spy flame graph SVG (not a test):
the functions with the most samples of their own (self), the functions with
the most samples under them (inclusive, each stack counted once), and self
samples summed by source file.

    python3 bench/flamesummary.py docs/flame-200.svg [--top 15]

py-spy writes one box per (function, line) and stack depth; each box's
C{fg:x}/C{fg:w} are its first sample and its number of samples, and its
C{y} its depth (py-spy draws the root at the top, callees below).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter, defaultdict

BOX = re.compile(
    r"<g><title>(?P<title>[^<]*)</title><rect [^>]*?y=\"(?P<y>[\d.]+)\""
    r"[^>]*?fg:x=\"(?P<x>\d+)\" fg:w=\"(?P<w>\d+)\""
)
NAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::\d+)?\) \(\d+ samples")


def parse(svg: str) -> list[tuple[int, int, int, str, str]]:
    """
    The boxes: (depth from the root, first sample, samples, function, file).
    """
    raw = []
    for m in BOX.finditer(svg):
        name = NAME.match(m.group("title").replace("&lt;", "<").replace("&gt;", ">"))
        if name is None:
            continue
        raw.append(
            (
                float(m.group("y")),
                int(m.group("x")),
                int(m.group("w")),
                name.group("func"),
                name.group("file"),
            )
        )
    if not raw:
        return []
    top = min(y for y, *_ in raw)
    return [(round((y - top) / 16), x, w, f, file) for y, x, w, f, file in raw]


def summarise(boxes: list[tuple[int, int, int, str, str]]) -> dict[str, Counter]:
    byDepth: dict[int, list[tuple[int, int, str, str]]] = defaultdict(list)
    for depth, x, w, func, file in boxes:
        byDepth[depth].append((x, w, func, file))
    selfSamples: Counter = Counter()
    inclusive: Counter = Counter()
    byFile: Counter = Counter()
    # Self = a box's samples minus those of the boxes right above it.
    for depth, row in byDepth.items():
        above = sorted(byDepth.get(depth + 1, []))
        for x, w, func, file in row:
            children = sum(cw for cx, cw, _, _ in above if x <= cx < x + w)
            own = w - children
            key = f"{func} ({file})"
            selfSamples[key] += own
            byFile[file] += own
    # Inclusive: per sample column, each function once per stack.
    columns: dict[int, set[str]] = defaultdict(set)
    for _, x, w, func, file in boxes:
        for sample in range(x, x + w):
            columns[sample].add(f"{func} ({file})")
    for names in columns.values():
        for name in names:
            inclusive[name] += 1
    return {"self": selfSamples, "inclusive": inclusive, "file": byFile}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("svg")
    parser.add_argument("--top", type=int, default=15)
    options = parser.parse_args(argv)
    with open(options.svg) as f:
        boxes = parse(f.read())
    if not boxes:
        print("no py-spy boxes found", file=sys.stderr)
        return 1
    total = max(x + w for _depth, x, w, _func, _file in boxes)
    summary = summarise(boxes)
    for title, key in (
        ("self samples by function", "self"),
        ("inclusive samples by function", "inclusive"),
        ("self samples by file", "file"),
    ):
        print(f"\n{title} (of {total}):")
        for name, n in summary[key].most_common(options.top):
            print(f"  {n / total * 100:5.1f} %  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
