"""
The store's exceptions.
"""

__all__ = ["StoreError", "StoreUnavailable"]


class StoreError(Exception):
    """
    The store cannot be used as asked: a bad URL, a database that cannot be
    opened or migrated, a schema newer than this code.  The message is one
    line and never holds a password.
    """


class StoreUnavailable(StoreError):
    """
    A write could not be committed now (the database is down or the bounded
    queue of writes waiting for it is full).  The caller refuses new work.
    """
