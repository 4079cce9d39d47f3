# -*- test-case-name: tests.test_sip_adapter -*-
"""
sippy's transaction manager on the reactor's UDP transport, with what sippy
2.5.0 gets wrong there put right, and the few facts the stack needs from it
behind methods of our own.
"""

from __future__ import annotations

import re
import sys
import zlib
from collections import deque
from collections.abc import Callable
from typing import Any

import sippy.SipTransactionManager as _sippyTM
from sippy.SipTransactionManager import SipTMRetransmitO, SipTransactionManager
from sippy.Time.Timeout import Timeout
from sippy.Udp_server import Udp_server_opts
from twisted.logger import Logger

from callback_tw.ratelimit import LogLimiter
from callback_tw.sip.adapter.errors import dumpException, routeSippyErrors
from callback_tw.sip.adapter.trace import SipTraceLogger
from callback_tw.sip.adapter.transport import ReactorUdpServer
from callback_tw.sip.guard import printable

__all__ = ["ReactorTransactionManager", "RetransmitCache", "startTransactionManager"]

_log = Logger(namespace="callback_tw.sip")

_CALL_ID = re.compile(r"^(?:call-id|i)[ \t]*:[ \t]*(\S+)", re.I | re.M)
_METHOD = re.compile(r"[A-Z]{2,16}")

#: The transaction managers handling a datagram right now (innermost last):
#: sippy reports a message it cannot parse through C{dump_exception}, with
#: no reference to the manager; L{_parseFailed} finds it here.
_receiving: list[tuple[ReactorTransactionManager, Any, str]] = []


def _parseFailed(msg: str, f: Any = None, extra: Any = None) -> None:
    """
    sippy's C{dump_exception} in C{SipTransactionManager}: there it is only
    called for a message it cannot parse, which is one warning line about
    its sender, not a traceback with the whole message.
    """
    if not _receiving:
        dumpException(msg, f, extra)
        return
    tm, remote, text = _receiving[-1]
    error = sys.exc_info()[1]
    tm.reportMalformed(remote, text, f"{type(error).__name__}: {error}")


_sippyTM.dump_exception = _parseFailed  # type: ignore[attr-defined]


def _badStatusLine(text: str) -> str | None:
    """
    Why a response's status line is refused before sippy sees it (sippy
    prints such a message line by line to stdout), or None.
    """
    first = text.splitlines()[0] if text else ""
    parts = first.split(None, 2)
    if len(parts) < 2:
        return "no status code"
    try:
        code = int(parts[1])
    except ValueError:
        return "no status code"
    if not 100 <= code <= 699:
        return f"status code {code}"
    return None


#: RFC 3261 64*T1 (Timers B, F, H and J and a UAS's 2xx retransmissions):
#: how long after a message its retransmissions may still arrive.
CACHE_LIFETIME = 32.0

#: how often L{RetransmitCache} drops its oldest part: an entry lives
#: between C{CACHE_LIFETIME} and C{CACHE_LIFETIME + CACHE_STEP}.
CACHE_STEP = 4.0


#: what the messages a retransmission is answered with (ACKs, responses)
#: have in common: the dictionary L{_Retransmit} compresses them with.
_ZDICT = (
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP ;received=;rport;branch=z9hG4bK"
    b"\r\nMax-Forwards: 70\r\nFrom: <sip:@>;tag=\r\nTo: <sip:@>;tag="
    b"\r\nCall-ID: \r\nCSeq: BYE\r\nCSeq: ACK\r\nContact: <sip:@;transport=udp>"
    b"\r\nRoute: <sip:;lr>\r\nServer: callback_tw\r\nUser-Agent: callback_tw"
    b"\r\nContent-Length: 0\r\n\r\nACK sip:"
)

#: zlib's settings for L{_Retransmit}: a 1 KiB window and little state
#: (a message is a few hundred bytes), no header.
_WBITS = -10
_MEMLEVEL = 2


class _Retransmit:
    """
    What answers a retransmission: the bytes sent back, compressed (a third
    of their size, ~10 us), and where, in slots (sippy's
    L{SipTMRetransmitO} has a dictionary and a Call-ID nobody reads).
    Nearly all are never read: they wait for a retransmission that a lost
    datagram would cause.
    """

    __slots__ = ("userv", "_packed", "address", "lossemul")

    def __init__(self, userv: Any, data: str, address: Any, lossemul: Any) -> None:
        self.userv = userv
        packer = zlib.compressobj(6, zlib.DEFLATED, _WBITS, _MEMLEVEL, zdict=_ZDICT)
        self._packed = packer.compress(data.encode()) + packer.flush()
        self.address = address
        self.lossemul = lossemul

    @property
    def data(self) -> str:
        """The text sent, as sippy cached it."""
        unpacker = zlib.decompressobj(_WBITS, zdict=_ZDICT)
        return unpacker.decompress(self._packed).decode()


