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

This package imports nothing of ours but L{callback_tw.syntax}, the SIP-user
rule it shares with the IIF codec.
"""

from callback_tw.config.model import (
    CallbackConfig,
    Config,
    ConfigError,
    ExternalLineConfig,
    MediaConfig,
    PeerServer,
    SipConfig,
)
from callback_tw.config.reader import loadConfig
from callback_tw.config.values import WILDCARD_ADDRESSES

__all__ = [
    "CallbackConfig",
    "Config",
    "ConfigError",
    "ExternalLineConfig",
    "MediaConfig",
    "PeerServer",
    "SipConfig",
    "WILDCARD_ADDRESSES",
    "loadConfig",
]
