"""HTTP backends: what the routes file says, which backend takes what, what is sent and what answers
mean. No sockets, no clock, no event loop: :mod:`gateway.io.http_backends` does the I/O.

A backend is an HTTP service that gets, for the WebSocket routes it serves,

- ``connect_url``: one ``POST`` per new connection, before its welcome; the answer allows or denies it
  and may give it a user, rooms and claims (at most one backend per route may decide connects);
- ``event_url``: one ``POST`` per client event whose name matches ``events``; for a request (an event with
  ``ref``) the response body is the client's reply;
- ``disconnect_url``: one ``POST`` per closed connection (a notification: its answer is ignored);
- ``poll_url``: polled by each node for messages to its own connections of those routes (the first
  design's polling mode), every ``poll_interval`` seconds while the last poll brought nothing.

Events that match no HTTP backend go to NATS as always. docs/http-backends.md is the user's manual.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from gateway.core.framing import fit_close_reason
from gateway.core.permissions import Pattern
from gateway.core.retry import Attempt, Outcome, RetryPolicy
from shared.backoff import Backoff
from shared.close_codes import CloseCode
from shared.errors import InvalidName
from shared.frames import ErrorCode
from shared.subjects import validate_room, validate_token, validate_user_id

MIN_SECRET_BYTES = 32
MAX_CLAIMS_BYTES = 16384  # claims travel with every later call for the connection: keep them small
MAX_ERROR_TEXT = 200  # characters of a backend's error body shown to a client
_KEYS = frozenset(
    {
        "name",
        "routes",
        "connect_url",
        "event_url",
        "disconnect_url",
        "events",
        "idempotent_events",
        "timeout",
        "retries",
        "retry_backoff",
        "max_concurrency",
        "max_queue",
        "keepalive",
        "secret_env",
        "unsigned",
        "forward_headers",
        "poll_url",
        "poll_interval",
    }
)
MAX_POLL_MESSAGES = 10_000  # messages one poll answer may carry


class BackendConfigError(ValueError):
    """The routes file cannot be used; the message names the backend and the key."""


@dataclass(frozen=True, slots=True)
class HttpBackend:
    """One ``[[backend]]`` of the routes file, validated."""

    name: str
    routes: tuple[str, ...]  # the WebSocket routes it serves
    connect_url: str = ""
    event_url: str = ""
    disconnect_url: str = ""
    events: tuple[Pattern, ...] = ()
    idempotent_events: tuple[Pattern, ...] = ()
    timeout: float = 5.0  # seconds for one attempt
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    max_concurrency: int = 64  # calls in flight from one node
    max_queue: int = 1024  # calls waiting for a free slot, beyond which a call fails at once
    keepalive: float = 4.0  # seconds an idle pooled connection is kept (under the backend's own timeout)
    secrets: tuple[bytes, ...] = field(default=(), repr=False)
    forward_headers: tuple[str, ...] = ()  # upgrade request headers passed to connect_url
    poll_url: str = ""
    poll_interval: float = 1.0  # seconds between polls that brought nothing (0: poll again at once)

    def handles(self, event: str) -> bool:
        return bool(self.event_url) and any(p.matches(event, True) for p in self.events)

    def idempotent(self, event: str) -> bool:
        return any(p.matches(event, True) for p in self.idempotent_events)


def _problem(where: str, message: str) -> BackendConfigError:
    return BackendConfigError(f"{where}: {message}")


def _url(where: str, key: str, value: object) -> str:
    if value in (None, ""):
        return ""
    if not isinstance(value, str):
        raise _problem(where, f"{key} must be a string URL")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
        raise _problem(where, f"{key} must be an http:// or https:// URL, got {value!r:.80}")
    return value


def _strings(where: str, key: str, value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _problem(where, f"{key} must be a list of strings")
    return list(value)


def _patterns(where: str, key: str, value: object) -> tuple[Pattern, ...]:
    try:
        return tuple(Pattern.parse(p, dotted=True) for p in _strings(where, key, value))
    except ValueError as exc:
        raise _problem(where, f"{key}: {exc}") from None


def _number(where: str, key: str, value: object, low: float, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise _problem(where, f"{key} must be a number from {low:g} to {high:g}, got {value!r:.40}")
    return float(value)


def _integer(where: str, key: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _problem(where, f"{key} must be a whole number from {low} to {high}, got {value!r:.40}")
    return value


def _secrets(where: str, entry: Mapping[str, Any], environ: Mapping[str, str]) -> tuple[bytes, ...]:
    env = entry.get("secret_env")
    unsigned = entry.get("unsigned", False)
    if not isinstance(unsigned, bool):
        raise _problem(where, "unsigned must be true or false")
    if env is None:
        if not unsigned:
            raise _problem(
                where,
                "set secret_env (an environment variable holding the signing secret) or unsigned = true",
            )
        return ()
    if unsigned:
        raise _problem(where, "secret_env and unsigned = true contradict each other")
    if not isinstance(env, str) or not env:
        raise _problem(where, "secret_env must name an environment variable")
    raw = environ.get(env, "")
    secrets = [s.strip().encode() for s in raw.split(",") if s.strip()]
    if not secrets:
        raise _problem(where, f"secret_env names {env}, which is not set or empty")
    short = [len(s) for s in secrets if len(s) < MIN_SECRET_BYTES]
    if short:
        raise _problem(where, f"{env} holds a secret of {short[0]} bytes; at least {MIN_SECRET_BYTES} needed")
    return tuple(secrets)


def parse_backend(
    entry: object, index: int, ws_routes: Sequence[str], environ: Mapping[str, str]
) -> HttpBackend:
    """One ``[[backend]]`` table; :class:`BackendConfigError` naming what is wrong."""
    where = f"backend {index + 1}"
    if not isinstance(entry, dict):
        raise _problem(where, "must be a table")
    if isinstance(entry.get("name"), str):
        where = f"backend {entry['name']!r}"
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise _problem(where, f"unknown key {unknown[0]!r}; known keys: {', '.join(sorted(_KEYS))}")
    try:
        name = validate_token("backend name", entry.get("name"), 64)
    except InvalidName as exc:
        raise _problem(where, str(exc)) from None
    routes = tuple(_strings(where, "routes", entry.get("routes", list(ws_routes))))
    for route in routes:
        if route not in ws_routes:
            raise _problem(where, f"route {route!r} is not one of PRISM_ROUTES {list(ws_routes)}")
    kinds = ("connect_url", "event_url", "disconnect_url", "poll_url")
    urls = {key: _url(where, key, entry.get(key)) for key in kinds}
    if not any(urls.values()):
        raise _problem(where, "needs at least one of connect_url, event_url, disconnect_url, poll_url")
    events = _patterns(where, "events", entry.get("events", []))
    if urls["event_url"] and not events:
        raise _problem(where, 'event_url needs events, the event names it takes (e.g. ["chat.*"])')
    if events and not urls["event_url"]:
        raise _problem(where, "events are listed but there is no event_url to send them to")
    retries = _integer(where, "retries", entry.get("retries", 2), 0, 10)
    backoff = _number(where, "retry_backoff", entry.get("retry_backoff", 0.1), 0.001, 60)
    headers = _strings(where, "forward_headers", entry.get("forward_headers", []))
    if any(not h or any(c.isspace() or c == ":" for c in h) for h in headers):
        raise _problem(where, "forward_headers must be header names")
    return HttpBackend(
        name=name,
        routes=routes,
        connect_url=urls["connect_url"],
        event_url=urls["event_url"],
        disconnect_url=urls["disconnect_url"],
        events=events,
        idempotent_events=_patterns(where, "idempotent_events", entry.get("idempotent_events", [])),
        timeout=_number(where, "timeout", entry.get("timeout", 5.0), 0.001, 300),
        retry=RetryPolicy(retries, Backoff(base=backoff, cap=max(backoff, 2.0))),
        max_concurrency=_integer(where, "max_concurrency", entry.get("max_concurrency", 64), 1, 100_000),
        max_queue=_integer(where, "max_queue", entry.get("max_queue", 1024), 0, 1_000_000),
        keepalive=_number(where, "keepalive", entry.get("keepalive", 4.0), 0, 3600),
        secrets=_secrets(where, entry, environ),
        forward_headers=tuple(headers),
        poll_url=urls["poll_url"],
        poll_interval=_number(where, "poll_interval", entry.get("poll_interval", 1.0), 0, 3600),
    )


def parse_backends(
    document: Mapping[str, Any], ws_routes: Sequence[str], environ: Mapping[str, str]
) -> tuple[HttpBackend, ...]:
    """Every backend of a parsed routes file (``{"backend": [...]}``), checked as a whole."""
    unknown = sorted(set(document) - {"backend"})
    if unknown:
        raise BackendConfigError(f"unknown top-level key {unknown[0]!r}; expected [[backend]] tables")
    entries = document.get("backend", [])
    if not isinstance(entries, list) or not entries:
        raise BackendConfigError("expected at least one [[backend]] table")
    backends = tuple(parse_backend(e, i, ws_routes, environ) for i, e in enumerate(entries))
    names = [b.name for b in backends]
    if len(set(names)) != len(names):
        raise BackendConfigError(
            f"backend names must be unique; {sorted(n for n in names if names.count(n) > 1)[0]!r} repeats"
        )
    for route in ws_routes:
        deciding = [b.name for b in backends if b.connect_url and route in b.routes]
        if len(deciding) > 1:
            raise BackendConfigError(
                f"route {route!r}: only one backend may have a connect_url; found {deciding}"
            )
    return backends


class HttpRouting:
    """Which backend takes a route's connects, events and disconnects."""

    def __init__(self, backends: Sequence[HttpBackend]) -> None:
        self.backends = tuple(backends)
        self._connect: dict[str, HttpBackend] = {}
        self._events: dict[str, tuple[HttpBackend, ...]] = {}
        self._disconnect: dict[str, tuple[HttpBackend, ...]] = {}
        routes = {r for b in backends for r in b.routes}
        for route in routes:
            serving = [b for b in backends if route in b.routes]
            for backend in serving:
                if backend.connect_url:
                    self._connect[route] = backend
            self._events[route] = tuple(b for b in serving if b.event_url)
            self._disconnect[route] = tuple(b for b in serving if b.disconnect_url)

    def connect(self, route: str) -> HttpBackend | None:
        return self._connect.get(route)

    def event(self, route: str, event: str) -> HttpBackend | None:
        """The first backend (in file order) serving ``route`` whose ``events`` match; None: NATS."""
        for backend in self._events.get(route, ()):
            if backend.handles(event):
                return backend
        return None

    def disconnect(self, route: str) -> tuple[HttpBackend, ...]:
        return self._disconnect.get(route, ())

    def polls(self) -> list[tuple[HttpBackend, str]]:
        """(backend, route) for every route a backend polls for."""
        return [(b, route) for b in self.backends if b.poll_url for route in b.routes]


