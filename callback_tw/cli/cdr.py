# -*- test-case-name: tests.test_store_cli -*-
"""
C{callback-cdr}: the call records in the store, for people.

    callback-cdr --store sqlite:///var/lib/callback/callbacks.db list --since 2026-11-01
    callback-cdr --config /etc/callback/callback.ini show k1
    callback-cdr --store postgresql://cdr:pw@db:5432/callback export --format csv

It reads the same store the server writes and is safe to run while the
server runs: on SQLite (WAL) a reader never blocks the writer, each query
being its own short read; on PostgreSQL it is one more client.  It never
creates or migrates a store.  Times are printed and parsed as ISO 8601 in
UTC (a time without a zone is taken as UTC).
"""

from __future__ import annotations

import configparser
import csv
import json
import os
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO

from twisted.python import usage

from callback_tw.store.errors import StoreError
from callback_tw.store.records import CALLBACK_COLUMNS, CallbackRecord
from callback_tw.store.sql import Connection, connect
from callback_tw.store.url import parseURL, redact

__all__ = ["Options", "main"]

_TIMES = frozenset(c for c in CALLBACK_COLUMNS if c.endswith("_at"))
# list: what a person scans for; show and export print every column.
_LIST = (
    ("id", "id"),
    ("accepted", "accepted_at"),
    ("peer", "peer"),
    ("user1", "user1"),
    ("user2", "user2"),
    ("state", "state"),
    ("real", "real_duration"),
    ("cause", "end_cause"),
)


def _parseTime(text: str) -> float:
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise usage.UsageError(f"not an ISO 8601 time: {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def formatTime(seconds: float | None) -> str:
    """POSIX seconds as ISO 8601 UTC with milliseconds; "" for None."""
    if seconds is None:
        return ""
    when = datetime.fromtimestamp(seconds, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _row(record: CallbackRecord) -> dict[str, Any]:
    row = record.asDict()
    for column in _TIMES:
        row[column] = formatTime(row[column]) or None
    return row


class _Filters(usage.Options):
    optParameters = [
        ["since", None, None, "accepted at or after this ISO 8601 time (UTC)"],
        ["until", None, None, "accepted before this ISO 8601 time (UTC)"],
        ["peer", None, None, "only this peer's callbacks"],
    ]

    def postOptions(self) -> None:
        for name in ("since", "until"):
            if self[name] is not None:
                self[name] = _parseTime(self[name])


class _List(_Filters):
    synopsis = "[--since ISO] [--until ISO] [--peer NAME]"


class _Export(_Filters):
    synopsis = "--format csv|jsonl [--since ISO] [--until ISO] [--peer NAME]"
    optParameters = _Filters.optParameters + [
        ["format", "f", "csv", "csv or jsonl (one JSON object per line)"],
    ]

    def postOptions(self) -> None:
        super().postOptions()
        if self["format"] not in ("csv", "jsonl"):
            raise usage.UsageError("--format must be csv or jsonl")


class _Show(usage.Options):
    synopsis = "ID"

    def parseArgs(self, callbackId: str) -> None:
        self["id"] = callbackId


class Options(usage.Options):
    """
    C{callback-cdr [--store URL | --config FILE] COMMAND}.
    """

    synopsis = "callback-cdr [--store URL | --config FILE] list|show|export ..."
    longdesc = (
        "Call records from the callback server's store (read only, safe while"
        " the server runs). Times are ISO 8601, UTC."
    )
    optParameters = [
        ["store", "s", None, "sqlite:///path or postgresql://user:pw@host:port/db"],
        ["config", "c", None, "the server's configuration file (its [store] url)"],
    ]
    subCommands = [
        ["list", None, _List, "list callbacks, oldest first"],
        ["show", None, _Show, "every field of one callback and its legs"],
        ["export", None, _Export, "all fields, as CSV or JSON lines"],
    ]

    def opt_version(self) -> None:
        """Show callback_tw's version and exit."""
        from callback_tw import __version__

        print(f"callback-cdr (callback_tw) {__version__}")
        sys.exit(0)

    def postOptions(self) -> None:
        if self.subCommand is None:
            raise usage.UsageError("name a command: list, show or export")
        if (self["store"] is None) == (self["config"] is None):
            raise usage.UsageError("give exactly one of --store and --config")
        if self["config"] is not None:
            self["store"], self["baseDir"] = _urlFromConfig(self["config"])
        else:
            self["baseDir"] = None


def _urlFromConfig(path: str) -> tuple[str, str]:
    """
    The store URL of a server configuration file, and the directory a
    relative SQLite path is relative to (the file's).  Without a [store]
    url, the server's default: callbacks.db beside the file.
    """
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except (OSError, configparser.Error) as e:
        raise usage.UsageError(f"cannot read {path}: {e}") from None
    url = parser.get("store", "url", fallback="sqlite:///callbacks.db")
    return url, os.path.dirname(os.path.abspath(path))


def _list(records: Iterable[CallbackRecord], out: TextIO) -> None:
    rows = [[heading for heading, _ in _LIST]]
    for record in records:
        row = _row(record)
        rows.append(["" if row[c] is None else str(row[c]) for _, c in _LIST])
    widths = [max(len(row[i]) for row in rows) for i in range(len(_LIST))]
    for row in rows:
        line = "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True))
        out.write(line.rstrip() + "\n")


def _show(connection: Connection, callbackId: str, out: TextIO) -> bool:
    record = connection.readCallback(callbackId)
    if record is None:
        return False
    for column, value in _row(record).items():
        out.write(f"{column}: {'' if value is None else value}\n")
    for leg in connection.readLegs(callbackId):
        out.write(f"leg {leg.leg}:\n")
        for column, value in leg.asDict().items():
            if column not in ("callback_id", "leg"):
                out.write(f"  {column}: {'' if value is None else value}\n")
    return True


def _export(records: Iterable[CallbackRecord], form: str, out: TextIO) -> None:
    if form == "jsonl":
        for record in records:
            out.write(json.dumps(_row(record), ensure_ascii=False) + "\n")
        return
    writer = csv.DictWriter(out, fieldnames=CALLBACK_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow(_row(record))


def run(options: Options, out: TextIO) -> int:
    """Carry out parsed C{options}; return the exit status."""
    url = parseURL(options["store"], options["baseDir"])
    connection = connect(url, create=False)
    try:
        command, sub = options.subCommand, options.subOptions
        if command == "show":
            if not _show(connection, sub["id"], out):
                sys.stderr.write(f"callback-cdr: no callback {sub['id']}\n")
                return 1
            return 0
        records = connection.iterCallbacks(sub["since"], sub["until"], sub["peer"])
        if command == "list":
            _list(records, out)
        else:
            _export(records, sub["format"], out)
        return 0
    finally:
        connection.close()


def main(argv: list[str] | None = None) -> int:
    """The console script: parse, run, one-line errors, exit status."""
    options = Options()
    try:
        options.parseOptions(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as e:
        sys.stderr.write(f"callback-cdr: {e} (callback-cdr --help for usage)\n")
        return 2
    try:
        return run(options, sys.stdout)
    except BrokenPipeError:
        # The reader went away (| head): not an error.  Point stdout at
        # /dev/null so that flushing it at exit does not complain again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except StoreError as e:
        sys.stderr.write(f"callback-cdr: {e}\n")
    except Exception as e:
        message = redact(" ".join(str(e).split()))
        sys.stderr.write(f"callback-cdr: {redact(options['store'])}: {message}\n")
    return 1


if __name__ == "__main__":
    sys.exit(main())
