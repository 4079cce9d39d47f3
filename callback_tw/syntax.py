# -*- test-case-name: tests.test_syntax -*-
"""
Syntax rules that the configuration file and the IIF codec must agree on.

A number written in the configuration (C{default_caller}, a local user, the
external line's number) and a number an application server sends
(C{user1}/C{user2}) end up in the same place, the user part of a SIP URI, so
they obey one rule, defined here once.  This module imports nothing of ours:
it sits below both L{callback_tw.config} and L{callback_tw.iif.message}.
"""

from __future__ import annotations

import re

__all__ = ["SIP_USER_CHARACTERS", "SIP_USER_MAX_LENGTH", "isSipUser"]

#: The characters of a SIP user, as an operator or an AS is told them: a
#: subset of RFC 3261 "unreserved" plus the dial characters C{* #}, none of
#: which needs escaping in a URI or can break a SIP header.
SIP_USER_CHARACTERS = "digits, letters and + * # . - _"

#: The longest number accepted: what the spec allows for user1/user2.
SIP_USER_MAX_LENGTH = 31

_SIP_USER = re.compile(r"[0-9A-Za-z+*#.\-_]+")


def isSipUser(text: str, maxLength: int = SIP_USER_MAX_LENGTH) -> bool:
    """
    Whether C{text} may be the user part of a SIP URI we build.

    @param text: the candidate, as written (no stripping).
    @param maxLength: the most characters allowed; the external line's
        digest user name may be longer than a number.
    @return: C{True} when C{text} has 1 to C{maxLength} characters, all from
        L{SIP_USER_CHARACTERS}.
    """
    return 0 < len(text) <= maxLength and _SIP_USER.fullmatch(text) is not None
