# -*- test-case-name: tests.test_config -*-
"""
The configuration file: an INI file read once at start-up into frozen
dataclasses.

Each key is declared once, in L{callback_tw.config.keys} (section, name,
default, rule, help); reading, the dataclasses' defaults, the sample file's
check and the reference C{docs/configuration.md} all derive from it.  The
modules: L{values} (the rule of one value), L{keys} (the table), L{model}
(the dataclasses and L{ConfigError}), L{reader} (the file, the free-form
sections, the rules across keys), L{reference} (the Markdown reference,
C{python3 -m callback_tw.config --markdown}).

This package imports nothing of ours but four pure rules it shares with the
layers that apply them, so each has one definition: L{callback_tw.syntax}
(the SIP-user rule of the IIF codec), L{callback_tw.iif.signing.loadKey}
(reading a peer's key), L{callback_tw.policy.parsePatterns} (allow/deny)
and L{callback_tw.store.url.parseURL} (store URLs).
"""

from callback_tw.config.model import (
    CallbackConfig,
    Config,
    ConfigError,
    ExternalLineConfig,
    HttpConfig,
    LogConfig,
    MediaConfig,
    PeerConfig,
    PeerServer,
    SipConfig,
    StoreConfig,
)
from callback_tw.config.reader import loadConfig
from callback_tw.config.values import WILDCARD_ADDRESSES

__all__ = [
    "CallbackConfig",
    "Config",
    "ConfigError",
    "ExternalLineConfig",
    "HttpConfig",
    "LogConfig",
    "MediaConfig",
    "PeerConfig",
    "PeerServer",
    "SipConfig",
    "StoreConfig",
    "WILDCARD_ADDRESSES",
    "loadConfig",
]
