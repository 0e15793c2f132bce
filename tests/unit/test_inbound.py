"""Tests for gateway.core.inbound.parse_client_frame: commands, events, raw messages and frame errors."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.inbound import MAX_REF_LENGTH, Command, Event, Join, Leave, Raw, parse_client_frame
from shared.errors import FrameError
from shared.frames import ErrorCode
from shared.subjects import MAX_EVENT_LENGTH, MAX_EVENT_TOKENS, MAX_ID_LENGTH

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None)


def parse_or_error(message: str | bytes) -> Command | FrameError:
    """The parsed command, or the FrameError it was refused with (any other exception propagates)."""
    try:
        return parse_client_frame(message)
    except FrameError as error:
        return error


def frame_error(message: str | bytes) -> FrameError:
    with pytest.raises(FrameError) as caught:
        parse_client_frame(message)
    return caught.value


def dumps(obj: object) -> str:
    return orjson.dumps(obj).decode()


# -- join / leave ----------------------------------------------------------------------------------------


def test_join_command_carries_room_and_ref() -> None:
    assert parse_client_frame('{"prism":"join","room":"lobby","ref":1}') == Join("lobby", 1)


def test_leave_command_carries_room_and_ref() -> None:
    assert parse_client_frame('{"prism":"leave","room":"lobby","ref":"r-2"}') == Leave("lobby", "r-2")


def test_command_without_ref_has_ref_none() -> None:
    assert parse_client_frame('{"prism":"join","room":"lobby"}') == Join("lobby", None)


def test_command_with_null_ref_has_ref_none() -> None:
    assert parse_client_frame('{"prism":"leave","room":"lobby","ref":null}') == Leave("lobby", None)


def test_command_with_whitespace_around_the_json_is_still_a_command() -> None:
    assert parse_client_frame(' \n\t{ "prism" : "join", "room" : "a" } \n') == Join("a", None)


def test_command_key_order_does_not_matter_for_parsing() -> None:
    assert parse_client_frame('{"room":"a","ref":3,"prism":"join"}') == Join("a", 3)


def test_command_with_extra_keys_is_accepted() -> None:
    assert parse_client_frame('{"prism":"join","room":"a","extra":[1,2]}') == Join("a", None)


@pytest.mark.parametrize("ref", [0, -1, 2**53 - 1, -(2**53) + 1, "", "x" * MAX_REF_LENGTH])
def test_boundary_refs_are_accepted(ref: int | str) -> None:
    assert parse_client_frame(dumps({"prism": "join", "room": "a", "ref": ref})) == Join("a", ref)


def test_unknown_command_is_an_error_with_its_ref() -> None:
    error = frame_error('{"prism":"subscribe","room":"a","ref":7}')
    assert error.code == ErrorCode.UNKNOWN_COMMAND
    assert error.ref == 7
    assert "subscribe" in error.message


@pytest.mark.parametrize("kind", [None, 1, True, [], {}, "JOIN", "welcome", "ok", ""])
def test_non_command_prism_values_are_unknown_commands(kind: object) -> None:
    assert frame_error(dumps({"prism": kind, "room": "a"})).code == ErrorCode.UNKNOWN_COMMAND


def test_unknown_command_message_is_bounded_for_a_huge_command_name() -> None:
    error = frame_error(dumps({"prism": "x" * 10_000}))
    assert len(error.message) < 200


@pytest.mark.parametrize(
    "room",
    [
        "*",
        ">",
        "a.*",
        "a.>",
        "a.b",
        ".a",
        "a.",
        "a b",
        " a",
        "a\t",
        "a\n",
        "a\r",
        "a\u00a0",
        "",
        "x" * 10_240,
        "x" * (MAX_ID_LENGTH + 1),
        "caf\u00e9",
        "a/b",
        "a\x00",
        1,
        1.5,
        True,
        None,
        [],
        {},
        ["lobby"],
    ],
)
def test_invalid_rooms_are_refused_with_invalid_room(room: object) -> None:
    error = frame_error(dumps({"prism": "join", "room": room, "ref": 4}))
    assert error.code == ErrorCode.INVALID_ROOM
    assert error.ref == 4
    assert error.message


def test_missing_room_is_invalid_room() -> None:
    assert frame_error('{"prism":"leave","ref":1}').code == ErrorCode.INVALID_ROOM


def test_room_at_the_length_limit_is_accepted() -> None:
    room = "r" * MAX_ID_LENGTH
    assert parse_client_frame(dumps({"prism": "join", "room": room})) == Join(room, None)


def test_invalid_room_message_names_the_offending_characters() -> None:
    message = frame_error('{"prism":"join","room":"a*b"}').message
    assert "'*'" in message


def test_overlong_room_message_states_the_limit() -> None:
    message = frame_error(dumps({"prism": "join", "room": "x" * 10_240})).message
    assert str(MAX_ID_LENGTH) in message
    assert len(message) < 200


@pytest.mark.parametrize(
    "ref",
    [True, False, 1.5, 1.0, 2**53, -(2**53), 2**63, "x" * (MAX_REF_LENGTH + 1), [], {}, [1]],
)
def test_invalid_refs_are_refused_with_invalid_ref(ref: object) -> None:
    error = frame_error(dumps({"prism": "join", "room": "a", "ref": ref}))
    assert error.code == ErrorCode.INVALID_REF
    assert error.ref is None


def test_invalid_ref_in_an_event_is_refused_with_invalid_ref() -> None:
    assert frame_error('{"event":"chat.send","ref":true}').code == ErrorCode.INVALID_REF


def test_integer_too_large_for_json_parser_is_still_a_frame_error() -> None:
    error = frame_error('{"prism":"join","room":"a","ref":99999999999999999999999}')
    assert error.code in (ErrorCode.INVALID_REF, ErrorCode.INVALID_JSON)


# -- events ----------------------------------------------------------------------------------------------


def test_event_with_data_and_no_ref_is_a_publish() -> None:
    command = parse_client_frame('{"event":"chat.send","data":{"text":"hi"}}')
    assert command == Event("chat.send", b'{"text":"hi"}', None)


def test_event_with_ref_is_a_request() -> None:
    command = parse_client_frame('{"event":"quote.get","data":[1,2],"ref":9}')
    assert command == Event("quote.get", b"[1,2]", 9)


def test_event_without_data_carries_json_null() -> None:
    assert parse_client_frame('{"event":"ping"}') == Event("ping", b"null", None)


def test_event_with_explicit_null_data_carries_json_null() -> None:
    assert parse_client_frame('{"event":"ping","data":null}') == Event("ping", b"null", None)


@pytest.mark.parametrize("data", [0, -3, 2.5, "text", "", True, False, [], {}, {"a": {"b": [1, "c"]}}])
def test_event_data_is_reencoded_as_equivalent_json(data: object) -> None:
    command = parse_client_frame(dumps({"event": "e", "data": data}))
    assert isinstance(command, Event)
    assert orjson.loads(command.data) == data


def test_event_data_keeps_unicode() -> None:
    command = parse_client_frame('{"event":"e","data":"h\u00e9llo \u2603 \U0001f600"}')
    assert isinstance(command, Event)
    assert orjson.loads(command.data) == "h\u00e9llo \u2603 \U0001f600"


def test_frame_with_both_prism_and_event_is_treated_as_a_command() -> None:
    assert parse_client_frame('{"event":"e","prism":"join","room":"a"}') == Join("a", None)


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "chat.send",
        "A-b_c=d.0.9",
        ".".join(["t"] * MAX_EVENT_TOKENS),
        "e" * MAX_EVENT_LENGTH,
    ],
)
def test_valid_event_names_are_accepted(name: str) -> None:
    assert parse_client_frame(dumps({"event": name})) == Event(name, b"null", None)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a..b",
        ".a",
        "a.",
        ".",
        "..",
        "*",
        ">",
        "chat.*",
        "chat.>",
        "a b",
        "a\tb",
        "a.b\n",
        "caf\u00e9",
        ".".join(["t"] * (MAX_EVENT_TOKENS + 1)),
        "e" * (MAX_EVENT_LENGTH + 1),
        None,
        1,
        True,
        [],
        {},
    ],
)
def test_invalid_event_names_are_refused_with_invalid_event(name: object) -> None:
    error = frame_error(dumps({"event": name, "ref": "r1"}))
    assert error.code == ErrorCode.INVALID_EVENT
    assert error.ref == "r1"
    assert len(error.message) < 300


# -- raw messages ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "hello", "  hi  ", "[1,2,3]", '"a string"', "42", "null", "\u2603"])
def test_text_that_is_not_a_json_object_is_raw_text(text: str) -> None:
    assert parse_client_frame(text) == Raw(text.encode(), binary=False)


@pytest.mark.parametrize("text", ['{"type":"chat","text":"hi"}', "{}", ' {"a": 1} '])
def test_json_object_without_prism_or_event_is_raw_text(text: str) -> None:
    assert parse_client_frame(text) == Raw(text.encode(), binary=False)


@pytest.mark.parametrize("text", ["{", "{not json", "{'prism':'join'}", '{"a":1', '{"type":"x"}}', "{}{}"])
def test_invalid_json_not_looking_like_a_command_is_raw_text(text: str) -> None:
    assert parse_client_frame(text) == Raw(text.encode(), binary=False)


@pytest.mark.parametrize(
    "payload", [b"", b"\x00\x01\xff", b'{"prism":"join","room":"a"}', b'{"event":"e"}', b"\x81"]
)
def test_binary_frames_are_always_raw_binary(payload: bytes) -> None:
    assert parse_client_frame(payload) == Raw(payload, binary=True)


def test_raw_text_keeps_the_exact_bytes_including_whitespace() -> None:
    text = ' {"a" :  1}\n'
    command = parse_client_frame(text)
    assert isinstance(command, Raw)
    assert command.payload == text.encode()


@pytest.mark.parametrize(
    "text",
    [
        '{"prism"',
        '{"prism":',
        '{"prism":"join"',
        '{"prism":"join","room":"a",}',
        '  {"prism":"join"',
        '{"event"',
        '{"event":"a"',
        '{"event":"a","data":}',
    ],
)
def test_invalid_json_that_starts_like_a_command_is_invalid_json(text: str) -> None:
    error = frame_error(text)
    assert error.code == ErrorCode.INVALID_JSON
    assert error.ref is None
    assert "JSON" in error.message


# -- nesting ---------------------------------------------------------------------------------------------


DEEP = 100_000


@pytest.mark.parametrize(
    "text",
    [
        "[" * DEEP,
        "{" * DEEP,
        '{"a":' + "[" * DEEP,
        '{"prism":' + "[" * DEEP,
        '{"event":"e","data":' + "[" * DEEP,
        '{"event":"e","data":' + "[" * DEEP + "]" * DEEP + "}",
        '{"prism":"join","room":"a","x":' + "[" * DEEP + "]" * DEEP + "}",
    ],
)
def test_deeply_nested_json_never_crashes(text: str) -> None:
    assert isinstance(parse_or_error(text), FrameError | Raw)


@pytest.mark.parametrize("depth", [1, 100, 253, 254, 255, 300, 1000, 1023, 1024, 1025, 5000])
def test_event_data_nested_at_any_depth_is_an_event_or_a_frame_error(depth: int) -> None:
    outcome = parse_or_error('{"event":"e","ref":5,"data":' + "[" * depth + "]" * depth + "}")
    if isinstance(outcome, FrameError):
        assert outcome.code in (ErrorCode.INVALID_JSON, ErrorCode.INVALID_FRAME)
    else:
        assert outcome == Event("e", b"[" * depth + b"]" * depth, 5)


def test_event_data_too_deep_to_forward_is_refused_with_its_ref() -> None:
    depth = 500
    error = frame_error('{"event":"e","ref":5,"data":' + "[" * depth + "]" * depth + "}")
    assert error.code == ErrorCode.INVALID_FRAME
    assert error.ref == 5
    assert "nested" in error.message


# -- properties ------------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(st.text())
def test_arbitrary_text_is_parsed_or_refused_with_frame_error(text: str) -> None:
    outcome = parse_or_error(text)
    if isinstance(outcome, FrameError):
        assert outcome.code in set(ErrorCode)
        assert outcome.message
    elif isinstance(outcome, Raw):
        assert outcome == Raw(text.encode(), binary=False)
    else:
        assert isinstance(outcome, Join | Leave | Event)


@PROPERTY_SETTINGS
@given(st.text().map(lambda s: '{"prism"' + s))
def test_arbitrary_text_after_a_command_prefix_is_parsed_or_refused(text: str) -> None:
    assert isinstance(parse_or_error(text), FrameError | Join | Leave)


@PROPERTY_SETTINGS
@given(st.binary())
def test_arbitrary_bytes_are_raw_binary(payload: bytes) -> None:
    assert parse_client_frame(payload) == Raw(payload, binary=True)


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@PROPERTY_SETTINGS
@given(
    st.dictionaries(
        st.sampled_from(["prism", "event", "room", "ref", "data", "x"]),
        _json_values | st.sampled_from(["join", "leave", "lobby", "chat.send"]),
    )
)
def test_arbitrary_json_objects_are_parsed_or_refused_with_frame_error(obj: dict[str, object]) -> None:
    text = dumps(obj)
    command = parse_or_error(text)
    if isinstance(command, FrameError):
        return
    if "prism" in obj:
        assert isinstance(command, Join | Leave)
        assert command.room == obj["room"]
    elif "event" in obj:
        assert isinstance(command, Event)
        assert command.name == obj["event"]
        assert orjson.loads(command.data) == obj.get("data")
    else:
        assert command == Raw(text.encode(), binary=False)
