"""
C{python3 -m callback_tw.config --markdown}: print the configuration
reference (L{callback_tw.config.reference}), the source of
C{docs/configuration.md}.
"""

from __future__ import annotations

import sys

from callback_tw.config.reference import markdown

_USAGE = "usage: python3 -m callback_tw.config --markdown > docs/configuration.md"


def main(argv: list[str]) -> int:
    """
    Print the reference for C{--markdown}; anything else is a usage error.

    @return: the exit status.
    """
    if argv != ["--markdown"]:
        print(_USAGE, file=sys.stderr)
        return 2
    sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