# -- what is sent -------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ConnInfo:
    """What every call says about the connection."""

    conn: str
    user: str | None
    node: str
    route: str
    remote: str

    def fields(self) -> dict[str, Any]:
        return {
            "conn": self.conn,
            "user": self.user,
            "node": self.node,
            "route": self.route,
            "remote": self.remote,
        }


def connect_body(
    call_id: str,
    info: ConnInfo,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    token_claims: Mapping[str, Any] | None,
) -> bytes:
    body: dict[str, Any] = {"type": "connect", "id": call_id, **info.fields(), "query": dict(query)}
    body["headers"] = dict(headers)
    if token_claims is not None:
        body["token_claims"] = dict(token_claims)
    return orjson.dumps(body)


def event_body(call_id: str, info: ConnInfo, claims: bytes, event: str, request: bool, data: bytes) -> bytes:
    """``data`` and ``claims`` are JSON already (the event's data, the connection's claims): embedded."""
    body = {
        "type": "event",
        "id": call_id,
        "event": event,
        "request": request,
        **info.fields(),
        "claims": orjson.Fragment(claims),
        "data": orjson.Fragment(data),
    }
    return orjson.dumps(body)


def disconnect_body(call_id: str, info: ConnInfo, claims: bytes, details: Mapping[str, Any]) -> bytes:
    """``details``: what ``client.disconnect`` carries besides the connection (code, reason, rooms, times)."""
    return orjson.dumps(
        {"type": "disconnect", "id": call_id, **info.fields(), "claims": orjson.Fragment(claims), **details}
    )


