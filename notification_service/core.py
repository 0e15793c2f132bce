"""The notification service's decisions, with no I/O: what a stream message is, what to do with it after a
delivery attempt, when it has expired, how long to wait before a retry, and what a dead letter says.

The I/O shells (:mod:`notification_service.worker`, :mod:`notification_service.inbox`) call these
functions and carry out what they return; everything here is unit-tested without NATS or an event loop.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

import orjson

from shared.backoff import Backoff
from shared.errors import InvalidName
from shared.subjects import Subjects, validate_room, validate_user_id
from shared.timestamps import iso

MAX_ID_LENGTH = 128
_ID_RE = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no spaces: it travels in NATS headers
FRAME_TYPE = "notification"

# Headers the service writes (stream messages it stores or dead-letters).
H_ID = "Prism-Notify-Id"  # the notification's id, on inbox messages
H_EXPIRES = "Prism-Notify-Expires"  # unix time (seconds) after which it must not be delivered
H_REASON = "Prism-Notify-Reason"  # dead letters: why, in words
H_ERROR = "Prism-Notify-Error"  # dead letters: why, as a slug (:class:`Problem`)
H_SUBJECT = "Prism-Notify-Subject"  # dead letters: the subject it was published on
H_DELIVERIES = "Prism-Notify-Deliveries"  # dead letters: how many times the service received it
H_SEQUENCE = "Prism-Notify-Sequence"  # dead letters: its sequence in the NOTIFICATIONS stream
MSG_ID = "Nats-Msg-Id"  # JetStream deduplication
MSG_TTL = "Nats-TTL"  # JetStream per-message TTL (inbox copies of notifications with a ttl)


class Kind(StrEnum):
    USER = "user"
    ROOM = "room"
    BROADCAST = "broadcast"


class Problem(StrEnum):
    """Why a notification is dead-lettered (the ``Prism-Notify-Error`` header and a metric label)."""

    INVALID_SUBJECT = "invalid_subject"
    INVALID_USER = "invalid_user"
    INVALID_ROOM = "invalid_room"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    INVALID_ID = "invalid_id"
    MISSING_PAYLOAD = "missing_payload"
    INVALID_TTL = "invalid_ttl"
    NO_RECEIPT = "no_receipt"  # nobody confirmed a delivery within the receipt timeout, every try
    NATS_ERROR = "nats_error"  # delivering or storing failed, every try
    TOO_MANY_DELIVERIES = "too_many_deliveries"  # received more often than allowed (crashes mid-way)


@dataclass(frozen=True, slots=True)
class Target:
    kind: Kind
    name: str = ""  # user id or room name; empty for broadcast

    def delivery_subject(self, subjects: Subjects) -> str:
        if self.kind is Kind.USER:
            return subjects.user(self.name)
        if self.kind is Kind.ROOM:
            return subjects.room(self.name)
        return subjects.broadcast


@dataclass(frozen=True, slots=True)
class Notification:
    id: str
    payload: Any
    target: Target
    sent_at: float  # unix time the stream stored it
    expires_at: float | None  # sent_at + ttl

    def frame(self) -> bytes:
        """The text frame a client receives: ``{"type":"notification","id":...,"payload":...,...}``."""
        body: dict[str, Any] = {"type": FRAME_TYPE, "id": self.id, "payload": self.payload}
        body["sent_at"] = iso(self.sent_at)
        if self.target.kind is Kind.ROOM:
            body["room"] = self.target.name
        return orjson.dumps(body)


@dataclass(frozen=True, slots=True)
class Malformed:
    problem: Problem
    reason: str
    kind: str  # "user", "room", "broadcast", or "invalid" when the subject says nothing usable


def parse_target(subject: str, subjects: Subjects) -> Target | Malformed:
    rest = subjects.strip(subject)
    kind, _, name = rest.removeprefix("notify.").partition(".")
    try:
        if kind == "user":
            return Target(Kind.USER, validate_user_id(name))
        if kind == "room":
            return Target(Kind.ROOM, validate_room(name))
    except InvalidName as exc:
        problem = Problem.INVALID_USER if kind == "user" else Problem.INVALID_ROOM
        return Malformed(problem, str(exc), kind)
    if rest == "notify.broadcast":
        return Target(Kind.BROADCAST)
    return Malformed(Problem.INVALID_SUBJECT, f"not a notification subject: {subject!r:.200}", "invalid")


def parse(subject: str, data: bytes, sent_at: float, subjects: Subjects) -> Notification | Malformed:
    """A stream message as a :class:`Notification`, or :class:`Malformed` saying what is wrong with it."""
    target = parse_target(subject, subjects)
    if isinstance(target, Malformed):
        return target
    kind = target.kind.value
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return Malformed(Problem.INVALID_JSON, f"notification is not valid JSON: {exc}", kind)
    if not isinstance(body, dict):
        found = type(body).__name__
        return Malformed(Problem.NOT_AN_OBJECT, f"notification must be a JSON object, got {found}", kind)
    notification_id = body.get("id")
    if (problem := id_problem(notification_id)) is not None:
        return Malformed(Problem.INVALID_ID, problem, kind)
    if "payload" not in body:
        return Malformed(Problem.MISSING_PAYLOAD, 'notification has no "payload" (null is allowed)', kind)
    ttl = body.get("ttl")
    if ttl is not None and not (
        isinstance(ttl, int | float) and not isinstance(ttl, bool) and 0 < ttl < math.inf
    ):
        return Malformed(
            Problem.INVALID_TTL, f'"ttl" must be a positive number of seconds, got {ttl!r:.50}', kind
        )
    assert isinstance(notification_id, str)
    expires_at = None if ttl is None else sent_at + float(ttl)
    return Notification(notification_id, body["payload"], target, sent_at, expires_at)


def id_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return f'"id" must be a string, got {type(value).__name__}' if value is not None else 'no "id"'
    if not 0 < len(value) <= MAX_ID_LENGTH:
        return f'"id" must be 1 to {MAX_ID_LENGTH} characters long, got {len(value)}'
    if not _ID_RE.fullmatch(value):
        return '"id" may hold only printable ASCII characters without spaces'
    return None


def is_expired(expires_at: float | None, now: float) -> bool:
    return expires_at is not None and now >= expires_at


def inbox_ttl(expires_at: float | None, now: float) -> str | None:
    """The ``Nats-TTL`` of an inbox copy: whole seconds until it expires (at least 1), or None."""
    if expires_at is None:
        return None
    return f"{max(1, math.ceil(expires_at - now))}s"


def inbox_msg_id(user: str, notification_id: str) -> str:
    """Deduplication id of an inbox copy: per user, since one id may go to several users."""
    return f"{user}:{notification_id}"


# -- what to do after a delivery attempt ---------------------------------------------------------------
class Outcome(Enum):
    RECEIPTS = "receipts"  # at least one node answered
    NO_RESPONDERS = "no_responders"  # nobody holds the target right now
    TIMEOUT = "timeout"  # no answer within the receipt timeout
    ERROR = "error"  # NATS refused or failed the publish


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    outcome: Outcome
    delivered: int = 0  # sockets written, summed over the receipts
    error: str = ""

    @property
    def confirmed(self) -> bool:
        return self.outcome is Outcome.RECEIPTS and self.delivered > 0


class Step(Enum):
    DELIVERED = "delivered"  # ack
    NO_RECIPIENTS = "no_recipients"  # ack: a room or broadcast nobody is in right now
    STORE = "store"  # put it in the user's inbox, then ack
    FAIL = "fail"  # retry later, or dead-letter once out of tries


def after_delivery(kind: Kind, result: DeliveryResult) -> tuple[Step, Problem | None]:
    """What the receipts (or their absence) mean for a notification to ``kind``."""
    if result.outcome is Outcome.TIMEOUT:
        # A node with no connection at all stays silent on ``broadcast``: silence is "nobody there".
        if kind is Kind.BROADCAST:
            return Step.NO_RECIPIENTS, None
        return Step.FAIL, Problem.NO_RECEIPT
    if result.outcome is Outcome.ERROR:
        return Step.FAIL, Problem.NATS_ERROR
    if result.confirmed:
        return Step.DELIVERED, None
    # No responders, or receipts that wrote nothing (the user's only connections were closing).
    if kind is Kind.USER:
        return Step.STORE, None
    return Step.NO_RECIPIENTS, None


@dataclass(frozen=True, slots=True)
class Retry:
    delay: float


@dataclass(frozen=True, slots=True)
class DeadLetter:
    problem: Problem
    reason: str


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_deliveries: int = 5
    base_delay: float = 1.0
    max_delay: float = 30.0
    # The ceilings of a Backoff, without its jitter: the delays docs/notifications.md promises.
    _backoff: Backoff = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        backoff = Backoff(base=min(self.base_delay, self.max_delay), cap=self.max_delay)
        object.__setattr__(self, "_backoff", backoff)

    def delay(self, attempt: int) -> float:
        """Delay before the redelivery that follows attempt ``attempt`` (1-based): doubling, capped."""
        return self._backoff.ceiling(max(0, attempt - 1))

    def on_failure(self, problem: Problem, detail: str, attempt: int) -> Retry | DeadLetter:
        if attempt >= self.max_deliveries:
            return DeadLetter(problem, f"{detail} (gave up after {attempt} deliveries)")
        return Retry(self.delay(attempt))

    def on_arrival(self, attempt: int) -> DeadLetter | None:
        """A message seen more often than allowed (the service died or stalled while holding it each
        time) is dead-lettered before another try."""
        if attempt > self.max_deliveries:
            limit = self.max_deliveries
            return DeadLetter(Problem.TOO_MANY_DELIVERIES, f"received {attempt} times; the limit is {limit}")
        return None


def failure_detail(problem: Problem, result: DeliveryResult, timeout: float) -> str:
    if problem is Problem.NO_RECEIPT:
        return f"no delivery receipt within {timeout:g}s"
    return f"NATS error: {result.error}" if result.error else "NATS error"


def dead_letter_headers(
    problem: Problem, reason: str, subject: str, attempt: int, sequence: int, stream: str
) -> dict[str, str]:
    return {
        H_ERROR: problem.value,
        H_REASON: _one_line(reason),
        H_SUBJECT: subject,
        H_DELIVERIES: str(attempt),
        H_SEQUENCE: str(sequence),
        MSG_ID: f"dead:{stream}:{sequence}",  # dead-lettering the same message twice stores it once
    }


def _one_line(text: str, limit: int = 500) -> str:
    """A header value: no CR/LF, bounded."""
    return " ".join(text.split())[:limit]


# -- inbox replay ------------------------------------------------------------------------------------
def parse_connect_event(data: bytes) -> tuple[str, str] | None:
    """``(conn, user)`` from a ``client.connect`` event, or None for an anonymous or unreadable one."""
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict):
        return None
    conn, user = event.get("conn"), event.get("user")
    if not isinstance(conn, str) or not isinstance(user, str):
        return None
    try:
        validate_user_id(user)
        Subjects().conn(conn)
    except InvalidName:
        return None
    return conn, user


def expires_header(headers: dict[str, str] | None) -> float | None:
    raw = (headers or {}).get(H_EXPIRES)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        return None


# -- client requests: "notify.self" ------------------------------------------------------------------
SELF_EVENT = "notify.self"  # a client's request("notify.self", {...}) arrives on client.event.notify.self
SELF_ID_PREFIX = "self-"


class SelfRefusal(StrEnum):
    """Why a client's ``notify.self`` request is refused (the ``error`` of the reply, a metric label)."""

    ANONYMOUS = "anonymous"
    TOO_LARGE = "too_large"
    INVALID_REQUEST = "invalid_request"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True, slots=True)