#: the entry of a message whose retransmissions are ignored (a provisional
#: response, an ACK...): one object for all of them, sippy reads only its
#: C{data}, None.
_IGNORE = SipTMRetransmitO()


class RetransmitCache:
    """
    sippy's C{l1rcache}: the answer to a retransmission, by the checksum of
    the message retransmitted (the ACK sent for a 2xx, the response sent for
    a request, or nothing for a message to ignore), kept for
    C{CACHE_LIFETIME} to C{CACHE_LIFETIME + CACHE_STEP} seconds.

    sippy keeps two dictionaries swapped every 32 s, so an entry lives 32 to
    64 s, every message of the last minute at once; this keeps what the RFC
    needs and no more, in small entries (L{_Retransmit}, one shared
    C{_IGNORE}): a server setting up callbacks holds every message's entry
    at its busiest moment, and what it holds then stays its size.
    """

    __slots__ = ("_parts", "_addresses")

    def __init__(
        self, lifetime: float = CACHE_LIFETIME, step: float = CACHE_STEP
    ) -> None:
        # The newest part takes entries for one step, then it is one of the
        # lifetime / step older ones, then dropped.
        self._parts: deque[dict[bytes, Any]] = deque(
            [{}], maxlen=round(lifetime / step) + 1
        )
        # The newest part's addresses, one tuple each: the answers of a
        # step mostly go to the same few peers (a proxy, a trunk).
        self._addresses: dict[Any, Any] = {}

    def get(self, key: bytes, default: Any = None) -> Any:
        for part in reversed(self._parts):
            entry = part.get(key)
            if entry is not None:
                return entry
        return default

    def __contains__(self, key: bytes) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        return sum(len(part) for part in self._parts)

    def __setitem__(self, key: bytes, entry: Any) -> None:
        if entry.data is None:
            entry = _IGNORE
        elif type(entry) is not _Retransmit:
            address = self._addresses.setdefault(entry.address, entry.address)
            entry = _Retransmit(entry.userv, entry.data, address, entry.lossemul)
        self._parts[-1][key] = entry

    def rotate(self) -> None:
        """One step later: the oldest entries are dropped."""
        self._parts.append({})
        self._addresses = {}


class _Consumer:
    """
    sippy's C{SipTransactionConsumer} (the dialog that takes the requests
    of a Call-ID) in slots: one is kept for the life of every dialog.
    """

    __slots__ = ("cobj", "compact")

    def __init__(self, cobj: Any, compact: bool) -> None:
        self.cobj = cobj
        self.compact = compact

    def cleanup(self) -> None:
        self.cobj = None


