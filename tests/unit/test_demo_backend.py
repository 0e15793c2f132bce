"""The demo backend's decisions (shared/demo_backend.py): what a chat.send or chat.history request must
hold, what a room's members receive, how much history is kept, and that docs/protocol.md says so. No
NATS here."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from shared.demo_backend import (
    EVENTS,
    HISTORY_PER_ROOM,
    HISTORY_ROOMS,
    MAX_TEXT,
    QUEUE,
    BadRequest,
    ChatHistory,
    chat_message,
    parse_chat,
    parse_history,
)
from shared.subjects import Subjects


def test_a_chat_message_names_its_room_and_text() -> None:
    assert parse_chat(b'{"room":"lobby","text":"hi","extra":1}') == ("lobby", "hi")


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (b'{"text":"hello"}', 'data needs "room"'),  # the console's old default: no room
        (b"null", "data must be a JSON object"),  # an event sent without data
        (b"[1,2]", "data must be a JSON object"),
        (b"not json", "data must be a JSON object"),
        (b'{"room":"no spaces","text":"hi"}', "room name may contain only"),
        (b'{"room":"room.*","text":"hi"}', "room name may contain only"),
        (b'{"room":7,"text":"hi"}', "room name must be a string"),
        (b'{"room":"lobby"}', 'data needs "text"'),
        (b'{"room":"lobby","text":""}', 'data needs "text"'),
        (b'{"room":"lobby","text":{"a":1}}', 'data needs "text"'),
    ],
)
def test_a_chat_message_without_a_valid_room_and_text_is_refused_saying_why(data: bytes, says: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_chat(data)
    assert says in str(refused.value)
    reply = orjson.loads(refused.value.reply())
    assert reply == {"error": "invalid_request", "message": str(refused.value)}


def test_text_is_bounded() -> None:
    assert parse_chat(orjson.dumps({"room": "r", "text": "x" * MAX_TEXT})) == ("r", "x" * MAX_TEXT)
    with pytest.raises(BadRequest, match=f"the limit is {MAX_TEXT}"):
        parse_chat(orjson.dumps({"room": "r", "text": "x" * (MAX_TEXT + 1)}))


def test_history_requests_name_a_room() -> None:
    assert parse_history(b'{"room":"lobby"}') == "lobby"
    with pytest.raises(BadRequest, match='data needs "room"'):
        parse_history(b"{}")


def test_what_members_receive_is_never_mistaken_for_a_gateway_frame() -> None:
    message = chat_message("lobby", "alice", '{"prism":"welcome"}', "id1", "2025-01-15T09:30:00.123Z")
    encoded = orjson.dumps(message)
    assert encoded.startswith(b'{"type":"chat",')
    assert orjson.loads(encoded) == {
        "type": "chat",
        "id": "id1",
        "room": "lobby",
        "from": "alice",
        "text": '{"prism":"welcome"}',
        "sent_at": "2025-01-15T09:30:00.123Z",
    }
    assert chat_message("lobby", None, "hi", "id2", "t")["from"] is None  # an anonymous connection


def test_history_keeps_the_newest_messages_of_the_most_recently_written_rooms() -> None:
    history = ChatHistory(per_room=3, rooms=2)
    for n in range(5):
        history.add("a", {"n": n})
    assert history.recent("a") == [{"n": 2}, {"n": 3}, {"n": 4}]  # oldest first
    history.add("b", {"n": 0})
    history.add("a", {"n": 5})  # "a" is now the most recently written
    history.add("c", {"n": 0})  # one room too many: "b" goes
    assert history.recent("b") == []
    assert history.recent("a")[-1] == {"n": 5}
    assert history.recent("c") == [{"n": 0}]
    assert history.recent("never") == []


def test_docs_protocol_md_describes_the_demo_backend_as_the_code_behaves() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    section = doc.split("### The demo backend", 1)[1].split("\n## ", 1)[0]
    glance = doc.split("### Every subject at a glance", 1)[1].split("\n---", 1)[0]
    for event in EVENTS:
        assert f"`{Subjects().client_event(event)}`" in glance
        assert f"| `{event}` |" in section
    assert f"`{QUEUE}`" in glance
    assert f"`{QUEUE}`" in section
    assert f"last {HISTORY_PER_ROOM} chat messages" in section
    assert f"1 to {MAX_TEXT} characters" in section
    assert f"each of the {HISTORY_ROOMS} most recently written rooms" in section
    with pytest.raises(BadRequest) as refused:
        parse_chat(b'{"text":"hello"}')
    assert f"`{refused.value.reply().decode()}`" in section
    shown = re.search(r"```json\n(\{\"type\":\"chat\".*)\n```", section)
    assert shown is not None
    example = orjson.loads(shown.group(1))
    assert example == chat_message("lobby", "alice", "hi", example["id"], example["sent_at"])
