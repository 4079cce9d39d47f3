"""
Tests for L{callback_tw.store.url}: parsing store URLs and keeping their
passwords out of every message.
"""

import os

from twisted.trial.unittest import SynchronousTestCase

from callback_tw.store import StoreError, parseURL, redact


class RedactTests(SynchronousTestCase):
    def test_urlPassword(self) -> None:
        """The password of a user:password@ URL is replaced, the rest kept."""
        self.assertEqual(
            redact("postgresql://cb:s3cret@db.example:5432/callback"),
            "postgresql://cb:***@db.example:5432/callback",
        )

    def test_insideAMessage(self) -> None:
        """A URL quoted inside a longer message is redacted too."""
        self.assertEqual(
            redact("cannot open postgresql://cb:pw@h/db: refused"),
            "cannot open postgresql://cb:***@h/db: refused",
        )

    def test_keyword(self) -> None:
        """A libpq password= keyword (quoted or not) is redacted."""
        self.assertEqual(
            redact("host=h password=s3cret dbname=x"), "host=h password=*** dbname=x"
        )
        self.assertEqual(redact("password = 'a b\\'c' x"), "password = *** x")

    def test_noPassword(self) -> None:
        """Text without a password is unchanged."""
        for text in ("sqlite:////var/lib/cb.db", "postgresql://cb@h/db", "user@host"):
            self.assertEqual(redact(text), text)


class ParseURLTests(SynchronousTestCase):
    def test_sqliteAbsolute(self) -> None:
        """sqlite:////abs/path names that file."""
        url = parseURL("sqlite:////var/lib/callback/callbacks.db", "/etc")
        self.assertEqual(
            (url.dialect, url.path), ("sqlite", "/var/lib/callback/callbacks.db")
        )
        self.assertEqual(url.safe, "sqlite:////var/lib/callback/callbacks.db")

    def test_sqliteRelative(self) -> None:
        """A relative SQLite path is relative to the base directory."""
        self.assertEqual(
            parseURL("sqlite:///callbacks.db", "/etc/callback").path,
            "/etc/callback/callbacks.db",
        )
        self.assertEqual(
            parseURL("sqlite:///data/../cb.db").path,
            os.path.join(os.getcwd(), "cb.db"),
        )

    def test_postgresql(self) -> None:
        """
        A PostgreSQL URL becomes psycopg's keywords (percent-escapes
        decoded); its safe form hides the password.
        """
        url = parseURL("postgresql://cb:p%40ss%3Aw@10.0.0.5:6543/callback")
        self.assertEqual(url.dialect, "postgresql")
        self.assertEqual(
            dict(url.conninfo),
            {
                "host": "10.0.0.5",
                "port": "6543",
                "user": "cb",
                "password": "p@ss:w",
                "dbname": "callback",
            },
        )
        self.assertEqual(str(url), "postgresql://cb:***@10.0.0.5:6543/callback")

    def test_errorsNameURLWithoutPassword(self) -> None:
        """Bad URLs raise one-line StoreErrors that never hold the password."""
        for bad in (
            "mysql://cb:s3cret@h/db",
            "postgresql://cb:s3cret@h:99999/db",
            "postgresql://cb:s3cret@h/",
            "sqlite:///",
        ):
            error = self.assertRaises(StoreError, parseURL, bad)
            self.assertNotIn("s3cret", str(error))
            self.assertIn("store ", str(error))
            self.assertNotIn("\n", str(error))