class ReactorTransactionManager(SipTransactionManager):
    """
    sippy's transaction manager on L{ReactorUdpServer}.

    Each override below says what it fixes; all were checked against sippy
    2.5.0.
    """

    #: sippy's hook for the UDP server class: ours runs on the reactor.
    model_udp_server = (ReactorUdpServer, Udp_server_opts)

    #: RFC 3261 17.1.2.2 / 17.2.1: T2, the cap on retransmission intervals
    #: of non-INVITE requests and of 2xx responses to INVITE.
    T2 = 4.0

    def timerA(self, t: Any) -> None:
        """
        Retransmit. sippy doubles the interval without bound for every
        transaction; RFC 3261 lets only an INVITE client transaction (Timer
        A) do that, while non-INVITE requests (Timer E) and a UAS's 2xx are
        capped at T2, so a lost BYE is retried every 4 s, not after 8, 16 s.
        """
        self.transmitData(t.userv, t.data, t.address)
        inviteClient = t.method == "INVITE" and self.tclient.get(t.tid) is t
        t.tout = t.tout * 2 if inviteClient else min(t.tout * 2, self.T2)
        t.teA = Timeout(self.timerA, t.tout, 1, t)

    def newTransaction(self, msg: Any, *args: Any, **kwargs: Any) -> Any:
        """
        Send a request. A Contact with "transport=UDP" (SIPp, many phones)
        becomes the in-dialog target; sippy compares the transport
        case-sensitively and raises on every re-INVITE and BYE, so it is
        lower-cased first.
        """
        target = msg.getTarget()
        if target is not None:
            address, transport = target
            if isinstance(transport, str) and transport != transport.lower():
                msg.setTarget((address, transport.lower()))
        return super().newTransaction(msg, *args, **kwargs)

    #: the per-source limit on requests outside our dialogs
    #: (L{callback_tw.sip.guard.SourceLimiter}); None: no limit.
    guard: Any = None

    #: whether the datagram being handled belongs to one of our dialogs or
    #: transactions (an error there is a bug of ours, not a bad message).
    _ours = False

    def __init__(self, global_config: dict[str, Any], req_cb: Any = None) -> None:
        super().__init__(global_config, req_cb)
        self.logLimiter = LogLimiter(global_config["_reactor"])
        # sippy's two caches swapped every 32 s: one cache of our own
        # instead (RetransmitCache), its second one left empty.
        self.l1rcache = RetransmitCache()
        self.l2rcache = {}
        self._rotations = 0
        self.cp_timer.cancel()
        self.cp_timer = Timeout(self.rCachePurge, CACHE_STEP, -1)

    def regConsumer(self, consumer: Any, call_id: str, compact: bool = False) -> None:
        """
        C{consumer} takes the requests of C{call_id}. sippy keeps a list
        and a consumer object with a dictionary per Call-ID, for the life of
        the dialog; here a tuple (there is one consumer per Call-ID but for
        a moment) of L{_Consumer}s, read as sippy reads them.
        """
        entry = _Consumer(consumer, compact)
        self.req_consumers[call_id] = self.req_consumers.get(call_id, ()) + (entry,)

    def unregConsumer(self, consumer: Any, call_id: str) -> None:
        """C{consumer} no longer takes the requests of C{call_id}, as in sippy."""
        consumers = self.req_consumers.pop(call_id)
        for index, cons in enumerate(consumers):
            if cons.cobj != consumer:
                continue
            kept = consumers[:index] + consumers[index + 1 :]
            if kept:
                self.req_consumers[call_id] = kept
            cons.cleanup()
            return
        self.req_consumers[call_id] = consumers
        raise IndexError(
            f"unregConsumer: consumer {consumer} for call-id {call_id}"
            " is not registered"
        )

    def rCachePurge(self) -> None:
        """
        Every C{CACHE_STEP}: the retransmission cache drops its oldest
        entries; sippy's cache of local addresses by remote one turns
        over every C{CACHE_LIFETIME}, as sippy does it.
        """
        self.l1rcache.rotate()
        self._rotations += 1
        if self._rotations * CACHE_STEP >= CACHE_LIFETIME:
            self._rotations = 0
            self.l4r.rotateCache()

    def handleIncoming(self, data_in: Any, ra: Any, server: Any, rtime: Any) -> None:
        """
        Screen a datagram before sippy parses it, and report a message
        sippy cannot handle as one warning line (L{reportMalformed}):

          - bytes that are not UTF-8 (sippy raises on them);
          - anything from a source the guard is ignoring, unless it names
            one of our calls (requests in our dialogs are never limited);
          - a response whose status code is not 100-699 (sippy prints such
            a message to stdout, line by line).
        """
        if len(data_in) < 32:
            return
        try:
            text = data_in.decode() if isinstance(data_in, bytes) else data_in
        except UnicodeDecodeError:
            self.reportMalformed(ra, data_in, "not UTF-8")
            return
        host = ra.address[0]
        if (
            self.guard is not None
            and self.guard.blocked(host)
            and not self._namesOurCall(text)
        ):
            return
        if text.startswith("SIP/2.0 "):
            reason = _badStatusLine(text)
            if reason is not None:
                self.reportMalformed(ra, text, reason)
                return
        self._ours = False
        _receiving.append((self, ra, text))
        try:
            super().handleIncoming(data_in, ra, server, rtime)
        except Exception as e:
            if self._ours:
                raise
            self.reportMalformed(ra, text, f"{type(e).__name__}: {e}")
        finally:
            _receiving.pop()

    def reportMalformed(self, ra: Any, data: Any, reason: str) -> None:
        """
        One warning line for a message that cannot be handled: its method
        when it has one, its source and why, escaped and short; at most one
        line per source per interval (L{LogLimiter}). The message itself is
        logged only by the SIP trace. It counts against its source's limit.
        """
        host, port = ra.address[0], ra.address[1]
        if self.guard is not None:
            self.guard.admit(host)
        dropped = self.logLimiter.allow(host)
        if dropped is None:
            return
        head = (
            data[:20].decode("ascii", "replace")
            if isinstance(data, bytes)
            else data[:20]
        )
        method = _METHOD.match(head)
        what = (
            "response"
            if head.startswith("SIP/")
            else (method.group(0) if method else "message")
        )
        _log.warn(
            "malformed SIP {what} from {host}:{port}: {reason}{dropped}",
            what=what,
            host=host,
            port=port,
            reason=printable(reason, 100),
            dropped=f" (+{dropped} not logged)" if dropped else "",
        )

    def _namesOurCall(self, text: str) -> bool:
        """Whether C{text}'s Call-ID is one of our dialogs or client transactions."""
        match = _CALL_ID.search(text)
        if match is None:
            return False
        callId = match.group(1)
        if callId in self.req_consumers:
            return True
        return any(tid[0] == callId for tid in self.tclient)

    def incomingResponse(self, msg: Any, t: Any, checksum: Any) -> None:
        """A response to one of our requests: ours (see L{handleIncoming})."""
        self._ours = True
        super().incomingResponse(msg, t, checksum)

    def incomingRequest(self, msg: Any, checksum: Any, tids: Any, server: Any) -> None:
        """
        A request, parsed. One that belongs to our dialogs or transactions
        goes through sippy; any other is answered here, statelessly:

          - the guard may ignore it (too many from its source);
          - one final response per request received, sent once, with no
            transaction and no retransmission (an INVITE we refuse would
            otherwise be answered again and again toward a source that
            never ACKs), to the packet's real source, never to an address
            the Via names (reflection);
          - an ACK gets nothing, a CANCEL 481, anything else what
            C{req_cb} says (None: no answer at all).

        In our dialogs, a C{received} in the top Via that is not the real
        source is replaced by it: responses may follow the Via there (RFC
        3261 18.2.2), but never to a host we did not see.
        """
        source = msg.getSource()
        if self._belongsToUs(msg, tids):
            self._ours = True
            via = msg.getHFBody("via")
            if via.params.get("received", source[0]) != source[0]:
                via.params["received"] = source[0]
            super().incomingRequest(msg, checksum, tids, server)
            return
        if self.guard is not None and not self.guard.admit(source[0]):
            return
        method = msg.getMethod()
        if method == "ACK":
            return
        if method == "CANCEL":
            resp = msg.genResponse(481, "Call/Transaction Does Not Exist")
        else:
            rval = self.req_cb(msg, None) if self.req_cb is not None else None
            resp = rval[0] if rval else None
        if resp is not None:
            # A retransmitted REGISTER must find the same 200: its nonce
            # count is spent. Nothing else is cached, so every request
            # goes through the guard.
            cache = checksum if method == "REGISTER" and resp.scode == 200 else None
            self.sendStateless(server, resp, source, cache)

    def _belongsToUs(self, msg: Any, tids: Any) -> bool:
        """Whether C{msg} is in one of our dialogs or matches a transaction."""
        if tids[0][0] in self.req_consumers:
            return True
        if any(tid in self.tclient for tid in tids):
            return True
        if msg.getMethod() == "ACK":
            return msg.getTId(wTTG=True) in self.tserver
        return msg.getTId(wBRN=True) in self.tserver

    def sendStateless(
        self, server: Any, resp: Any, address: tuple[str, int], cache: Any = None
    ) -> None:
        """
        Send C{resp} once to C{address}, with a To tag as a final response
        needs (RFC 3261 8.2.6.2); C{cache}: the request's checksum, under
        which sippy answers its retransmissions with the same bytes.
        """
        to = resp.getHFBody("to")
        if resp.scode > 100 and to.getTag() is None:
            to.genTag()
        if server.uopts.isWildCard():
            server = self.l4r.getServer(address)
        self.transmitMsg(server, resp, address, cache)

    def servers(self) -> list[ReactorUdpServer]:
        """The UDP servers sippy created (one when the address is fixed)."""
        if self.l4r is None:
            return []
        return list(self.l4r.cache_l2s.values())

    @property
    def pendingClientTransactions(self) -> int:
        """Requests we sent that still wait for their final answer."""
        return 0 if self.tclient is None else len(self.tclient)


