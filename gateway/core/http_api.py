"""The HTTP API's decisions, without sockets: batch bodies, control bodies, and the answers' shapes.

The API (``gateway/io/http_api.py``, docs/http-api.md, docs/openapi.yaml) only publishes NATS messages,
so any node answers it; what it publishes and how a reply becomes a status is decided here.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from shared.errors import InvalidName
from shared.subjects import Subjects

MAX_BATCH = 1000
TARGETS = ("conn", "user", "room", "broadcast")


class ApiRequestError(ValueError):
    """A request the API refuses with 400; ``str()`` says why."""


@dataclass(frozen=True, slots=True)
class Publish:
    """One message to deliver: its subject, its bytes, and whether it is a binary frame."""

    subject: str
    payload: bytes
    binary: bool
    target: str  # conn, user, room or broadcast


def json_body(raw: bytes, what: str) -> Any:
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiRequestError(f"{what} is not JSON: {exc}") from None


def publish_of(subjects: Subjects, target: str, name: str | None, payload: bytes, binary: bool) -> Publish:
    """The publish for ``target`` (and ``name``, absent for broadcast); InvalidName for a bad name."""
    if target == "conn":
        subject = subjects.conn(name or "")
    elif target == "user":
        subject = subjects.user(name or "")
    elif target == "room":
        subject = subjects.room(name or "")
    elif target == "broadcast":
        subject = subjects.broadcast
    else:
        raise ApiRequestError(f"to must be one of {', '.join(TARGETS)}, got {target!r:.40}")
    return Publish(subject, payload, binary, target)


def parse_batch(subjects: Subjects, raw: bytes, max_payload: int) -> list[Publish]:
    """``{"messages":[{"to":"user","id":"alice","data":"hi"}, ...]}``: each entry's target, name and
    payload (``data`` as text, or ``data_base64`` for a binary frame). ApiRequestError or InvalidName,
    naming the entry, if any entry is wrong: nothing of a bad batch is published."""
    body = json_body(raw, "body")
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list) or not messages:
        raise ApiRequestError('expected {"messages": [{"to": "user", "id": "alice", "data": "hi"}, ...]}')
    if len(messages) > MAX_BATCH:
        raise ApiRequestError(f"{len(messages)} messages; a batch holds at most {MAX_BATCH}")
    found: list[Publish] = []
    for index, entry in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(entry, dict):
            raise ApiRequestError(f"{where} must be an object")
        target = entry.get("to")
        if not isinstance(target, str):
            raise ApiRequestError(f"{where}.to must be one of {', '.join(TARGETS)}")
        name = entry.get("id")
        if target != "broadcast" and not isinstance(name, str):
            raise ApiRequestError(f"{where}.id must be the {target} id (a string)")
        payload, binary = _payload(entry, where)
        if len(payload) > max_payload:
            raise ApiRequestError(f"{where} is {len(payload)} bytes; NATS takes at most {max_payload}")
        try:
            found.append(
                publish_of(subjects, target, name if target != "broadcast" else None, payload, binary)
            )
        except InvalidName as exc:
            raise ApiRequestError(f"{where}: {exc}") from None
    return found


def _payload(entry: dict[str, Any], where: str) -> tuple[bytes, bool]:
    text, encoded = entry.get("data"), entry.get("data_base64")
    if (text is None) == (encoded is None):
        raise ApiRequestError(f"{where} needs data (text) or data_base64 (a binary frame), not both")
    if text is not None:
        if not isinstance(text, str):
            raise ApiRequestError(f"{where}.data must be a string (send JSON as its text)")
        return text.encode(), False
    if not isinstance(encoded, str):
        raise ApiRequestError(f"{where}.data_base64 must be a base64 string")
    try:
        return base64.b64decode(encoded, validate=True), True
    except binascii.Error as exc:
        raise ApiRequestError(f"{where}.data_base64 is not base64: {exc}") from None


def close_body(raw: bytes) -> dict[str, Any]:
    """The control body of a close: ``{"code":..,"reason":..}``, both optional (the node checks them)."""
    body = json_body(raw, "body")
    if not isinstance(body, dict):
        raise ApiRequestError('expected a JSON object such as {"code": 4500, "reason": "bye"}')
    return {k: body[k] for k in ("code", "reason") if k in body}


def receipts_answer(receipts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What a publish to a user, room or broadcast answers: the receipts and their total."""
    return {"delivered": sum(int(r.get("delivered", 0)) for r in receipts), "receipts": list(receipts)}


def control_status(reply: dict[str, Any]) -> int:
    """A node's control reply as an HTTP status: 200 when it did it, 400 when it refused."""
    return 200 if reply.get("ok") is True else 400