def poll_body(call_id: str, node: str, route: str, cursor: str | None, conns: list[str]) -> bytes:
    """A poll: which node asks, for which route's connections, and the cursor of the last answer."""
    body = {"type": "poll", "id": call_id, "node": node, "route": route, "cursor": cursor, "conns": conns}
    return orjson.dumps(body)


# -- what answers mean ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Allow:
    """Open the connection, as this user (None: as it came), in these rooms, with these claims (JSON)."""

    user: str | None = None
    rooms: tuple[str, ...] = ()
    claims: bytes = b"{}"


@dataclass(frozen=True, slots=True)
class Deny:
    """Close the connection before its welcome with ``code`` and ``reason``."""

    code: int
    reason: str


class BadAnswer(ValueError):
    """A backend's answer that does not follow the contract; the message says how."""


def error_text(body: bytes) -> str:
    """A backend's error body as one short line for a client: a JSON ``message``/``error``/``reason``
    string if there is one, else the text itself."""
    text = body.decode(errors="replace")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        for key in ("message", "reason", "error"):
            if isinstance(parsed.get(key), str):
                text = parsed[key]
                break
    line = " ".join(text.split())
    return line[:MAX_ERROR_TEXT]


def connect_decision(status: int, body: bytes, max_rooms: int) -> Allow | Deny:
    """What a connect backend's answer decides; :class:`BadAnswer` if it breaks the contract. Call it
    only for statuses 2xx, 401 and 403 (anything else means the backend is unavailable)."""
    if status == 401:
        return Deny(CloseCode.UNAUTHORIZED, fit_close_reason(error_text(body) or "unauthorized"))
    if status == 403:
        return Deny(CloseCode.FORBIDDEN, fit_close_reason(error_text(body) or "forbidden"))
    if not 200 <= status < 300:
        raise BadAnswer(f"status {status} is not an answer")
    if not body.strip():
        return Allow()
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadAnswer(f"not JSON: {exc}") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("allow"), bool):
        raise BadAnswer('expected a JSON object with "allow": true or false')
    if not answer["allow"]:
        code = answer.get("code", CloseCode.FORBIDDEN)
        if isinstance(code, bool) or not isinstance(code, int) or not (4000 <= code <= 4999 or code == 1008):
            raise BadAnswer("code must be 1008 or 4000-4999")
        reason = answer.get("reason", "forbidden")
        if not isinstance(reason, str):
            raise BadAnswer("reason must be a string")
        return Deny(code, fit_close_reason(reason))
    try:
        user = None if answer.get("user") is None else validate_user_id(answer["user"])
        rooms = answer.get("rooms", [])
        if not isinstance(rooms, list):
            raise BadAnswer("rooms must be a list of room names")
        rooms = tuple(dict.fromkeys(validate_room(r) for r in rooms))
    except InvalidName as exc:
        raise BadAnswer(str(exc)) from None
    if len(rooms) > max_rooms:
        raise BadAnswer(f"{len(rooms)} rooms; a connection may be in {max_rooms}")
    claims = answer.get("claims", {})
    if not isinstance(claims, dict):
        raise BadAnswer("claims must be a JSON object")
    encoded = orjson.dumps(claims)
    if len(encoded) > MAX_CLAIMS_BYTES:
        raise BadAnswer(f"claims are {len(encoded)} bytes of JSON; the limit is {MAX_CLAIMS_BYTES}")
    return Allow(user, rooms, encoded)


