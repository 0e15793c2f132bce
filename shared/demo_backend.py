"""The demo backend: a small, real NATS backend that answers the client events the README, the docs, the
web console and the load tests send (``prism demo-backend``; ``prism dev`` runs one).

It is an ordinary Prism backend, built only on NATS and :class:`shared.backend.PrismBackend`, and it
touches no socket. Each subject is handled in the queue group ``prism-demo``:

    client.event.echo          a request: the reply is the request's data, byte for byte
    client.event.chat.send     {"room","text"}: published to room.<room> as a chat message, kept in
                               the room's history; a request is answered {"id","room"}
    client.event.chat.history  {"room"}: the reply is {"room","messages"}, the room's last messages

A request it cannot take is answered ``{"error":"invalid_request","message":...}``; an event it cannot
take (no ``ref``, so nobody waits for an answer) is dropped. It lives in ``shared/`` next to the SDK it
demonstrates because it is neither part of a gateway node nor of the notification service, and a
backend, like any other service, only speaks NATS. It is a demonstration, not a chat service: the
history is in this process's memory (lost when it stops, and split between instances if you run
several), and it does not check that a sender is in the room it writes to (a real one would, from
the token's claims or the presence registry). See docs/protocol.md, "The demo backend".
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from shared import headers
from shared.config import setting
from shared.errors import ConfigError, InvalidName
from shared.lifecycle import run_until_signalled
from shared.nats_auth import NatsSettings
from shared.subjects import Subjects, validate_prefix, validate_room

if TYPE_CHECKING:  # nats-py is imported when the backend starts: the prism command's parser reads
    from nats.aio.msg import Msg  # DemoConfig, and every other subcommand should not pay for nats-py

    from shared.backend import PrismBackend
    from shared.nats_connection import NatsConnection

log = logging.getLogger("prism.demo")

QUEUE = "prism-demo"
ECHO = "echo"
CHAT_SEND = "chat.send"
CHAT_HISTORY = "chat.history"
EVENTS = (ECHO, CHAT_SEND, CHAT_HISTORY)
MAX_TEXT = 1000  # characters of one chat message
HISTORY_PER_ROOM = 50  # messages chat.history returns, the newest
HISTORY_ROOMS = 1000  # rooms whose history is kept; the least recently written is forgotten first


@dataclass(frozen=True, slots=True)
class DemoConfig(NatsSettings):
    """``prism demo-backend``'s settings: the NATS connection and prefix, named as the gateway's."""

    subject_prefix: str = setting("", "prefix for every NATS subject, e.g. 'acme.' (as the gateway's)")
    log_level: str = setting("info", "log level: debug, info, warning, error")

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.subject_prefix)

    def validate(self) -> None:
        self.nats_auth.validate()
        try:
            validate_prefix(self.subject_prefix)
        except InvalidName as exc:
            raise ConfigError(str(exc)) from None


# -- the decisions (no I/O) ------------------------------------------------------------------------------


class BadRequest(Exception):
    """A request the demo backend cannot take; ``str()`` says why, for the client."""

    def reply(self) -> bytes:
        return orjson.dumps({"error": "invalid_request", "message": str(self)})


def _object(data: bytes, example: str) -> dict[str, Any]:
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise BadRequest(f"data must be a JSON object, e.g. {example}")
    return body


def parse_room(body: dict[str, Any], example: str) -> str:
    if "room" not in body:
        raise BadRequest(f'data needs "room", the room to use, e.g. {example}')
    try:
        return validate_room(body["room"])
    except InvalidName as exc:
        raise BadRequest(str(exc)) from None


def parse_chat(data: bytes) -> tuple[str, str]:
    """The room and text of a ``chat.send`` event's data, ``{"room":"lobby","text":"hi"}``."""
    example = '{"room":"lobby","text":"hi"}'
    body = _object(data, example)
    room = parse_room(body, example)
    text = body.get("text")
    if not isinstance(text, str) or not text:
        raise BadRequest(f'data needs "text", a non-empty string, e.g. {example}')
    if len(text) > MAX_TEXT:
        raise BadRequest(f"text is {len(text)} characters long; the limit is {MAX_TEXT}")
    return room, text


def parse_history(data: bytes) -> str:
    """The room of a ``chat.history`` request's data, ``{"room":"lobby"}``."""
    example = '{"room":"lobby"}'
    return parse_room(_object(data, example), example)


def chat_message(room: str, sender: str | None, text: str, message_id: str, sent_at: str) -> dict[str, Any]:
    """What the room's members receive. It starts with ``{"type":``, never with ``{"prism":``."""
    return {"type": "chat", "id": message_id, "room": room, "from": sender, "text": text, "sent_at": sent_at}


