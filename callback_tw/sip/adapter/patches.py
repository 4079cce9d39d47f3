# -*- test-case-name: tests.test_sip_security -*-
"""
Module-level fixes to sippy 2.5.0, applied once when the adapter is
imported:

  - C{SipParseError.getResponse} takes the request as a required argument,
    but C{SipTransactionManager.handleIncoming} calls it without one for a
    request it could not parse: a TypeError instead of the 400 Bad Request
    the parser had already prepared. The request becomes optional.
  - C{SipURL} writes the user part with C{#} left as is (its "safe"
    characters add C{#} to RFC 3261's user-unreserved set), so a number
    such as C{*21*0049301234#} would end the URI at C{#} for the far end.
    C{#} is escaped (C{%23}) like every other character outside the RFC's
    set.
"""

from __future__ import annotations

from typing import Any

import sippy.SipURL as _sipURL
from sippy.Exceptions.SipParseError import SipParseError

__all__ = ["USER_SAFE", "installPatches"]

#: RFC 3261 25.1: user-unreserved and mark, the characters a user part may
#: carry unescaped besides letters and digits.
USER_SAFE = "&=+$,;?/" + "-_.!~*'()"

_originalGetResponse = SipParseError.getResponse


def _getResponse(self: SipParseError, req: Any = None) -> Any:
    """The prepared response, or one built for C{req} when given."""
    if self.sip_response is not None:
        return self.sip_response
    if req is None:
        return None
    return _originalGetResponse(self, req)


def installPatches() -> None:
    """Apply the fixes (idempotent)."""
    SipParseError.getResponse = _getResponse  # type: ignore[method-assign]
    _sipURL.USERNAME_SAFE = USER_SAFE