@dataclass(frozen=True, slots=True)
class PollAnswer:
    """Messages to deliver (conn id, payload, binary) and the cursor to send with the next poll."""

    messages: tuple[tuple[str, bytes, bool], ...] = ()
    cursor: str | None = None


def poll_answer(status: int, body: bytes, cursor: str | None) -> PollAnswer:
    """What a poll's 2xx answer asks to deliver: ``{"messages":[{"conn":..,"data":..}|{"conn":..,
    "data_base64":..}],"cursor":..}`` or an empty body (nothing, same cursor). :class:`BadAnswer` if it
    breaks the contract; then nothing of it is delivered."""
    if not 200 <= status < 300:
        raise BadAnswer(f"status {status} is not an answer")
    if not body.strip():
        return PollAnswer((), cursor)
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadAnswer(f"not JSON: {exc}") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("messages", []), list):
        raise BadAnswer('expected {"messages": [{"conn": "<id>", "data": "..."}], "cursor": "..."}')
    entries = answer.get("messages", [])
    if len(entries) > MAX_POLL_MESSAGES:
        raise BadAnswer(f"{len(entries)} messages; one answer may carry {MAX_POLL_MESSAGES}")
    next_cursor = answer.get("cursor", cursor)
    if next_cursor is not None and not isinstance(next_cursor, str):
        raise BadAnswer("cursor must be a string")
    messages = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("conn"), str):
            raise BadAnswer(f"messages[{index}] needs conn, a conn id")
        text, encoded = entry.get("data"), entry.get("data_base64")
        if isinstance(text, str) and encoded is None:
            messages.append((entry["conn"], text.encode(), False))
        elif isinstance(encoded, str) and text is None:
            try:
                messages.append((entry["conn"], base64.b64decode(encoded, validate=True), True))
            except binascii.Error:
                raise BadAnswer(f"messages[{index}].data_base64 is not base64") from None
        else:
            raise BadAnswer(f"messages[{index}] needs data (text) or data_base64 (binary), not both")
    return PollAnswer(tuple(messages), next_cursor)


