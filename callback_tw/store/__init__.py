"""
The durable callback store (SQLite or PostgreSQL): every accepted callback,
its legs' dialogs and its call record.  See docs/store.md.
"""

from callback_tw.store.errors import StoreError, StoreUnavailable
from callback_tw.store.records import Accepted, CallbackRecord, LegDialog, NewCallback
from callback_tw.store.retention import PurgeJob
from callback_tw.store.store import Store, open
from callback_tw.store.url import parseURL, redact

__all__ = [
    "Accepted",
    "CallbackRecord",
    "LegDialog",
    "NewCallback",
    "PurgeJob",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "open",
    "parseURL",
    "redact",
]
