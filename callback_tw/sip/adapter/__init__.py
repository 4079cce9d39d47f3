# -*- test-case-name: tests.test_sip_adapter -*-
"""
The only code that stands in for, subclasses or patches sippy.

  - L{dispatcher}: sippy's event dispatcher (C{ED2}) on the Twisted reactor;
    installed when this package is imported, before any sippy module.
  - L{errors}: sippy's error printer, routed to C{twisted.logger}.
  - L{trace}: sippy's SIP message trace, on C{twisted.logger}.
  - L{transport}: sippy's UDP server on a Twisted UDP port.
  - L{transactions}: sippy's transaction manager, on that transport, fixed.
  - L{ua}: sippy's UA and INVITE event, fixed for outgoing legs, and the
    dialog's state read from the UA.
  - L{release}: a BYE or CANCEL for a dialog this process never saw (after
    a restart), through the transaction manager.
  - L{headers}: response headers sippy has no class for.
  - L{patches}: module-level fixes (parse-error responses, escaping of the
    user part of URIs).

The rest of C{callback_tw.sip} uses sippy's public objects and what this
package exports.
"""

# The dispatcher must replace sippy's before any sippy module is imported:
# keep it first, and keep an import sorter from moving anything above it.
from callback_tw.sip.adapter.dispatcher import ED2, useReactor  # isort: skip

# isort: split

from callback_tw.sip.adapter.errors import routeSippyErrors
from callback_tw.sip.adapter.headers import NamedHeader
from callback_tw.sip.adapter.parking import ParkedDialog, park
from callback_tw.sip.adapter.patches import installPatches
from callback_tw.sip.adapter.transactions import (
    ReactorTransactionManager,
    startTransactionManager,
)
from callback_tw.sip.adapter.ua import DialogUA, Invite, ourContact

installPatches()

__all__ = [
    "ED2",
    "DialogUA",
    "Invite",
    "NamedHeader",
    "ParkedDialog",
    "ReactorTransactionManager",
    "ourContact",
    "park",
    "routeSippyErrors",
    "startTransactionManager",
    "useReactor",
]
