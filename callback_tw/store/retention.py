# -*- test-case-name: tests.test_store -*-
"""
Retention: the daily job that deletes old call records.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

__all__ = ["PurgeJob"]


class PurgeJob:
    """
    A callable for C{TimerService(86400, PurgeJob(store, days))}: deletes
    the callbacks that ended more than C{retentionDays} ago, on the store's
    writer thread.

    A failed purge is logged and swallowed: a failure returned to
    C{TimerService} would stop its loop, and the job should simply run again
    the next day.

    @param store: a L{callback_tw.store.Store}.
    @param retentionDays: how long records are kept.
    """

    _log = Logger()

    def __init__(self, store: Any, retentionDays: float) -> None:
        self._store = store
        self.retentionDays = retentionDays

    def __call__(self) -> Deferred:
        """Purge once; the Deferred fires with the count (None on failure)."""
        d = self._store.purge(self.retentionDays)
        d.addCallbacks(self._purged, self._failed)
        return d

    def _purged(self, count: int) -> int:
        self._log.info(
            "store {url}: purged {count} callbacks older than {days} days",
            url=self._store.url,
            count=count,
            days=self.retentionDays,
        )
        return count

    def _failed(self, failure: Failure) -> None:
        self._log.error(
            "store {url}: purge failed ({error}); trying again tomorrow",
            url=self._store.url,
            error=failure.getErrorMessage(),
        )
        return None
