"""The decisions behind the gateway's limits, with no socket and no event loop: time is passed in.

- :class:`TokenBucket`: a rate with a burst (the node's accept rate).
- :class:`RatePolicy` and :class:`InboundGuard`: one connection's inbound budget. Over the rate a message
  is dropped; too many drops within a window and the connection is closed (sustained abuse). The guard
  also remembers when the connection last sent something, for the idle timeout.
- :class:`ConnectionCounts`: open connections per node and per remote address.
- :class:`OriginPolicy`: which browser origins may open a WebSocket (cross-site WebSocket hijacking).
- :func:`nesting_exceeds`: whether a JSON text nests deeper than a limit, without parsing it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from itertools import accumulate
from urllib.parse import urlsplit


class Reason(StrEnum):
    """The ``reason`` label of ``prism_rejections_total``: which limit refused something."""

    # refused before the upgrade (an HTTP answer instead of 101)
    ORIGIN = "origin"  # 403
    MAX_CONNECTIONS = "max_connections"  # 503
    MAX_CONNECTIONS_PER_IP = "max_connections_per_ip"  # 429
    ACCEPT_RATE = "accept_rate"  # 503
    HANDSHAKE_TIMEOUT = "handshake_timeout"  # TCP dropped
    # refused frames (the connection stays open)
    RATE_LIMITED = "rate_limited"  # error frame, message dropped
    PING_FLOOD = "ping_flood"  # a ping over the rate (it is answered; it counts towards rate_abuse)
    JSON_DEPTH = "json_depth"  # error frame invalid_frame
    TOO_MANY_ROOMS = "too_many_rooms"  # error frame
    TOO_MANY_REQUESTS = "too_many_requests"  # error frame
    # closed connections
    RATE_ABUSE = "rate_abuse"  # close 1008
    IDLE_TIMEOUT = "idle_timeout"  # close 1001
    MESSAGE_TOO_BIG = "message_too_big"  # close 1009 (also too many fragments)
    INVALID_UTF8 = "invalid_utf8"  # close 1007
    PROTOCOL_ERROR = "protocol_error"  # close 1002
    UNREAD_PONGS = "unread_pongs"  # TCP dropped: pings keep coming but the client reads nothing


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up. ``now`` is any monotonic clock in seconds."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if not (rate > 0 and burst >= 1):
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def _refill(self, now: float) -> None:
        elapsed = now - self.stamp
        if elapsed > 0:  # a clock that went backwards refills nothing
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        self._refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def wait(self, now: float) -> float:
        """Seconds until a token is available (0 if one is)."""
        self._refill(now)
        return max(0.0, (1 - self.tokens) / self.rate)


@dataclass(frozen=True, slots=True)
class RatePolicy:
    """``rate`` messages a second with bursts of ``burst`` (rate 0: no limit); ``max_violations``
    messages over the rate within ``window`` seconds is sustained abuse."""

    rate: float
    burst: int
    max_violations: int
    window: float

    @property
    def enabled(self) -> bool:
        return self.rate > 0


class Verdict(Enum):
    PASS = "pass"  # handle the message
    DROP = "drop"  # over the rate: drop it and say so
    CLOSE = "close"  # sustained abuse: close the connection


class InboundGuard:
    """One connection's inbound state under a :class:`RatePolicy` (shared by all connections).

    Created on a connection's first message, so idle connections cost nothing."""

    __slots__ = ("last", "since", "tokens", "violations")

    def __init__(self, policy: RatePolicy, now: float) -> None:
        self.last = now  # when the last message arrived (or the guard was made)
        self.tokens = float(policy.burst)
        self.violations = 0
        self.since = now  # start of the current violation window

    def admit(self, policy: RatePolicy, now: float) -> Verdict:
        """Account for one message arriving at ``now``."""
        elapsed = now - self.last
        if elapsed > 0:
            self.last = now
            if policy.rate > 0:
                self.tokens = min(float(policy.burst), self.tokens + elapsed * policy.rate)
        if policy.rate <= 0:
            return Verdict.PASS
        if self.tokens >= 1:
            self.tokens -= 1
            return Verdict.PASS
        if now - self.since > policy.window:
            self.since = now
            self.violations = 0
        self.violations += 1
        return Verdict.CLOSE if self.violations >= policy.max_violations else Verdict.DROP

    def idle_for(self, now: float) -> float:
        return max(0.0, now - self.last)


