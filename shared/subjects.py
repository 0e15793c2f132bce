"""NATS subject names and the validation that keeps client-chosen names from changing their meaning.

Every subject Prism uses is built here, from one :class:`Subjects` object that carries the deployment's
optional prefix, so that a prefix applies to every subject alike. Names that end up inside a subject or a
KV key (user ids, room names, conn ids, event names) are checked by the ``validate_*`` functions: only
``[A-Za-z0-9_=-]`` inside a token (the characters both NATS subjects and KV keys accept without escaping),
bounded lengths, and never a wildcard, whitespace or an empty token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.errors import InvalidName

MAX_ID_LENGTH = 128
MAX_EVENT_LENGTH = 128
MAX_EVENT_TOKENS = 8
MAX_NODE_ID_LENGTH = 32

_TOKEN = r"[A-Za-z0-9_=-]"
_TOKEN_RE = re.compile(rf"{_TOKEN}+")
_NODE_RE = re.compile(rf"{_TOKEN}{{1,{MAX_NODE_ID_LENGTH}}}")
_CONN_RE = re.compile(rf"{_TOKEN}{{1,{MAX_NODE_ID_LENGTH}}}\.{_TOKEN}{{1,32}}")
_PREFIX_RE = re.compile(rf"(?:{_TOKEN}+\.)*")


def _describe_bad(kind: str, value: object, max_length: int) -> str:
    if not isinstance(value, str):
        return f"{kind} must be a string, got {type(value).__name__}"
    if not value:
        return f"{kind} must not be empty"
    if len(value) > max_length:
        return f"{kind} is {len(value)} characters long; the limit is {max_length}"
    bad = sorted({c for c in value if not _TOKEN_RE.fullmatch(c)})
    shown = ", ".join(repr(c) for c in bad[:5])
    return f"{kind} may contain only letters, digits, '_', '-' and '='; found {shown}"


def validate_token(kind: str, value: object, max_length: int = MAX_ID_LENGTH) -> str:
    """Return ``value`` if it is one safe subject token, else raise :class:`InvalidName` saying why."""
    if isinstance(value, str) and 0 < len(value) <= max_length and _TOKEN_RE.fullmatch(value):
        return value
    raise InvalidName(_describe_bad(kind, value, max_length))


def validate_user_id(value: object) -> str:
    return validate_token("user id", value)


def validate_room(value: object) -> str:
    return validate_token("room name", value)


def validate_node_id(value: object) -> str:
    return validate_token("node id", value, MAX_NODE_ID_LENGTH)


def validate_conn_id(value: object) -> str:
    """A conn id is ``<node_id>.<suffix>``: two tokens, so a node can subscribe ``conn.<node_id>.*``."""
    if isinstance(value, str) and _CONN_RE.fullmatch(value):
        return value
    raise InvalidName(f"conn id must look like '<node>.<id>' with safe characters, got {value!r:.80}")


def validate_event(value: object) -> str:
    """An event name is a dotted path of safe tokens, e.g. ``chat.send``: no empty token, no wildcard."""
    if not isinstance(value, str) or not value:
        return _raise(f"event name must be a non-empty string, got {value!r:.80}")
    if len(value) > MAX_EVENT_LENGTH:
        return _raise(f"event name is {len(value)} characters long; the limit is {MAX_EVENT_LENGTH}")
    tokens = value.split(".")
    if len(tokens) > MAX_EVENT_TOKENS:
        return _raise(f"event name has {len(tokens)} dot-separated parts; the limit is {MAX_EVENT_TOKENS}")
    for token in tokens:
        if not _TOKEN_RE.fullmatch(token):
            return _raise(
                f"event name {value!r:.80} must be dot-separated parts of letters, digits, '_', '-', '='"
            )
    return value


def validate_prefix(value: str) -> str:
    """A deployment prefix is empty or dotted tokens ending in '.', e.g. ``acme.``."""
    if _PREFIX_RE.fullmatch(value):
        return value
    raise InvalidName(f"subject prefix must be empty or tokens ending with '.', e.g. 'acme.', got {value!r}")


def _raise(message: str) -> str:
    raise InvalidName(message)


# -- user ids from outside (JWT subjects) ----------------------------------------------------------------
# Identity providers hand out subjects like ``auth0|5f1c...`` or ``alice@example.com`` that are not subject
# tokens. Every character outside ``[A-Za-z0-9_-]`` (``=`` included) becomes ``=XX`` per UTF-8 byte, upper-
# case hex, so the result is one safe token, ids that are already safe (and have no ``=``) stay as they
# are, and the mapping can be undone. Backends compute ``user.<encode_user_id(sub)>`` the same way.
_PLAIN_ID_RE = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPE_RE = re.compile(r"=([0-9A-F]{2})")
_HEX = "0123456789ABCDEF"


def encode_user_id(value: str) -> str:
    """The subject-safe user id for an external id ``value``; :class:`InvalidName` if ``value`` is empty,
    not UTF-8 encodable (lone surrogates) or longer than :data:`MAX_ID_LENGTH` once encoded."""
    if not isinstance(value, str) or not value:
        raise InvalidName("user id must be a non-empty string")
    if _PLAIN_ID_RE.fullmatch(value):
        return validate_user_id(value)
    try:
        encoded = "".join(
            ch if _PLAIN_ID_RE.fullmatch(ch) else "".join(f"={b:02X}" for b in ch.encode()) for ch in value
        )
    except UnicodeEncodeError:
        raise InvalidName("user id is not valid Unicode (it holds a lone surrogate)") from None
    if len(encoded) > MAX_ID_LENGTH:
        raise InvalidName(
            f"user id is {len(encoded)} characters long once encoded; the limit is {MAX_ID_LENGTH}"
        )
    return encoded


def decode_user_id(value: str) -> str:
    """The external id that :func:`encode_user_id` turned into ``value``. Raises :class:`InvalidName` for a
    value no encoding produces: not a user id, a ``=`` not followed by two upper-case hex digits, escaped
    bytes that are not UTF-8, or an escape of a character that needs none."""
    validate_user_id(value)
    if "=" not in value:
        return value
    raw = bytearray()
    i = 0
    while i < len(value):
        match = _ESCAPE_RE.match(value, i)
        if match is not None:
            raw.append(_HEX.index(match[1][0]) * 16 + _HEX.index(match[1][1]))
            i = match.end()
        elif value[i] == "=":
            raise InvalidName(f"user id {value!r:.80} has a '=' not followed by two upper-case hex digits")
        else:
            raw += value[i].encode()
            i += 1
    try:
        decoded = raw.decode()
    except UnicodeDecodeError:
        raise InvalidName(f"user id {value!r:.80} escapes bytes that are not UTF-8") from None
    if encode_user_id(decoded) != value:
        raise InvalidName(f"user id {value!r:.80} escapes characters that need no escaping")
    return decoded


@dataclass(frozen=True, slots=True)
class Subjects:
    """Builds every subject Prism uses. ``prefix`` (e.g. ``"acme."``) is prepended to all of them."""

    prefix: str = ""

    def __post_init__(self) -> None:
        validate_prefix(self.prefix)

    def tail_offset(self, head: str) -> int:
        """Where the name starts in every subject ``<prefix><head><name>``, so that hot paths take the
        name as ``subject[offset:]``: ``Subjects("acme.").tail_offset("conn.")`` is 10."""
        return len(self.prefix) + len(head)

    # Delivery (backend -> clients); fixed contract.
    def conn(self, conn_id: str) -> str:
        return f"{self.prefix}conn.{validate_conn_id(conn_id)}"

    def user(self, user_id: str) -> str:
        return f"{self.prefix}user.{validate_user_id(user_id)}"

    def room(self, room: str) -> str:
        return f"{self.prefix}room.{validate_room(room)}"

    @property
    def broadcast(self) -> str:
        """Every open connection on every node."""
        return f"{self.prefix}broadcast"

    def node_conns(self, node_id: str) -> str:
        """The one wildcard a node subscribes for every ``conn.`` delivery it owns."""
        return f"{self.prefix}conn.{validate_node_id(node_id)}.*"

    # Recovery (docs/protocol.md, "Recovery"): the history streams republish every stored ``room.`` and
    # ``user.`` message here, with its sequence, for the nodes that have recovering members.
    def recovery_room(self, room: str) -> str:
        return f"{self.prefix}recovery.room.{validate_room(room)}"

    def recovery_user(self, user_id: str) -> str:
        return f"{self.prefix}recovery.user.{validate_user_id(user_id)}"

    @property
    def recovery_republish(self) -> tuple[str, str]:
        """(source, destination) of the history streams' republish: every stored subject ``X`` (under
        the prefix) is republished on ``recovery.X``."""
        return f"{self.prefix}>", f"{self.prefix}recovery.>"

    # Client -> backends.
    def client_event(self, event: str) -> str:
        return f"{self.prefix}client.event.{validate_event(event)}"

    @property
    def client_message(self) -> str:
        return f"{self.prefix}client.message"

    @property
    def client_connect(self) -> str:
        return f"{self.prefix}client.connect"

    @property
    def client_disconnect(self) -> str:
        return f"{self.prefix}client.disconnect"

    # Control (backend -> gateway).
    def control_conn(self, conn_id: str, action: str) -> str:
        return f"{self.prefix}control.conn.{validate_conn_id(conn_id)}.{validate_token('action', action)}"

    def control_user(self, user_id: str, action: str) -> str:
        return f"{self.prefix}control.user.{validate_user_id(user_id)}.{validate_token('action', action)}"

    def node_control_conns(self, node_id: str) -> str:
        return f"{self.prefix}control.conn.{validate_node_id(node_id)}.*.*"

    @property
    def control_users(self) -> str:
        return f"{self.prefix}control.user.*.*"

    # Presence queries (anyone -> any node, queue group ``prism-presence``).
    def presence_user(self, user_id: str) -> str:
        return f"{self.prefix}presence.user.{validate_user_id(user_id)}"

    def presence_room(self, room: str) -> str:
        return f"{self.prefix}presence.room.{validate_room(room)}"

    @property
    def presence_online(self) -> str:
        return f"{self.prefix}presence.online"

    @property
    def presence_cluster(self) -> str:
        return f"{self.prefix}presence.cluster"

    @property
    def presence_queries(self) -> str:
        return f"{self.prefix}presence.>"

    # Node liveness (gateway <-> gateway, core NATS; anyone may listen).
    def node_beat(self, node_id: str) -> str:
        """Where node ``node_id`` publishes its heartbeat."""
        return f"{self.prefix}node.{validate_node_id(node_id)}.beat"

    @property
    def node_beats(self) -> str:
        return f"{self.prefix}node.*.beat"

    def node_ping(self, node_id: str) -> str:
        """A request answered by node ``node_id`` while it runs ("no responders" once it is gone)."""
        return f"{self.prefix}node.{validate_node_id(node_id)}.ping"

    def node_swept(self, node_id: str) -> str:
        """Announces that ``node_id``'s presence keys were swept (it died, or was cut off too long)."""
        return f"{self.prefix}node.{validate_node_id(node_id)}.swept"

    @property
    def nodes_swept(self) -> str:
        return f"{self.prefix}node.*.swept"

    # Authorization callout (gateway -> a backend), when PRISM_AUTHZ_SUBJECT is set.
    def authz(self, subject: str) -> str:
        """The callout subject ``subject`` (dot-separated tokens, e.g. ``authz.prism``) under the prefix."""
        validate_prefix(subject + ".")
        return f"{self.prefix}{subject}"

    # Notifications (backends -> the notification service, through the JetStream stream NOTIFICATIONS).
    def notify_user(self, user_id: str) -> str:
        return f"{self.prefix}notify.user.{validate_user_id(user_id)}"

    def notify_room(self, room: str) -> str:
        return f"{self.prefix}notify.room.{validate_room(room)}"

    @property
    def notify_broadcast(self) -> str:
        return f"{self.prefix}notify.broadcast"

    @property
    def notify_inputs(self) -> tuple[str, str, str]:
        """The subjects of the NOTIFICATIONS stream (a backend publishes on these)."""
        return (f"{self.prefix}notify.user.*", f"{self.prefix}notify.room.*", self.notify_broadcast)

    def notify_inbox(self, user_id: str) -> str:
        """An offline user's inbox (the service's own stream NOTIFICATIONS_INBOX)."""
        return f"{self.prefix}notify.inbox.{validate_user_id(user_id)}"

    @property
    def notify_inboxes(self) -> str:
        return f"{self.prefix}notify.inbox.*"

    def notify_dead(self, original: str) -> str:
        """Where a notification that arrived on ``original`` (a ``notify.`` subject) is dead-lettered:
        ``notify.user.alice`` -> ``notify.dead.user.alice``."""
        return f"{self.prefix}notify.dead.{self.strip(original).removeprefix('notify.')}"

    @property
    def notify_dead_letters(self) -> str:
        return f"{self.prefix}notify.dead.>"

    def strip(self, subject: str) -> str:
        """The subject without the deployment prefix."""
        return subject[len(self.prefix) :] if subject.startswith(self.prefix) else subject


CONTROL_ACTIONS = ("close", "join", "leave")
PRESENCE_QUEUE = "prism-presence"
MAX_ONLINE_QUERY_USERS = 100
