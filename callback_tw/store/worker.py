# -*- test-case-name: tests.test_store -*-
"""
A database connection that lives on its own thread.

The reactor never waits on the database: every call is handed to a thread
pool of exactly one thread that owns one connection (SQLite connections are
best used from one thread; one writer connection is also what a group commit
needs).  This does what C{twisted.enterprise.adbapi.ConnectionPool(cp_min=1,
cp_max=1)} would, with two differences the store relies on: a connection is
dropped and reopened only after an error that says the database is
unreachable (L{callback_tw.store.sql.isTransient}), and a failed rollback is
not logged as an unhandled error, since the store reports outages itself in
one rate-limited line.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from callback_tw.store.errors import StoreError
from callback_tw.store.sql import Connection, connect, isTransient
from callback_tw.store.url import StoreURL

__all__ = ["DatabaseThread"]


def _daemonThread(*args: Any, **kwargs: Any) -> threading.Thread:
    """
    The pool's thread is a daemon: a store that was never closed (a crash in
    start-up, a forgotten close) must not keep the process from exiting
    (Python waits for every other thread at exit, and Twisted's SIGTERM
    handler is gone by then).  Losing its queued writes is a crash like any
    other, which recovery handles.
    """
    return threading.Thread(*args, daemon=True, **kwargs)


class DatabaseThread:
    """
    One thread, one lazily (re)opened connection.

    @param url: the store to connect to.
    @param name: the thread's name (shows in C{py-spy} and thread dumps).
    @param timeout: see L{callback_tw.store.sql.connect}.
    """

    def __init__(
        self, url: StoreURL, name: str, reactor: Any, timeout: float = 5.0
    ) -> None:
        self._url = url
        self._reactor = reactor
        self._timeout = timeout
        self._connection: Connection | None = None
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name=name)
        self._pool.threadFactory = _daemonThread
        self._pool.start()

    def run(self, function: Callable[..., Any], *args: Any) -> Deferred:
        """
        Call C{function(connection, *args)} on the thread; the Deferred fires
        with its result or fails with its exception.  A connection that
        failed to open fails with L{StoreError} and is tried again next call.
        """
        return deferToThreadPool(
            self._reactor, self._pool, self._call, False, function, *args
        )

    def read(self, function: Callable[..., Any], *args: Any) -> Deferred:
        """
        Like L{run}, for a function that only reads: if a connection opened
        earlier turns out to be dead (the server restarted since), it is
        reopened and C{function} runs once more, so a read after an outage
        does not fail for nothing.
        """
        return deferToThreadPool(
            self._reactor, self._pool, self._call, True, function, *args
        )

    def _call(self, again: bool, function: Callable[..., Any], *args: Any) -> Any:
        fresh = self._connection is None
        if fresh:
            self._connection = connect(self._url, self._timeout)
        try:
            return function(self._connection, *args)
        except BaseException as e:
            if not isTransient(e):
                raise
            self._close()
            if fresh or not again:
                raise
        return self._call(False, function, *args)

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def stop(self) -> Deferred:
        """
        Close the connection on its thread, then end the thread.  Call when
        nothing else is running on it (the store waits for its last flush).
        """
        d = deferToThreadPool(self._reactor, self._pool, self._close)

        def stopped(result: Any) -> Any:
            self._pool.stop()
            return result

        return d.addBoth(stopped)


def transient(error: BaseException) -> bool:
    """
    True for an error that a later retry may not meet: the database was
    unreachable (including failing to connect at all).
    """
    return isinstance(error, StoreError) or isTransient(error)