def effective_max_connections(configured: int, open_files_limit: int | None) -> int:
    """The per-node connection cap: ``configured`` if positive; for 0, 90% of the open-files limit (the
    rest is left for refusing handshakes politely, NATS and files), or no cap (0) if that is unlimited."""
    if configured > 0:
        return configured
    if open_files_limit is None or open_files_limit <= 0:
        return 0
    return max(1, open_files_limit * 9 // 10)


class ConnectionCounts:
    """Open connections of the node and per remote address. A limit of 0 means no limit."""

    __slots__ = ("max_per_ip", "max_total", "per_ip", "total")

    def __init__(self, max_total: int, max_per_ip: int) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.total = 0
        self.per_ip: dict[str, int] = {}

    def refusal(self, ip: str) -> Reason | None:
        """Why one more connection from ``ip`` would be over a limit, or None."""
        if self.max_total and self.total >= self.max_total:
            return Reason.MAX_CONNECTIONS
        if self.max_per_ip and self.per_ip.get(ip, 0) >= self.max_per_ip:
            return Reason.MAX_CONNECTIONS_PER_IP
        return None

    def acquire(self, ip: str) -> None:
        self.total += 1
        if self.max_per_ip:
            self.per_ip[ip] = self.per_ip.get(ip, 0) + 1

    def release(self, ip: str) -> None:
        if self.total > 0:
            self.total -= 1
        count = self.per_ip.get(ip)
        if count is not None:
            if count <= 1:
                del self.per_ip[ip]
            else:
                self.per_ip[ip] = count - 1


# -- origins ---------------------------------------------------------------------------------------------

# An origin pattern: ``scheme://host[:port]`` where ``*`` stands for any run of characters that may occur
# in a host name or a port (never '/', so a pattern cannot reach into another part of a URL), or "null".
_ORIGIN_PATTERN = re.compile(r"[a-z][a-z0-9+.-]*://[a-z0-9*._\-\[\]:]+")
_WILDCARD = "[a-z0-9._\\-\\[\\]:]*"
ANY_ORIGIN = "*"  # the allowed-origins entry that opens the node to every origin, explicitly
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def origin_pattern_error(pattern: str) -> str | None:
    """Why ``pattern`` cannot be an allowed-origin pattern, or None if it can."""
    lowered = pattern.strip().lower()
    if lowered in ("null", ANY_ORIGIN) or _ORIGIN_PATTERN.fullmatch(lowered):
        return None
    return (
        f"allowed origin {pattern!r} must look like 'https://app.example.com', 'https://*.example.com' "
        "or 'http://localhost:*' (scheme://host[:port], '*' for any host or port characters), 'null', "
        "or '*' alone for any origin"
    )


def same_origin(origin: str, host: str) -> bool:
    """Whether ``origin`` (``scheme://host[:port]``) names the host and port of a request whose ``Host``
    header is ``host``: the page that opens the WebSocket was served by this same address. A port left
    out on either side is the scheme's default (a proxy that terminates TLS on 443 passes ``Host`` on)."""
    try:
        page = urlsplit(origin)
        target = urlsplit("//" + host)
        default = _DEFAULT_PORTS.get(page.scheme)
        if default is None or not page.hostname or not target.hostname:
            return False
        if page.path or page.query or page.fragment or page.username or target.path or target.username:
            return False
        return (page.hostname, page.port or default) == (target.hostname, target.port or default)
    except ValueError:  # a port that is not a number, or out of range
        return False


def _origin_regex(pattern: str) -> str:
    return _WILDCARD.join(re.escape(part) for part in pattern.split("*"))


class OriginPolicy:
    """Allowed ``Origin`` values: those matching ``patterns``; ``*`` among them: any origin. With no
    patterns, any origin unless ``same_origin_default`` (authentication on), and then only an origin that
    is the request's own (:func:`same_origin`). Requests without an ``Origin`` header (not from a browser)
    are allowed, since only browsers are tricked into cross-site requests; a request with more than one
    ``Origin`` header is refused."""

    __slots__ = ("_any", "_exact", "_same_origin", "_wild", "patterns")

    def __init__(self, patterns: Iterable[str], same_origin_default: bool = False) -> None:
        self.patterns = tuple(p.strip().lower() for p in patterns if p.strip())
        for pattern in self.patterns:
            if (problem := origin_pattern_error(pattern)) is not None:
                raise ValueError(problem)
        self._any = ANY_ORIGIN in self.patterns or not (self.patterns or same_origin_default)
        self._same_origin = not self.patterns
        self._exact = frozenset(p for p in self.patterns if "*" not in p)
        wild = [_origin_regex(p) for p in self.patterns if "*" in p and p != ANY_ORIGIN]
        self._wild = re.compile("|".join(f"(?:{w})" for w in wild)) if wild else None

    def allows(self, origins: Sequence[str], hosts: Sequence[str] = ()) -> bool:
        """Whether a request carrying these ``Origin`` and ``Host`` header values may open a WebSocket."""
        if not origins or self._any:
            return True
        if len(origins) > 1:
            return False
        origin = origins[0].strip().lower()
        if self._same_origin:
            return len(hosts) == 1 and same_origin(origin, hosts[0].strip().lower())
        if origin in self._exact:
            return True
        return self._wild is not None and self._wild.fullmatch(origin) is not None


# -- JSON nesting ----------------------------------------------------------------------------------------

# A JSON string (escapes included); an unterminated one is left alone, as its brackets can't be told apart.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def nesting_depth(text: str) -> int:
    """How deeply the arrays and objects of a JSON text nest (0 for a scalar), counting brackets outside
    strings. For text that is not JSON the answer is some number; it never raises."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(0, max(accumulate(map(_STEP.__getitem__, brackets)), default=0))


def nesting_exceeds(text: str, limit: int) -> bool:
    """Whether ``text`` nests deeper than ``limit``: free when it has no more than ``limit`` opening
    brackets in all, else one pass of C-speed regular expressions and :func:`itertools.accumulate`."""
    if text.count("{") + text.count("[") <= limit:
        return False
    return nesting_depth(text) > limit


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
