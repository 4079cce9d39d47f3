# -*- test-case-name: tests.test_sip_registrar -*-
"""
Response headers the registrar writes as given, which sippy 2.5.0 has no
class for.
"""

from __future__ import annotations

from sippy.SipGenericHF import SipGenericHF

__all__ = ["NamedHeader"]


class NamedHeader(SipGenericHF):
    """
    A response header written as given, under its canonical name
    (C{WWW-Authenticate}, C{Min-Expires}, a Contact with its expiry).
    Checked against sippy 2.5.0 (C{SipGenericHF.getCanName}, C{hf_names}).
    """

    def __init__(self, name: str, body: str) -> None:
        super().__init__(body)
        self._canName = name
        self.hf_names = (name.lower(),)
        self.parsed = True

    def getCanName(self, name: str, compact: bool = False) -> str:
        return self._canName
