# -*- test-case-name: tests.test_store_url -*-
"""
Store URLs: which database, and how to name it without its password.

Two schemes are understood: C{sqlite:///path} (a relative path is relative to
a base directory the caller gives, the configuration file's directory) and
C{postgresql://user:password@host:port/dbname}.  Every message that names a
store (logs, errors, the CDR tool) uses L{redact}, so a password written in a
URL never leaves the process.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from callback_tw.store.errors import StoreError

__all__ = ["StoreURL", "parseURL", "redact"]

# user:password@ in any URL-looking text (also inside an error message that a
# driver built from the connection string).
_CREDENTIALS = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@\s]*@"
)
# password=... in a libpq key/value connection string or a driver message.
_KEYWORD = re.compile(r"(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)")


def redact(text: str) -> str:
    """
    Return C{text} with every password it holds replaced by C{***}: the
    password of a C{scheme://user:password@} URL and a libpq
    C{password=...} keyword.

    @param text: a URL, a connection string or a message that may quote one.
    """
    text = _CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", text)
    return _KEYWORD.sub(r"\1***", text)


@dataclass(frozen=True)
class StoreURL:
    """
    A parsed store URL.

    @ivar dialect: C{"sqlite"} or C{"postgresql"}.
    @ivar path: the SQLite file, absolute (sqlite only).
    @ivar conninfo: keyword arguments for C{psycopg.connect} (postgresql only).
    @ivar safe: the URL with its password replaced, for messages.
    """

    dialect: str
    safe: str
    path: str | None = None
    conninfo: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        return self.safe


def parseURL(url: str, baseDir: str | None = None) -> StoreURL:
    """
    Parse a store URL.

    @param url: C{sqlite:///path} or C{postgresql://user:password@host:port/db}.
    @param baseDir: what a relative SQLite path is relative to (the
        configuration file's directory); the working directory if L{None}.
    @raise StoreError: for anything else; the message names the URL without
        its password.
    """
    safe = redact(url)
    if url.startswith("sqlite:///"):
        path = unquote(url[len("sqlite:///") :])
        if not path:
            raise StoreError(f"store {safe}: no database file named")
        path = os.path.abspath(os.path.join(baseDir or os.getcwd(), path))
        return StoreURL("sqlite", f"sqlite:///{path}", path=path)
    parts = urlsplit(url)
    if parts.scheme in ("postgresql", "postgres"):
        dbname = unquote(parts.path.lstrip("/"))
        if not dbname or "/" in dbname:
            raise StoreError(f"store {safe}: the URL must name one database")
        try:
            port = parts.port
        except ValueError:
            raise StoreError(f"store {safe}: bad port") from None
        info = {"dbname": dbname}
        if parts.hostname:
            info["host"] = parts.hostname
        if port is not None:
            info["port"] = str(port)
        if parts.username:
            info["user"] = unquote(parts.username)
        if parts.password is not None:
            info["password"] = unquote(parts.password)
        return StoreURL("postgresql", safe, conninfo=tuple(sorted(info.items())))
    raise StoreError(
        f"store {safe}: unsupported URL (use sqlite:///path or"
        " postgresql://user:password@host:port/dbname)"
    )