def client_error(
    backend: HttpBackend, event: str, attempt: Attempt, body: bytes, detail: str = ""
) -> tuple[ErrorCode, str]:
    """The error frame a client gets when an event or request to ``backend`` failed with ``attempt``."""
    name = backend.name
    outcome = attempt.outcome
    if outcome is Outcome.TIMEOUT:
        return ErrorCode.TIMEOUT, f"no answer from HTTP backend {name!r} to {event!r} in {backend.timeout:g}s"
    if outcome is Outcome.BUSY:
        return (
            ErrorCode.BACKEND_UNAVAILABLE,
            f"HTTP backend {name!r} is busy: {backend.max_concurrency} calls in flight, "
            f"{backend.max_queue} waiting",
        )
    if outcome in (Outcome.REFUSED, Outcome.BROKEN):
        why = f": {detail}" if detail else ""
        return ErrorCode.BACKEND_UNAVAILABLE, f"cannot reach HTTP backend {name!r}{why}"
    status = attempt.status
    if status == 403:
        return ErrorCode.FORBIDDEN, error_text(body) or f"HTTP backend {name!r} refused {event!r}"
    if status in (408, 429, 502, 503, 504):
        return ErrorCode.BACKEND_UNAVAILABLE, f"HTTP backend {name!r} answered {status}"
    if 400 <= status < 500:
        text = error_text(body)
        return ErrorCode.BACKEND_ERROR, f"HTTP backend {name!r} refused {event!r} ({status})" + (
            f": {text}" if text else ""
        )
    return ErrorCode.BACKEND_ERROR, f"HTTP backend {name!r} failed on {event!r} ({status})"
