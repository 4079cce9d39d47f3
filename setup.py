"""
Packaging for callback_tw.

Two things here are deliberate (docs/decisions.md, D60, says why in full):

- C{twisted.plugins} is listed in C{packages} by hand: C{twisted/} and
  C{twisted/plugins/} have no C{__init__.py} (they are drop-ins for Twisted's
  own package), so automatic discovery would never find the plugin, and a
  wheel must never carry a C{twisted/plugins/__init__.py} of its own.
- C{package_dir={"": "."}} (a flat layout said out loud) makes
  C{pip install -e .} write a static C{.pth} that puts the checkout on
  C{sys.path}.  Without it, setuptools >= 64 installs an import hook instead,
  which twistd's plugin scan (it walks C{twisted.plugins.__path__}) cannot see.

After any install, regenerate Twisted's plugin cache (C{dropin.cache}) so that
no user meets a stale or missing plugin: C{scripts/install} does it.
"""

import os
import re

from setuptools import setup

_HERE = os.path.dirname(os.path.abspath(__file__))


def _version() -> str:
    with open(os.path.join(_HERE, "callback_tw", "__init__.py"), encoding="utf-8") as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


def _packages() -> list[str]:
    """
    callback_tw and every subpackage, found on disk (not tests, bench, etc).
    """
    found = []
    for root, dirs, files in os.walk(os.path.join(_HERE, "callback_tw")):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        if "__init__.py" in files:
            found.append(os.path.relpath(root, _HERE).replace(os.sep, "."))
    return found


setup(
    name="callback_tw",
    version=_version(),
    description=(
        "SIP callback server (third-party call control) on Twisted and sippy:"
        " an application server asks over UDP, user1 and user2 are called and"
        " joined, the real duration is reported back"
    ),
    license="BSD-2-Clause",
    python_requires=">=3.11",
    install_requires=[
        "Twisted>=24.7,<27",
        "sippy>=2.5,<2.6",
        "zope.interface>=6",
        # sippy 2.5 requires rtpsynth>=1.3.0; announcements use it directly.
        "rtpsynth>=1.3,<2",
        # The durable store on PostgreSQL (SQLite needs nothing extra); the
        # binary wheel carries libpq, so no compiler or libpq-dev is needed.
        "psycopg[binary]>=3.1,<4",
        # /metrics ([http]): the exposition format is prometheus_client's own.
        "prometheus_client>=0.20,<1",
    ],
    extras_require={
        # The tests need Hypothesis, plus SIPp, Kamailio and PostgreSQL's
        # server binaries (Debian packages sip-tester, kamailio, postgresql;
        # scripts/test installs them).
        "test": ["hypothesis>=6.100,<7"],
        "dev": ["black", "isort", "ruff"],
    },
    entry_points={
        "console_scripts": [
            "callback-client = callback_tw.cli.client:main",
            "callback-cdr = callback_tw.cli.cdr:main",
        ],
    },
    package_dir={"": "."},
    packages=_packages() + ["twisted.plugins"],
    # The default prompts (the [media] prompts folder when none is set).
    package_data={
        "callback_tw.media": [
            "prompts/*.wav",
            "prompts/digits/*.wav",
            "prompts/README.txt",
        ]
    },
    include_package_data=False,
    zip_safe=False,
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
        "Topic :: Communications :: Internet Phone",
    ],
)
