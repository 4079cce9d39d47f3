"""
callback_tw's trial tests.

Some test modules import sippy directly; the SIP adapter must be installed
before sippy is first imported (see L{callback_tw.sip}), so the package does
it first.
"""

import callback_tw.sip  # noqa: F401
