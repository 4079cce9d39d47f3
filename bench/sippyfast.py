"""
A measurement aid (not used by the server): makes sippy's C{'my' in dir(x)}
tests cheap, to measure in C{bench_peers.py --variant fast:prelude=bench.sippyfast}
what the adapter would save by doing the same.

sippy 2.5.0 asks C{'my' in dir(value)} to tell its "my address / my port /
my transport" placeholders from literal values, in C{SipURL.localStr},
C{SipURL.getParams}, C{SipVia.localStr}, C{SipConf.port_needed} and
C{SdpOrigin.localStr}: every URL and Via written costs several C{dir()}
calls (about 11 us each, a sorted list of all attributes).  Those modules use
C{dir} for nothing else, so a module-level C{dir} that answers the one
question (C{("my",)} when the value has a C{my} attribute, else C{()})
gives the same bytes on the wire.
"""

from __future__ import annotations

from typing import Any

import sippy.SdpOrigin
import sippy.SipConf
import sippy.SipURL
import sippy.SipVia


def _myDir(value: Any) -> tuple[str, ...]:
    return ("my",) if hasattr(value, "my") else ()


def install() -> None:
    for module in (sippy.SipURL, sippy.SipVia, sippy.SipConf, sippy.SdpOrigin):
        module.dir = _myDir  # type: ignore[attr-defined]


install()
