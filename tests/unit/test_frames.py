"""Tests for shared.frames: gateway frames start with {"prism":, and reply() embeds any payload safely."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.inbound import Event, Join, Leave, parse_client_frame
from shared import frames
from shared.frames import PRISM_PREFIX, ErrorCode, Kind, Ref

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None)


def decoded(frame: bytes) -> dict[str, Any]:
    obj = orjson.loads(frame)
    assert isinstance(obj, dict)
    return obj


GATEWAY_FRAMES = [
    frames.welcome("n1.abc", "n1", "alice", "/ws"),
    frames.welcome("n1.abc", "n1", None, "/ws"),
    frames.ok(1),
    frames.ok(None),
    frames.error("r", ErrorCode.INVALID_ROOM, "bad room"),
    frames.reply(3, b'{"a":1}'),
    frames.reply(None, b""),
    frames.reply("x", b"\xff\xfe"),
]


@pytest.mark.parametrize("frame", GATEWAY_FRAMES)
def test_gateway_frames_start_with_the_prism_prefix(frame: bytes) -> None:
    assert frame.startswith(PRISM_PREFIX)
    assert frame.startswith(b'{"prism":')
    assert frames.is_prism_frame(frame)
    assert frames.is_prism_frame(frame.decode())
    assert next(iter(decoded(frame))) == "prism"


def test_welcome_frame_fields() -> None:
    assert decoded(frames.welcome("n1.abc", "n1", "alice", "/ws")) == {
        "prism": "welcome",
        "conn": "n1.abc",
        "node": "n1",
        "user": "alice",
        "route": "/ws",
    }
    assert decoded(frames.welcome("n1.abc", "n1", None, "/ws"))["user"] is None


@pytest.mark.parametrize("ref", [1, "r-1", None])
def test_ok_frame_echoes_the_ref(ref: Ref) -> None:
    assert decoded(frames.ok(ref)) == {"prism": "ok", "ref": ref}


def test_error_frame_carries_code_slug_and_message() -> None:
    assert decoded(frames.error(7, ErrorCode.TOO_MANY_ROOMS, "at most 2 rooms")) == {
        "prism": "error",
        "ref": 7,
        "code": "too_many_rooms",
        "message": "at most 2 rooms",
    }


def test_error_codes_are_lowercase_slugs() -> None:
    for code in ErrorCode:
        assert code.value == code.value.lower()
        assert " " not in code.value


def test_frame_kinds_are_their_wire_names() -> None:
    kinds = {"welcome", "ok", "error", "reply", "presence", "recovery", "pos", "mark", "join", "leave"}
    kinds.add("refresh")
    assert {kind.value for kind in Kind} == kinds


@pytest.mark.parametrize(
    ("payload", "data"),
    [
        (b'{"price":1.5}', {"price": 1.5}),
        (b"[1,2,3]", [1, 2, 3]),
        (b'"quoted"', "quoted"),
        (b"42", 42),
        (b"true", True),
        (b"null", None),
        (b' {"a": [1, {"b": null}]} ', {"a": [1, {"b": None}]}),
    ],
)
def test_reply_embeds_json_payload_as_data(payload: bytes, data: object) -> None:
    assert decoded(frames.reply(5, payload)) == {"prism": "reply", "ref": 5, "data": data}


@pytest.mark.parametrize(
    "payload", [b"hello", b"not json {", "caf\u00e9 \u2603".encode(), b"NaN", b"1e400", b"  "]
)
def test_reply_embeds_non_json_utf8_as_a_string(payload: bytes) -> None:
    assert decoded(frames.reply("r", payload)) == {"prism": "reply", "ref": "r", "data": payload.decode()}


@pytest.mark.parametrize("payload", [b"\xff", b"\x00\x01\x02\xfe", b"\xc3(", b"\xed\xa0\x80"])
def test_reply_embeds_other_bytes_as_base64(payload: bytes) -> None:
    frame = decoded(frames.reply(2, payload))
    assert frame["encoding"] == "base64"
    assert base64.b64decode(frame["data"]) == payload
    assert frame["prism"] == "reply"
    assert frame["ref"] == 2


def test_reply_with_empty_payload_has_null_data() -> None:
    assert decoded(frames.reply(1, b"")) == {"prism": "reply", "ref": 1, "data": None}


def test_reply_without_base64_has_no_encoding_key() -> None:
    assert "encoding" not in decoded(frames.reply(1, b'{"a":1}'))
    assert "encoding" not in decoded(frames.reply(1, b"text"))


@pytest.mark.parametrize("depth", [1, 200, 253, 254, 255, 300, 1023, 1024, 1025, 100_000])
def test_reply_with_deeply_nested_json_never_crashes(depth: int) -> None:
    payload = b"[" * depth + b"]" * depth
    frame = decoded(frames.reply(1, payload))
    if isinstance(frame["data"], str):
        assert frame["data"] == payload.decode()
    else:
        assert orjson.dumps(frame["data"]) == payload


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@PROPERTY_SETTINGS
@given(st.binary())
def test_reply_to_arbitrary_bytes_is_a_prism_frame_that_preserves_the_payload(payload: bytes) -> None:
    frame_bytes = frames.reply(9, payload)
    assert frame_bytes.startswith(PRISM_PREFIX)
    frame = decoded(frame_bytes)
    assert frame["ref"] == 9
    if not payload:
        assert frame["data"] is None
        return
    if frame.get("encoding") == "base64":
        assert base64.b64decode(frame["data"]) == payload
        with pytest.raises(UnicodeDecodeError):
            payload.decode()
        return
    try:
        as_json = orjson.loads(payload)
    except orjson.JSONDecodeError:
        assert frame["data"] == payload.decode()
    else:
        assert frame["data"] == as_json


@PROPERTY_SETTINGS
@given(_json_values)
def test_reply_to_a_json_payload_embeds_the_same_value(value: object) -> None:
    assert decoded(frames.reply(1, orjson.dumps(value)))["data"] == value


# -- client-side builders --------------------------------------------------------------------------------


def test_client_builders_round_trip_through_the_gateway_parser() -> None:
    assert parse_client_frame(frames.join("lobby", 1).decode()) == Join("lobby", 1)
    assert parse_client_frame(frames.leave("lobby", "r").decode()) == Leave("lobby", "r")
    assert parse_client_frame(frames.event("chat.send", {"t": "hi"}).decode()) == Event(
        "chat.send", b'{"t":"hi"}', None
    )
    assert parse_client_frame(frames.event("quote.get", ref=4).decode()) == Event("quote.get", b"null", 4)


def test_client_commands_start_with_the_prism_prefix_and_events_do_not() -> None:
    assert frames.is_prism_frame(frames.join("lobby"))
    assert frames.is_prism_frame(frames.leave("lobby"))
    assert not frames.is_prism_frame(frames.event("chat.send"))


def test_event_builder_omits_ref_when_none() -> None:
    assert "ref" not in decoded(frames.event("e"))
    assert decoded(frames.event("e", ref=0))["ref"] == 0


@pytest.mark.parametrize("data", [b'{"prism" :1}', b' {"prism":1}', b'{"type":"x"}', b"", "x", '{"prism":'])
def test_is_prism_frame_matches_only_the_exact_prefix(data: bytes | str) -> None:
    expected = (data.encode() if isinstance(data, str) else data).startswith(b'{"prism":')
    assert frames.is_prism_frame(data) is expected
