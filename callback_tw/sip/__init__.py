"""
The SIP side: sippy on the Twisted reactor.

sippy binds its event dispatcher when its modules are first imported, so
the adapter (L{callback_tw.sip.adapter}) must be installed before any of
them is. Importing it here, in the package, makes that true for every
module under C{callback_tw.sip}, whatever order an import sorter puts their
imports in.
"""

from callback_tw.sip import adapter  # noqa: F401  (must run before any sippy import)
