"""
Tests for L{callback_tw.policy}: per-peer rules, token buckets and ownership (the
rate-limited log: tests.test_ratelimit).
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from callback_tw.iif.message import Request
from callback_tw.policy import (
    Admission,
    PeerRules,
    Policy,
    Refusal,
    Rule,
    TokenBucket,
    parsePatterns,
)

# The deny list of issue 9's example: premium rate, international, satellite, and
# anything with a '#' (a service code, or an attempt to break the Request-URI).
ISSUE_DENY = parsePatterns("0900*, 00*, +882*, *#*")


def _request(
    callbackId: str = "1", user1: str = "100", user2: str = "101", duration: int = 60
) -> Request:
    return Request(callbackId, user1, user2, duration)


def _rule(verdict: object) -> Rule | None:
    """
    The rule of a L{Refusal}, or L{None} for anything else (an L{Admission}).
    """
    return verdict.rule if isinstance(verdict, Refusal) else None


class ParsePatternsTests(SynchronousTestCase):
    """
    L{parsePatterns} reads the comma-separated C{allow}/C{deny} values.
    """

    def test_split(self) -> None:
        """
        Items are split on commas and stripped of blanks.
        """
        self.assertEqual(parsePatterns("+49*, 0[1-9]*"), ("+49*", "0[1-9]*"))
        self.assertEqual(parsePatterns(" 100 "), ("100",))

    def test_empty(self) -> None:
        """
        An empty or blank value is no patterns at all.
        """
        self.assertEqual(parsePatterns(""), ())
        self.assertEqual(parsePatterns("  "), ())

    def test_emptyItem(self) -> None:
        """
        An empty item (doubled or trailing comma) is an error, not "match nothing".
        """
        for text in ("a,,b", "a,", ", a", "a, ,b"):
            e = self.assertRaises(ValueError, parsePatterns, text)
            self.assertEqual(str(e), f"empty pattern in {text!r}")


class NumberRulesTests(SynchronousTestCase):
    """
    C{allow} and C{deny} apply to user1 and user2 alike; deny wins.
    """

    def assertDenied(self, rules: PeerRules, user: str, pattern: str) -> None:
        """
        Assert that C{user} is refused by deny C{pattern}, as user1 and as user2.
        """
        self.assertEqual(
            rules.checkNumbers(user, "100"),
            Refusal(Rule.DENY, f"user1 {user!r} matches deny pattern {pattern!r}"),
        )
        self.assertEqual(
            rules.checkNumbers("100", user),
            Refusal(Rule.DENY, f"user2 {user!r} matches deny pattern {pattern!r}"),
        )

    def test_defaultAllowsAny(self) -> None:
        """
        Without rules every number the codec accepts may be dialled.
        """
        rules = PeerRules()
        for user in ("100", "0900123456", "+88213000000", "*21*0049301234#", "alice"):
            self.assertIsNone(rules.checkNumbers(user, user))

    def test_premiumRate(self) -> None:
        """
        C{0900*} refuses premium-rate numbers, not numbers merely containing 0900.
        """
        rules = PeerRules(deny=ISSUE_DENY)
        self.assertDenied(rules, "0900123456", "0900*")
        self.assertIsNone(rules.checkNumbers("0300900123", "1090012"))

    def test_international(self) -> None:
        """
        C{00*} refuses international dialling, but not a national 0 number.
        """
        rules = PeerRules(deny=ISSUE_DENY)
        self.assertDenied(rules, "00881612345678", "00*")
        self.assertDenied(rules, "00", "00*")
        self.assertIsNone(rules.checkNumbers("030123456", "0"))

    def test_satellite(self) -> None:
        """
        C{+882*} refuses international networks; C{+} is an ordinary character.
        """
        rules = PeerRules(deny=ISSUE_DENY)
        self.assertDenied(rules, "+88213000000", "+882*")
        self.assertIsNone(rules.checkNumbers("+4930123456", "88213000000"))

    def test_hashAnywhere(self) -> None:
        """
        C{*#*} refuses a C{#} at the start, middle or end; C{#} is not special to
        the pattern language.
        """
        rules = PeerRules(deny=ISSUE_DENY)
        for user in ("*21*0049301234#", "#31#100", "1#2", "#"):
            self.assertDenied(rules, user, "*#*")
        self.assertIsNone(rules.checkNumbers("*21*100", "100*"))

    def test_allowList(self) -> None:
        """
        With C{allow}, a number must match one of its patterns; C{[..]} ranges work.
        """
        rules = PeerRules(allow=parsePatterns("+49*, 0[1-9]*"))
        self.assertIsNone(rules.checkNumbers("+4930123", "030123"))
        self.assertEqual(
            rules.checkNumbers("030123", "+33123"),
            Refusal(Rule.ALLOW, "user2 '+33123' matches no allow pattern"),
        )
        self.assertEqual(
            rules.checkNumbers("00123", "+4930"),
            Refusal(Rule.ALLOW, "user1 '00123' matches no allow pattern"),
        )

    def test_questionMark(self) -> None:
        """
        C{?} matches exactly one character: C{1??} is any three-digit 1xx extension.
        """
        rules = PeerRules(allow=("1??",))
        self.assertIsNone(rules.checkNumbers("100", "199"))
        self.assertEqual(
            _rule(rules.checkNumbers("1000", "100")),
            Rule.ALLOW,
        )

    def test_caseSensitive(self) -> None:
        """
        Patterns are case-sensitive on every platform (user parts can be names).
        """
        rules = PeerRules(allow=("alice",))
        self.assertIsNone(rules.checkNumbers("alice", "alice"))
        self.assertEqual(
            rules.checkNumbers("Alice", "alice"),
            Refusal(Rule.ALLOW, "user1 'Alice' matches no allow pattern"),
        )

    def test_denyWinsOverAllow(self) -> None:
        """
        A number matching both an allow and a deny pattern is refused by deny.
        """
        rules = PeerRules(allow=("0*",), deny=ISSUE_DENY)
        self.assertIsNone(rules.checkNumbers("030123", "0401"))
        self.assertDenied(rules, "0900123456", "0900*")

    def test_denyReportedBeforeAllow(self) -> None:
        """
        When user1 misses the allow list and user2 is denied, the refusal names the
        deny rule: it is the one an operator needs to see.
        """
        rules = PeerRules(allow=("+49*",), deny=ISSUE_DENY)
        self.assertEqual(
            _rule(rules.checkNumbers("030", "0900123")),
            Rule.DENY,
        )

    def test_refusalText(self) -> None:
        """
        A refusal prints as "rule: detail", which is what the log line shows.
        """
        refusal = PeerRules(deny=("00*",)).checkNumbers("0044", "100")
        self.assertEqual(str(refusal), "deny: user1 '0044' matches deny pattern '00*'")


class DurationRuleTests(SynchronousTestCase):
    """
    C{max_duration} caps a peer's durations.
    """

    def test_noCap(self) -> None:
        """
        Without C{max_duration} the duration is unchanged, 0 included.
        """
        self.assertEqual(PeerRules().checkDuration(86400), 86400)
        self.assertEqual(PeerRules().checkDuration(0), 0)

    def test_withinCap(self) -> None:
        """
        Durations up to the cap are kept.
        """
        rules = PeerRules(maxDuration=3600)
        self.assertEqual(rules.checkDuration(1), 1)
        self.assertEqual(rules.checkDuration(3600), 3600)

    def test_zeroIsCap(self) -> None:
        """
        C{duration=0} (no limit of the AS's own) becomes this peer's cap.
        """
        self.assertEqual(PeerRules(maxDuration=3600).checkDuration(0), 3600)

    def test_aboveCap(self) -> None:
        """
        A duration above the cap is refused, naming both numbers.
        """
        self.assertEqual(
            PeerRules(maxDuration=3600).checkDuration(3601),
            Refusal(Rule.MAX_DURATION, "duration 3601 exceeds max_duration 3600"),
        )

    def test_invalidRules(self) -> None:
        """
        Nonsensical limits are configuration errors.
        """
        self.assertRaises(ValueError, PeerRules, maxDuration=0)
        self.assertRaises(ValueError, PeerRules, maxCalls=-1)
        self.assertRaises(ValueError, PeerRules, rate=0)
        self.assertRaises(ValueError, PeerRules, rate=-1.5)


class TokenBucketTests(SynchronousTestCase):
    """
    L{TokenBucket} allows a burst, then a steady rate, on the injected clock.
    """

    def test_burstThenRefused(self) -> None:
        """
        A full bucket gives C{burst} tokens at once, then refuses.
        """
        bucket = TokenBucket(5, 5, Clock())
        self.assertEqual([bucket.take() for _ in range(6)], [True] * 5 + [False])

    def test_refill(self) -> None:
        """
        Tokens come back at C{rate} per second: one every 0.2 s at 5/s.
        """
        clock = Clock()
        bucket = TokenBucket(5, 5, clock)
        for _ in range(5):
            bucket.take()
        clock.advance(0.19)
        self.assertFalse(bucket.take())
        clock.advance(0.01)
        self.assertTrue(bucket.take())
        self.assertFalse(bucket.take())

    def test_refillCappedAtBurst(self) -> None:
        """
        A long quiet time refills up to C{burst} only.
        """
        clock = Clock()
        bucket = TokenBucket(5, 5, clock)
        bucket.take()
        clock.advance(3600)
        self.assertEqual(bucket.tokens, 5)
        self.assertEqual([bucket.take() for _ in range(6)], [True] * 5 + [False])

    def test_roundingDoesNotLoseTokens(self) -> None:
        """
        A token due after 0.7 s at 10/s is given although 0.7 * 10 is a hair under 7
        in floating point.
        """
        clock = Clock()
        bucket = TokenBucket(10, 10, clock)
        for _ in range(10):
            bucket.take()
        clock.advance(0.7)
        self.assertEqual([bucket.take() for _ in range(8)], [True] * 7 + [False])

    def test_clockBackwards(self) -> None:
        """
        A clock stepping back neither adds tokens nor blocks later refills.
        """
        clock = Clock()
        clock.advance(100)
        bucket = TokenBucket(1, 1, clock)
        self.assertTrue(bucket.take())
        clock.rightNow = 50.0
        self.assertFalse(bucket.take())
        clock.advance(1)
        self.assertTrue(bucket.take())

    def test_invalid(self) -> None:
        """
        A rate that is not positive, or a burst under one token, is an error.
        """
        self.assertRaises(ValueError, TokenBucket, 0, 1, Clock())
        self.assertRaises(ValueError, TokenBucket, 0.5, 0.5, Clock())


class PolicyAdmitTests(SynchronousTestCase):
    """
    L{Policy.admit} applies a peer's rules to a new REQUEST and holds its slot.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.policy = Policy(
            {
                "as1": PeerRules(deny=ISSUE_DENY, maxCalls=2, maxDuration=3600),
                "as2": PeerRules(rate=2),
            },
            self.clock,
        )

    def test_admitted(self) -> None:
        """
        A REQUEST within the rules is admitted with the duration to enforce.
        """
        self.assertEqual(self.policy.admit("as1", _request()), Admission(60))
        self.assertEqual(
            self.policy.admit("as1", _request("2", duration=0)), Admission(3600)
        )

    def test_denied(self) -> None:
        """
        A denied number is refused and holds no slot.
        """
        refusal = self.policy.admit("as1", _request(user2="0900123"))
        self.assertEqual(_rule(refusal), Rule.DENY)
        self.assertEqual(self.policy.running("as1"), 0)
        self.assertIsNone(self.policy.owner("1"))

    def test_durationRefused(self) -> None:
        """
        A duration above the peer's cap is refused.
        """
        refusal = self.policy.admit("as1", _request(duration=7200))
        self.assertEqual(_rule(refusal), Rule.MAX_DURATION)

    def test_maxCalls(self) -> None:
        """
        A third concurrent callback is refused; a released slot can be used again.
        """
        self.assertIsInstance(self.policy.admit("as1", _request("a")), Admission)
        self.assertIsInstance(self.policy.admit("as1", _request("b")), Admission)
        self.assertEqual(
            self.policy.admit("as1", _request("c")),
            Refusal(Rule.MAX_CALLS, "2 callbacks running, max_calls 2"),
        )
        self.assertEqual(self.policy.running("as1"), 2)
        self.policy.release("a")
        self.assertEqual(self.policy.running("as1"), 1)
        self.assertIsInstance(self.policy.admit("as1", _request("c")), Admission)
        self.assertEqual(self.policy.running("as1"), 2)

    def test_releaseTwice(self) -> None:
        """
        Releasing the same id twice frees one slot, not two; releasing an unknown
        id does nothing.
        """
        self.policy.admit("as1", _request("a"))
        self.policy.admit("as1", _request("b"))
        self.policy.release("a")
        self.policy.release("a")
        self.policy.release("never-seen")
        self.assertEqual(self.policy.running("as1"), 1)
        self.policy.admit("as1", _request("c"))
        self.assertEqual(_rule(self.policy.admit("as1", _request("d"))), Rule.MAX_CALLS)

    def test_maxCallsPerPeer(self) -> None:
        """
        One peer's running callbacks do not count against another's C{max_calls}.
        """
        self.policy.admit("as1", _request("a"))
        self.policy.admit("as1", _request("b"))
        self.assertIsInstance(self.policy.admit("as3", _request("c")), Admission)
        self.assertEqual(self.policy.running("as3"), 1)

    def test_maxCallsZero(self) -> None:
        """
        C{max_calls = 0} refuses every REQUEST of that peer.
        """
        policy = Policy({"off": PeerRules(maxCalls=0)}, self.clock)
        self.assertEqual(_rule(policy.admit("off", _request())), Rule.MAX_CALLS)

    def test_rate(self) -> None:
        """
        At C{rate = 2} a peer gets a burst of 2 REQUESTs, then one per 0.5 s; the
        refusal names the rate.
        """
        self.assertIsInstance(self.policy.admit("as2", _request("a")), Admission)
        self.assertIsInstance(self.policy.admit("as2", _request("b")), Admission)
        self.assertEqual(
            self.policy.admit("as2", _request("c")),
            Refusal(Rule.RATE, "more than 2 REQUESTs per second"),
        )
        self.clock.advance(0.5)
        self.assertIsInstance(self.policy.admit("as2", _request("c")), Admission)
        self.assertEqual(_rule(self.policy.admit("as2", _request("d"))), Rule.RATE)

    def test_fractionalRate(self) -> None:
        """
        A rate under 1/s still lets one REQUEST through (the burst is at least 1),
        then one per C{1 / rate} seconds.
        """
        policy = Policy({"slow": PeerRules(rate=0.1)}, self.clock)
        self.assertIsInstance(policy.admit("slow", _request("a")), Admission)
        self.assertEqual(_rule(policy.admit("slow", _request("b"))), Rule.RATE)
        self.clock.advance(9.9)
        self.assertEqual(_rule(policy.admit("slow", _request("b"))), Rule.RATE)
        self.clock.advance(0.1)
        self.assertIsInstance(policy.admit("slow", _request("b")), Admission)

    def test_refusalCostsNoToken(self) -> None:
        """
        A REQUEST refused by another rule does not use up the peer's rate.
        """
        policy = Policy({"p": PeerRules(rate=1, deny=("00*",))}, self.clock)
        for i in range(10):
            self.assertEqual(
                _rule(policy.admit("p", _request(str(i), user1="0044"))),
                Rule.DENY,
            )
        self.assertIsInstance(policy.admit("p", _request("ok")), Admission)

    def test_maxCallsRefusalCostsNoToken(self) -> None:
        """
        A REQUEST refused by C{max_calls} does not use up the peer's rate either.
        """
        policy = Policy({"p": PeerRules(rate=1, maxCalls=1)}, self.clock)
        policy.admit("p", _request("a"))
        self.clock.advance(1)
        self.assertEqual(_rule(policy.admit("p", _request("b"))), Rule.MAX_CALLS)
        policy.release("a")
        self.assertIsInstance(policy.admit("p", _request("b")), Admission)

    def test_unknownPeerGetsDefault(self) -> None:
        """
        A peer without its own section gets the default rules.
        """
        policy = Policy({}, self.clock, default=PeerRules(deny=("00*",)))
        self.assertEqual(policy.rulesFor("as9"), PeerRules(deny=("00*",)))
        self.assertEqual(_rule(policy.admit("as9", _request(user1="0044"))), Rule.DENY)
        self.assertEqual(Policy({}, self.clock).rulesFor("as9"), PeerRules())


class OwnershipTests(SynchronousTestCase):
    """
    A callback belongs to the peer that created it.
    """

    def setUp(self) -> None:
        self.policy = Policy({}, Clock())
        self.policy.admit("as1", _request("1234"))

    def test_owner(self) -> None:
        """
        The admitting peer owns the id and may act on it.
        """
        self.assertEqual(self.policy.owner("1234"), "as1")
        self.assertIsNone(self.policy.check("as1", "1234"))

    def test_otherPeerRefused(self) -> None:
        """
        Another peer may neither CANCEL the id nor get its ACK/RESPONSE replayed.
        """
        self.assertEqual(
            self.policy.check("as2", "1234"),
            Refusal(Rule.OWNER, "callback '1234' belongs to another peer"),
        )

    def test_otherPeerCannotReuseId(self) -> None:
        """
        Another peer sending a REQUEST with the same id is refused by ownership, and
        the owner's slot and ownership are untouched.
        """
        refusal = self.policy.admit("as2", _request("1234", user2="999"))
        self.assertEqual(_rule(refusal), Rule.OWNER)
        self.assertEqual(self.policy.owner("1234"), "as1")
        self.assertEqual(self.policy.running("as1"), 1)
        self.assertEqual(self.policy.running("as2"), 0)

    def test_unknownId(self) -> None:
        """
        An id nobody owns is no refusal: the protocol answers as for any unknown id.
        """
        self.assertIsNone(self.policy.check("as2", "9999"))

    def test_ownershipOutlivesRelease(self) -> None:
        """
        After the callback ended its RESPONSE may still be replayed, to its owner only.
        """
        self.policy.release("1234")
        self.assertEqual(self.policy.running("as1"), 0)
        self.assertIsNone(self.policy.check("as1", "1234"))
        self.assertEqual(_rule(self.policy.check("as2", "1234")), Rule.OWNER)

    def test_forget(self) -> None:
        """
        Once the protocol forgets the id, it belongs to nobody and holds no slot.
        """
        self.policy.forget("1234")
        self.assertIsNone(self.policy.owner("1234"))
        self.assertEqual(self.policy.running("as1"), 0)
        self.assertIsNone(self.policy.check("as2", "1234"))
        self.assertIsInstance(self.policy.admit("as2", _request("1234")), Admission)
