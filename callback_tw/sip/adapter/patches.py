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
  - C{SipURL}, C{SipVia}, C{SipConf}, C{SdpOrigin} and C{SipWWWAuthenticate}
    tell their "my address / my port / my transport" placeholders from
    literal values with C{'my' in dir(value)}: a sorted list of every
    attribute, several times per URL and Via written, 10-16 % of the
    server's CPU at 200 callbacks/s (docs/performance.md). Those modules use
    C{dir} for nothing else, so a module-level C{dir} that answers only that
    question gives the same bytes on the wire for a fraction of the cost.
  - C{MyAddress.__str__} (the text of sippy's "my address" placeholder,
    where no local address is given, e.g. C{str()} of a Contact) asks the
    resolver for the host's address every time: C{gethostbyname(
    gethostname())}, about 3 % of the server's CPU at 200 callbacks/s
    (docs/performance.md). The answer is kept for C{HOST_ADDRESS_TTL}
    seconds: the same text, looked up again now and then in case the host's
    address changes.
"""

from __future__ import annotations

from time import monotonic
from typing import Any

import sippy.SdpOrigin as _sdpOrigin
import sippy.SipConf as _sipConf
import sippy.SipURL as _sipURL
import sippy.SipVia as _sipVia
import sippy.SipWWWAuthenticate as _sipWWWAuthenticate
from sippy.Exceptions.SipParseError import SipParseError

__all__ = ["USER_SAFE", "installPatches", "myDir"]

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


#: The sippy modules whose only use of C{dir} is C{'my' in dir(value)}
#: (checked against sippy 2.5.0).
_MY_DIR_MODULES = (_sipURL, _sipVia, _sipConf, _sdpOrigin, _sipWWWAuthenticate)


def myDir(value: Any) -> tuple[str, ...]:
    """
    C{dir} as those modules use it: C{("my",)} for sippy's C{MyAddress},
    C{MyPort}, C{MyTransport} placeholders (their class attribute C{my}),
    C{()} for anything else.
    """
    return ("my",) if hasattr(value, "my") else ()


#: seconds for which sippy's "my address" text is kept.
HOST_ADDRESS_TTL = 30.0

_originalMyAddressStr = _sipConf.MyAddress.__str__
#: (until when, text) of the last host address lookup.
_hostAddress: tuple[float, str] = (float("-inf"), "")


def _myAddressStr(self: Any) -> str:
    """C{MyAddress.__str__}, looked up at most every L{HOST_ADDRESS_TTL} s."""
    global _hostAddress
    now = monotonic()
    until, text = _hostAddress
    if now >= until:
        text = _originalMyAddressStr(self)
        _hostAddress = (now + HOST_ADDRESS_TTL, text)
    return text


def installPatches() -> None:
    """Apply the fixes (idempotent)."""
    SipParseError.getResponse = _getResponse  # type: ignore[method-assign]
    _sipConf.MyAddress.__str__ = _myAddressStr  # type: ignore[method-assign]
    _sipURL.USERNAME_SAFE = USER_SAFE
    for module in _MY_DIR_MODULES:
        module.dir = myDir  # type: ignore[attr-defined]
