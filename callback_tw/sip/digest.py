# -*- test-case-name: tests.test_sip_registrar,tests.test_sip_security_registrar -*-
"""
HTTP digest as a SIP registrar checks it (RFC 2617, MD5, qop absent or
C{auth}): the credentials' parameters, the expected response, and the
comparisons that must not leak through their timing or accept a digest
made for another URI.
"""

from __future__ import annotations

import hmac
import re
from hashlib import md5
from typing import Any

from sippy.SipURL import SipURL

__all__ = ["BadRequest", "digestResponse", "parseDigest", "sameText", "sameUri"]

_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*)\s*(?:,|$)')


class BadRequest(ValueError):
    """A REGISTER this registrar cannot make sense of: 400 with this reason."""


def parseDigest(value: str) -> dict[str, str]:
    """
    The parameters of a C{Digest} credentials header, names lower-case and
    quotes removed.

    @raise BadRequest: when it is not Digest or not name=value pairs.
    """
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise BadRequest(f"unsupported authorization scheme {scheme!r}")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if match is None or match.end() == pos:
            raise BadRequest("malformed Digest credentials")
        name, raw = match.group(1).lower(), match.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[name] = raw
        pos = match.end()
    return params


def digestResponse(
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None,
    nc: str | None,
    cnonce: str | None,
) -> str:
    """RFC 2617 3.2.2.1 request-digest, MD5, qop absent or C{auth}."""

    def h(text: str) -> str:
        return md5(text.encode()).hexdigest()

    ha1 = h(f"{username}:{realm}:{password}")
    ha2 = h(f"{method}:{uri}")
    if qop:
        return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return h(f"{ha1}:{nonce}:{ha2}")


def sameText(a: str, b: str) -> bool:
    """Constant-time comparison that takes any text a phone sends."""
    return hmac.compare_digest(
        a.encode("utf-8", "replace"), b.encode("utf-8", "replace")
    )


def sameUri(uri: str, ruri: Any) -> bool:
    """
    Whether the digest C{uri} names the Request-URI C{ruri} (a sippy
    C{SipURL}): as written, or as the same scheme, user, host (in any case)
    and port (a port written in one and not the other differs, RFC 3261
    19.1.4).
    """
    if uri == str(ruri):
        return True
    try:
        parsed = SipURL(uri)
    except Exception:
        return False
    return (
        parsed.scheme == ruri.scheme
        and parsed.username == ruri.username
        and str(parsed.host).lower() == str(ruri.host).lower()
        and parsed.port == ruri.port
    )