class SelfRequest:
    user: str
    payload: Any
    ttl: float | None


@dataclass(frozen=True, slots=True)
class Refused:
    error: SelfRefusal
    message: str
    retry_after: float | None = None

    def reply(self) -> bytes:
        body: dict[str, Any] = {"error": self.error.value, "message": self.message}
        if self.retry_after is not None:
            body["retry_after"] = round(self.retry_after, 1)
        return orjson.dumps(body)


def parse_self_request(user: str | None, data: bytes, max_bytes: int) -> SelfRequest | Refused:
    """A client's ``notify.self`` request: ``user`` is the gateway's ``Prism-User`` header (None when the
    connection is anonymous), ``data`` the JSON of the event's ``data``: ``{"payload": <any>, "ttl"?: s}``
    (``null`` or ``{}`` send a ``null`` payload)."""
    if user is None:
        return Refused(SelfRefusal.ANONYMOUS, "connect with a user to send yourself a notification")
    try:
        validate_user_id(user)
    except InvalidName as exc:
        return Refused(SelfRefusal.ANONYMOUS, f"the connection's user id is not usable: {exc}")
    if len(data) > max_bytes:
        return Refused(SelfRefusal.TOO_LARGE, f"request is {len(data)} bytes; the limit is {max_bytes}")
    try:
        body = orjson.loads(data) if data else None
    except orjson.JSONDecodeError as exc:
        return Refused(SelfRefusal.INVALID_REQUEST, f"request is not valid JSON: {exc}")
    if body is None:
        body = {}
    if not isinstance(body, dict):
        found = type(body).__name__
        return Refused(
            SelfRefusal.INVALID_REQUEST, f'data must be an object like {{"payload": ...}}, got {found}'
        )
    ttl = body.get("ttl")
    if ttl is not None and not (
        isinstance(ttl, int | float) and not isinstance(ttl, bool) and 0 < ttl < math.inf
    ):
        return Refused(
            SelfRefusal.INVALID_REQUEST, f'"ttl" must be a positive number of seconds, got {ttl!r:.50}'
        )
    return SelfRequest(user, body.get("payload"), None if ttl is None else float(ttl))