def startTransactionManager(
    reactor: Any,
    address: str,
    port: int,
    advertisedAddress: str,
    trace: bool,
    requestHandler: Callable[[Any, Any], Any],
    guard: Any = None,
) -> ReactorTransactionManager:
    """
    Bind the SIP port and start a transaction manager on C{reactor}.

    sippy reads its settings from a "global configuration" dictionary that
    its UAs share with the transaction manager; the keys used here are the
    ones sippy 2.5.0 reads, plus C{_reactor} and C{_sip_advertised} for
    L{ReactorUdpServer}. The dictionary is the manager's C{global_config}.

    @param advertisedAddress: the address put in Via, Contact and SDP.
    @param trace: log every SIP message.
    @param requestHandler: sippy's C{req_cb}: called with (request,
        transaction) for a request outside any dialog of ours; the
        transaction is None, and the response in the returned tuple is sent
        statelessly (L{ReactorTransactionManager.incomingRequest}).
    @param guard: the per-source limit on requests outside our dialogs
        (L{callback_tw.sip.guard.SourceLimiter}), or None.
    """
    globalConfig: dict[str, Any] = {
        "_sip_address": address,
        "_sip_port": port,
        "_sip_logger": SipTraceLogger(trace),
        "_reactor": reactor,
        "_sip_advertised": advertisedAddress,
    }
    tm = ReactorTransactionManager(globalConfig, requestHandler)
    tm.guard = guard
    globalConfig["_sip_tm"] = tm
    routeSippyErrors()
    return tm
