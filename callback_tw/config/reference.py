# -*- test-case-name: tests.test_config_keys -*-
"""
The configuration reference, C{docs/configuration.md}, written from the key
table so that it cannot say something the reader does not do.

Regenerate it after changing the table::

    python3 -m callback_tw.config --markdown > docs/configuration.md
"""

from __future__ import annotations

from callback_tw.config.keys import NO_DEFAULT, SECTIONS, Key, Section, keysOf

__all__ = ["markdown"]

_INTRO = """\
# Configuration reference

<!-- Generated from callback_tw/config/keys.py by
     `python3 -m callback_tw.config --markdown > docs/configuration.md`;
     edit the table, not this file (a test compares them). -->

The server reads one INI file at start-up (`twistd callback --config FILE`;
without it `/etc/callback_tw/callback.ini`, else `etc/callback.ini`, the
commented sample of a checkout, which works as it is).  Keys are written
`key = value`; comments start with `;` or `#` (after a space when they follow
a value); key names are case-insensitive.  A key
left out takes its default.  Relative paths are relative to the directory of
the configuration file.  Host names are resolved once, at start-up, to IPv4
addresses.

An unknown section or key is an error, and so is any bad value: start-up stops
with one line that names the file, the section and the key, for example

    etc/callback.ini: [callback] max_call: unknown key (did you mean max_calls?)
"""


def _text(text: str) -> str:
    """
    C{text} as one Markdown line in which C{<user>} is not taken for an
    HTML tag.
    """
    return " ".join(text.split()).replace("<", "\\<")


def _cell(text: str) -> str:
    """C{text} safe in a table cell: one line, no column break."""
    return _text(text).replace("|", "\\|")


def _default(key: Key) -> str:
    if key.default is NO_DEFAULT:
        return "none"
    text = key.defaultText
    return f"`{text}`" if text else "(empty)"


def _section(section: Section) -> str:
    lines = [f"## [{section.name}]", "", _text(section.help), ""]
    if section.entries is not None:
        lines.append(f"Each entry: `{section.entries}`.")
        return "\n".join(lines)
    lines.append("| key | default | value | meaning |")
    lines.append("|---|---|---|---|")
    for key in keysOf(section.name):
        lines.append(
            f"| `{key.name}` | {_default(key)} | {_cell(key.parser.rule)}"
            f" | {_cell(key.help)} |"
        )
    return "\n".join(lines)


def markdown() -> str:
    """
    The reference: for each section, what it is for, then one row per key
    (key, default, allowed values, meaning), or the form of its entries.
    """
    return "\n\n".join([_INTRO.rstrip()] + [_section(s) for s in SECTIONS]) + "\n"
