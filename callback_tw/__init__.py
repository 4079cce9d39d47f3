"""
callback_tw: a SIP callback server (click-to-call, third-party call control)
on Twisted and sippy.

An application server sends one UDP datagram (the inner interface, IIF); the
server calls user1, then user2, joins them, enforces the duration and reports
the real duration back.
"""

__version__ = "0.1.0"
