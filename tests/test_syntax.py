"""
Tests for L{callback_tw.syntax}: the one SIP-user rule that the configuration
and the IIF codec share.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from callback_tw.iif.message import MessageError, parseMessage
from callback_tw.syntax import SIP_USER_CHARACTERS, isSipUser


class SipUserTests(SynchronousTestCase):
    """
    L{isSipUser} accepts what can go in a SIP URI's user part unescaped.
    """

    def test_accepted(self) -> None:
        """
        Digits, ASCII letters and C{+ * # . - _}, 1 to 31 characters.
        """
        for good in ("1", "+Ab1*#.-_", "1" * 31):
            self.assertTrue(isSipUser(good), good)

    def test_refused(self) -> None:
        """
        Empty, too long, spaces, URI delimiters, non-ASCII letters and a
        trailing line end are refused.
        """
        for bad in ("", "1" * 32, "10 00", "a@b", "x;y", "caf\u00e9", "100\n"):
            self.assertFalse(isSipUser(bad), repr(bad))

    def test_maxLength(self) -> None:
        """
        A longer limit can be asked for (the external line's user name).
        """
        self.assertTrue(isSipUser("u" * 64, 64))
        self.assertFalse(isSipUser("u" * 65, 64))

    def test_charactersNamed(self) -> None:
        """
        The description given to operators lists every extra character.
        """
        self.assertEqual(SIP_USER_CHARACTERS, "digits, letters and + * # . - _")

    def test_sharedWithIIF(self) -> None:
        """
        The IIF codec applies the same rule to user1 and user2.
        """
        for user in ("+Ab1*#.-_", "1" * 31):
            request = parseMessage(
                b"REQUEST: id=1;user1=" + user.encode() + b";user2=2;duration=0;", 60
            )
            self.assertEqual(request.user1, user)
        for user in ("a@b", "1" * 32):
            self.assertRaises(
                MessageError,
                parseMessage,
                b"REQUEST: id=1;user1=2;user2=" + user.encode() + b";duration=0;",
                60,
            )
