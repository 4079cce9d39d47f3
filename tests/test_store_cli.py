"""
Tests for C{callback-cdr} (L{callback_tw.cli.cdr}), run as a subprocess
against stores the server's own code wrote: an SQLite file and a real
PostgreSQL database (L{tests.pgserver}).
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import sys
from dataclasses import replace
from typing import Any

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import TestCase

from callback_tw.store import open as openStore
from callback_tw.store.url import parseURL
from tests import pgserver
from tests.test_store import dialog, request

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 2026-11-29T10:00:00Z and the following hours.
_T0 = 1795946400.0


async def cdr(*args: str) -> tuple[str, str, int]:
    """Run callback-cdr from this checkout; return stdout, stderr, status."""
    out, err, code = await getProcessOutputAndValue(
        sys.executable,
        ["-m", "callback_tw.cli.cdr", *args],
        env={**os.environ, "PYTHONPATH": _ROOT},
        path=_ROOT,
        reactor=reactor,
    )
    return out.decode(), err.decode(), code


class CDRTestsMixin:
    """callback-cdr on any store; subclasses give C{newURL()}."""

    password: str | None = None

    def newURL(self) -> str:
        raise NotImplementedError()

    async def fill(self) -> Any:
        """
        Three callbacks: k1 (as1, ended, 10:00), k2 (as2, ended, 11:00),
        k3 (as1, running, 12:00); the store stays open (the server runs).
        """
        self.url = self.newURL()
        store = await openStore(self.url, "srv1", reactor)
        self.addCleanup(store.close)
        await store.accept(request("k1"), at=_T0)
        await store.upsertLeg(dialog("k1"))
        await store.markEnded("k1", "user2 hung up", 42, at=_T0 + 60)
        await store.accept(replace(request("k2"), peer="as2"), at=_T0 + 3600)
        await store.markEnded("k2", "user1 busy (486 Busy Here)", 0, at=_T0 + 3601)
        await store.accept(request("k3", annId1="00000001"), at=_T0 + 7200)
        return store

    async def test_list(self) -> None:
        """list prints one line per callback, oldest first, with a header."""
        await self.fill()
        out, err, code = await cdr("--store", self.url, "list")
        self.assertEqual((err, code), ("", 0))
        lines = out.splitlines()
        self.assertEqual(lines[0].split()[:3], ["id", "accepted", "peer"])
        self.assertEqual([line.split()[0] for line in lines[1:]], ["k1", "k2", "k3"])
        self.assertIn("2026-11-29T10:00:00.000Z", lines[1])
        self.assertIn("user2 hung up", lines[1])
        self.assertEqual(lines[1].split()[5:7], ["ended", "42"])

    async def test_listFilters(self) -> None:
        """--since/--until (ISO, UTC) and --peer select callbacks."""
        await self.fill()
        out, _, code = await cdr(
            "--store", self.url, "list", "--since", "2026-11-29T10:30", "--peer", "as1"
        )
        self.assertEqual(code, 0)
        self.assertEqual([line.split()[0] for line in out.splitlines()[1:]], ["k3"])
        out, _, _ = await cdr(
            "--store", self.url, "list", "--until", "2026-11-29T11:00:00+00:00"
        )
        self.assertEqual([line.split()[0] for line in out.splitlines()[1:]], ["k1"])

    async def test_show(self) -> None:
        """show prints every field of one callback and its legs."""
        await self.fill()
        out, err, code = await cdr("--store", self.url, "show", "k1")
        self.assertEqual((err, code), ("", 0))
        self.assertIn("id: k1\n", out)
        self.assertIn("real_duration: 42\n", out)
        self.assertIn("ended_at: 2026-11-29T10:01:00.000Z\n", out)
        self.assertIn("leg 1:\n  call_id: call-k1-1@127.0.0.1\n", out)
        self.assertIn("  route_set: ['<sip:proxy@127.0.0.1:5080;lr>']\n", out)

    async def test_showUnknown(self) -> None:
        """show of an unknown id says so and exits 1."""
        await self.fill()
        out, err, code = await cdr("--store", self.url, "show", "nosuch")
        self.assertEqual(
            (out, err, code), ("", "callback-cdr: no callback nosuch\n", 1)
        )

    async def test_exportCSV(self) -> None:
        """export --format csv writes a header and every column of each row."""
        await self.fill()
        out, err, code = await cdr(
            "--store", self.url, "export", "--format", "csv", "--peer", "as1"
        )
        self.assertEqual((err, code), ("", 0))
        rows = list(csv.DictReader(io.StringIO(out)))
        self.assertEqual([row["id"] for row in rows], ["k1", "k3"])
        self.assertEqual(rows[0]["real_duration"], "42")
        self.assertEqual(rows[0]["accepted_at"], "2026-11-29T10:00:00.000Z")
        self.assertEqual(rows[1]["ann_id1"], "00000001")
        self.assertEqual(rows[1]["ended_at"], "")

    async def test_exportJSONLines(self) -> None:
        """export --format jsonl writes one JSON object per callback."""
        await self.fill()
        out, err, code = await cdr(
            "--store", self.url, "export", "--format", "jsonl", "--since", "2026-11-29"
        )
        self.assertEqual((err, code), ("", 0))
        records = [json.loads(line) for line in out.splitlines()]
        self.assertEqual([r["id"] for r in records], ["k1", "k2", "k3"])
        self.assertEqual(records[1]["end_cause"], "user1 busy (486 Busy Here)")
        self.assertEqual(records[1]["peer"], "as2")
        self.assertIsNone(records[2]["real_duration"])
        self.assertEqual(records[0]["server_id"], "srv1")


class SQLiteCDRTests(CDRTestsMixin, TestCase):
    """callback-cdr on an SQLite store."""

    def newURL(self) -> str:
        return "sqlite:///" + os.path.abspath(self.mktemp()) + "/callbacks.db"

    async def test_badArguments(self) -> None:
        """Bad arguments: one line on stderr, exit status 2."""
        out, err, code = await cdr(
            "--store", "sqlite:///x.db", "export", "--format", "xml"
        )
        self.assertEqual((out, code), ("", 2))
        self.assertIn("--format must be csv or jsonl", err)
        self.assertEqual(len(err.splitlines()), 1)

    async def test_whileWriting(self) -> None:
        """
        While another connection holds a write transaction open (the server
        committing), callback-cdr still reads, and sees only committed rows.
        """
        await self.fill()
        writer = sqlite3.connect(parseURL(self.url).path, isolation_level=None)
        self.addCleanup(writer.close)
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE callbacks SET state = 'joined' WHERE id = 'k3'")
        out, err, code = await cdr("--store", self.url, "list")
        writer.execute("ROLLBACK")
        self.assertEqual((err, code), ("", 0))
        self.assertEqual(out.splitlines()[3].split()[5], "accepted")

    async def test_config(self) -> None:
        """
        --config reads [store] url; a relative SQLite path is relative to
        the configuration file's directory.
        """
        await self.fill()
        directory = os.path.dirname(parseURL(self.url).path)
        config = os.path.join(directory, "callback.ini")
        with open(config, "w") as f:
            f.write("[store]\nurl = sqlite:///callbacks.db\n")
        out, err, code = await cdr("--config", config, "show", "k2")
        self.assertEqual((err, code), ("", 0))
        self.assertIn("peer: as2\n", out)

    async def test_missingStore(self) -> None:
        """A store file that does not exist is reported, never created."""
        path = os.path.abspath(self.mktemp())
        out, err, code = await cdr("--store", "sqlite:///" + path, "list")
        self.assertEqual((out, code), ("", 1))
        self.assertIn(f"store sqlite:///{path}: cannot open", err)
        self.assertFalse(os.path.exists(path))


class PostgreSQLCDRTests(CDRTestsMixin, TestCase):
    """callback-cdr on a PostgreSQL store."""

    password = pgserver.PASSWORD
    _count = 0

    def newURL(self) -> str:
        PostgreSQLCDRTests._count += 1
        return pgserver.server().createDatabase(f"cdr_{self._count}")

    async def test_passwordNotShown(self) -> None:
        """A failing connection is reported without the URL's password."""
        url = (
            pgserver.server()
            .createDatabase("cdr_refused")
            .replace(pgserver.PASSWORD, "Wrong-Secret")
        )
        out, err, code = await cdr("--store", url, "list")
        self.assertEqual((out, code), ("", 1))
        self.assertIn("postgresql://callback:***@127.0.0.1", err)
        self.assertNotIn("Wrong-Secret", err)
