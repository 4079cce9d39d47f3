"""
The twistd plugin: C{twistd callback} runs the SIP callback server.

twistd imports every plugin module on every run, so this file only names the
module that does the work (L{callback_tw.tap}); it is imported when the
"callback" subcommand is used.  There is deliberately no C{__init__.py} in
C{twisted/} or C{twisted/plugins/}: this directory is a drop-in for Twisted's
own C{twisted.plugins} package.
"""

from twisted.application.service import ServiceMaker

callback = ServiceMaker(
    "callback_tw",
    "callback_tw.tap",
    "SIP callback server: IIF REQUEST in, user1 and user2 called and joined,"
    " RESPONSE with the real duration out",
    "callback",
)