class ChatHistory:
    """The last ``per_room`` messages of at most ``rooms`` rooms, in memory."""

    def __init__(self, per_room: int = HISTORY_PER_ROOM, rooms: int = HISTORY_ROOMS) -> None:
        self.per_room = per_room
        self.rooms = rooms
        self._messages: OrderedDict[str, deque[dict[str, Any]]] = OrderedDict()

    def add(self, room: str, message: dict[str, Any]) -> None:
        kept = self._messages.get(room)
        if kept is None:
            kept = self._messages[room] = deque(maxlen=self.per_room)
        self._messages.move_to_end(room)
        kept.append(message)
        while len(self._messages) > self.rooms:
            self._messages.popitem(last=False)

    def recent(self, room: str) -> list[dict[str, Any]]:
        """Oldest first."""
        return list(self._messages.get(room, ()))


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- the NATS shell ---------------------------------------------------------------------------------------


class DemoBackend:
    """Subscribes the three subjects (queue group :data:`QUEUE`) and answers them."""

    def __init__(self, config: DemoConfig, now: Callable[[], str] = _now_iso) -> None:
        self.config = config
        self.subjects = config.subjects
        self.history = ChatHistory()
        self.now = now
        self._bus: NatsConnection | None = None
        self._prism: PrismBackend | None = None

    async def start(self) -> None:
        from shared import nats_connection  # the connection every Prism process makes
        from shared.backend import PrismBackend

        options = nats_connection.NatsOptions(
            servers=self.config.nats_servers, name="prism-demo-backend", auth=self.config.nats_auth
        )
        self._bus = await nats_connection.connect(options)
        nc = self._bus.nc
        self._prism = PrismBackend(nc, self.subjects)
        handlers: dict[str, Callable[[Msg], Awaitable[None]]] = {
            ECHO: self._on_echo,
            CHAT_SEND: self._on_chat_send,
            CHAT_HISTORY: self._on_chat_history,
        }
        for event, handler in handlers.items():
            await nc.subscribe(self.subjects.client_event(event), queue=QUEUE, cb=handler)
        await nats_connection.flush_all(nc)  # subscribed on the server before we say ready
        log.info("demo backend ready: %s in queue group %s", ", ".join(EVENTS), QUEUE)

    async def stop(self) -> None:
        """Finish the messages already received, then close the connection (a NATS drain)."""
        if self._bus is not None:
            await self._bus.drain()
            log.info("demo backend stopped")

    async def chat_send(self, data: bytes, sender: str | None) -> bytes:
        """Publish one chat message to its room; the reply for a request."""
        assert self._prism is not None, "start() first"
        room, text = parse_chat(data)
        message = chat_message(room, sender, text, secrets.token_urlsafe(9), self.now())
        await self._prism.to_room(room, orjson.dumps(message))
        self.history.add(room, message)
        return orjson.dumps({"id": message["id"], "room": room})

    def chat_history(self, data: bytes) -> bytes:
        room = parse_history(data)
        return orjson.dumps({"room": room, "messages": self.history.recent(room)})

    async def _on_echo(self, msg: Msg) -> None:
        await _respond(msg, msg.data)

    async def _on_chat_send(self, msg: Msg) -> None:
        sender = (msg.headers or {}).get(headers.USER)
        try:
            reply = await self.chat_send(msg.data, sender)
        except BadRequest as exc:
            reply = exc.reply()
        except Exception as exc:  # NATS closed under us: the client should hear it, not wait for a timeout
            log.warning("chat.send failed: %r", exc)
            reply = orjson.dumps({"error": "unavailable", "message": f"could not publish: {exc!r:.200}"})
        await _respond(msg, reply)

    async def _on_chat_history(self, msg: Msg) -> None:
        try:
            reply = self.chat_history(msg.data)
        except BadRequest as exc:
            reply = exc.reply()
        await _respond(msg, reply)


async def _respond(msg: Msg, reply: bytes) -> None:
    """Answer ``msg`` if it is a request; an event (no reply subject) gets nothing."""
    if not msg.reply:
        return
    try:
        await msg.respond(reply)
    except Exception as exc:  # the connection is closing: the client gets the gateway's timeout
        log.debug("answering %s failed: %r", msg.subject, exc)


async def run(config: DemoConfig) -> int:
    """Run until SIGTERM/SIGINT, then drain; a second signal exits at once."""
    backend = DemoBackend(config)

    def ready() -> None:
        subjects = ", ".join(backend.subjects.client_event(event) for event in EVENTS)
        print(f"prism demo-backend ready: answering {subjects} (queue group {QUEUE})", flush=True)

    return await run_until_signalled(backend, ready)
