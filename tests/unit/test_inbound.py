"""Tests for gateway.core.inbound.parse_client_frame: commands, events, raw messages and frame errors."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway.core.inbound import MAX_REF_LENGTH, Command, Event, Join, Leave, Raw, parse_client_frame, ref_of
from shared.errors import FrameError
from shared.frames import ErrorCode
from shared.subjects import MAX_EVENT_LENGTH, MAX_EVENT_TOKENS, MAX_ID_LENGTH, Subjects
from tests.unit.test_subjects import _candidates, _tokens, assert_well_formed_subject

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


# -- the configurable nesting limit ----------------------------------------------------------------------


def test_commands_and_events_up_to_the_depth_limit_are_accepted() -> None:
    data = "[" * 30 + "]" * 30  # 31 levels with the frame object
    assert parse_client_frame('{"event":"e","data":' + data + "}", max_depth=31) == Event(
        "e", data.encode(), None
    )
    assert parse_client_frame('{"prism":"join","room":"a","x":' + data + "}", max_depth=31) == Join("a", None)


@pytest.mark.parametrize(
    "text",
    [
        '{"event":"e","ref":7,"data":' + "[" * 32 + "]" * 32 + "}",
        '{"prism":"join","room":"a","ref":7,"x":[{},{},' + "[" * 40 + "]" * 40 + "]}",
        '{"data":' + "[" * 40 + "]" * 40 + ',"event":"e","ref":7}',
    ],
)
def test_commands_and_events_deeper_than_the_limit_are_invalid_frames_with_their_ref(text: str) -> None:
    error = frame_error(text)
    assert error.code == ErrorCode.INVALID_FRAME
    assert error.message == "frame is nested more than 32 levels deep"
    assert error.ref == 7


def test_a_too_deep_frame_with_a_bad_ref_is_reported_without_it() -> None:
    error = frame_error('{"event":"e","ref":[1],"data":' + "[" * 40 + "]" * 40 + "}")
    assert (error.code, error.ref) == (ErrorCode.INVALID_FRAME, None)


def test_a_command_too_deep_for_the_json_parser_is_an_invalid_frame_not_invalid_json() -> None:
    error = frame_error('{"prism":"join","room":"a","x":' + "[" * 2000 + "]" * 2000 + "}")
    assert error.code == ErrorCode.INVALID_FRAME
    assert "nested more than 32" in error.message


def test_raw_messages_are_forwarded_however_deep() -> None:
    text = '{"a":' + "[" * 100 + "]" * 100 + "}"
    assert parse_client_frame(text) == Raw(text.encode(), binary=False)
    assert parse_client_frame("[" * 100) == Raw(b"[" * 100, binary=False)


def test_brackets_inside_strings_do_not_count() -> None:
    text = '{"event":"e","data":"' + "[" * 500 + '"}'
    assert parse_client_frame(text) == Event("e", ('"' + "[" * 500 + '"').encode(), None)


@pytest.mark.parametrize(
    ("message", "ref"),
    [
        ('{"prism":"join","room":"a","ref":3}', 3),
        ('{"event":"e","ref":"r-1","data":{}}', "r-1"),
        ('{"event":"e","data":{}}', None),
        ('{"foo":1,"ref":3}', None),
        ('{"prism":"join","ref":true}', None),
        ('{"prism":"join","ref":' + str(2**60) + "}", None),
        ('{"prism":"join","ref":3', None),
        (b'{"prism":"join","ref":3}', None),
        ('{"event":"e","ref":4,"data":' + "[" * 40 + "]" * 40 + "}", None),
        ("[1]", None),
    ],
)
def test_ref_of_finds_a_valid_ref_of_a_command_or_event_or_none(message: str | bytes, ref: object) -> None:
    assert ref_of(message) == ref


@PROPERTY_SETTINGS
@given(st.text() | st.binary(), st.integers(min_value=1, max_value=40))
def test_ref_of_never_raises(message: str | bytes, depth: int) -> None:
    found = ref_of(message, depth)
    assert found is None or isinstance(found, int | str)


@PROPERTY_SETTINGS
@given(_json_values, st.integers(min_value=1, max_value=40))
def test_any_depth_limit_gives_a_command_an_event_or_a_frame_error(data: object, depth: int) -> None:
    for text in (
        dumps({"event": "e", "data": data, "ref": 1}),
        dumps({"prism": "join", "room": "a", "x": data}),
    ):
        outcome = parse_or_error_at(text, depth)
        if isinstance(outcome, FrameError):
            assert outcome.code == ErrorCode.INVALID_FRAME
            assert outcome.message == f"frame is nested more than {depth} levels deep"
        else:
            assert isinstance(outcome, Event | Join)


def parse_or_error_at(message: str, depth: int) -> Command | FrameError:
    try:
        return parse_client_frame(message, max_depth=depth)
    except FrameError as error:
        return error


# -- no accepted name is a wildcard ----------------------------------------------------------------------


def json_text(obj: dict[str, object]) -> str:
    """``obj`` as JSON, for the values JSON can hold (hypothesis also draws NaN and 100-bit integers)."""
    try:
        return dumps(obj)
    except TypeError:
        assume(False)
        raise


@PROPERTY_SETTINGS
@given(_candidates, st.sampled_from(["join", "leave"]))
def test_an_accepted_join_or_leave_names_exactly_one_room_subject(room: object, kind: str) -> None:
    outcome = parse_or_error(json_text({"prism": kind, "room": room, "ref": 1}))
    if isinstance(outcome, FrameError):
        assert outcome.code == ErrorCode.INVALID_ROOM
        return
    assert isinstance(outcome, Join | Leave)
    subject = Subjects().room(outcome.room)
    assert_well_formed_subject(subject)
    assert subject.split(".") == ["room", room]


@PROPERTY_SETTINGS
@given(_candidates | st.lists(_tokens, min_size=1, max_size=10).map(".".join))
def test_an_accepted_event_names_a_subject_with_only_its_own_tokens(name: object) -> None:
    outcome = parse_or_error(json_text({"event": name, "ref": 1}))
    if isinstance(outcome, FrameError):
        assert outcome.code == ErrorCode.INVALID_EVENT
        return
    assert isinstance(outcome, Event)
    assert isinstance(name, str)
    subject = Subjects().client_event(outcome.name)
    assert_well_formed_subject(subject)
    assert subject == "client.event." + name
    assert len(name) <= MAX_EVENT_LENGTH


@PROPERTY_SETTINGS
@given(
    st.lists(
        st.sampled_from(
            ["{", "}", "[", "]", '"', ":", ",", "\\", "prism", "event", "join", "room", "*", ">", " "]
        ),
        max_size=60,
    ).map("".join)
)
def test_frames_made_of_json_syntax_and_keywords_are_parsed_or_refused(text: str) -> None:
    outcome = parse_or_error(text)
    if isinstance(outcome, Join | Leave):
        assert_well_formed_subject(Subjects().room(outcome.room))
    elif isinstance(outcome, Event):
        assert_well_formed_subject(Subjects().client_event(outcome.name))
    elif isinstance(outcome, FrameError):
        assert outcome.code in set(ErrorCode)