class SelfLimiter:
    """Per-user token buckets for ``notify.self``: ``per_minute`` a minute, bursts of ``burst``. ``now`` is
    a monotonic clock in seconds. At most ``max_users`` buckets are kept: full ones (the same as a new
    one) are forgotten first, then the oldest."""

    def __init__(self, per_minute: float, burst: int, max_users: int = 10_000) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_users = max_users
        self._buckets: dict[str, tuple[float, float]] = {}  # user -> (tokens, stamp)

    def take(self, user: str, now: float) -> float:
        """Spend one of ``user``'s tokens and return 0, or return the seconds until one is available."""
        tokens, stamp = self._buckets.pop(user, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - stamp) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[user] = (tokens, now)  # re-inserted: dict order is least recently used first
        if len(self._buckets) > self.max_users:
            self._forget(now)
        return wait

    def _forget(self, now: float) -> None:
        full = [u for u, (t, s) in self._buckets.items() if t + (now - s) * self.rate >= self.burst]
        for user in full:
            del self._buckets[user]
        while len(self._buckets) > self.max_users:
            del self._buckets[next(iter(self._buckets))]

    def __len__(self) -> int:
        return len(self._buckets)


def self_notification(request: SelfRequest, notification_id: str) -> bytes:
    """The body published on ``notify.user.<user>`` for a ``notify.self`` request."""
    body: dict[str, Any] = {"id": notification_id, "payload": request.payload}
    if request.ttl is not None:
        body["ttl"] = request.ttl
    return orjson.dumps(body)
