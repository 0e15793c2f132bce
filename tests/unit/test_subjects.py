"""Tests for shared.subjects: name validation, the Subjects builder and its deployment prefix."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import InvalidName
from shared.subjects import (
    MAX_EVENT_LENGTH,
    MAX_EVENT_TOKENS,
    MAX_ID_LENGTH,
    MAX_NODE_ID_LENGTH,
    Subjects,
    validate_conn_id,
    validate_event,
    validate_node_id,
    validate_prefix,
    validate_room,
    validate_token,
    validate_user_id,
)

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None)

Validator = Callable[[object], str]
VALIDATORS: list[Validator] = [
    validate_user_id,
    validate_room,
    validate_node_id,
    validate_conn_id,
    validate_event,
]

SAFE_ALPHABET = "abcXYZ019_=-"
_WHITESPACE = re.compile(r"\s")


def assert_well_formed_subject(subject: str) -> None:
    """No wildcard, no whitespace, no empty token: the subject means exactly one thing."""
    assert "*" not in subject
    assert ">" not in subject
    assert not _WHITESPACE.search(subject)
    assert all(subject.split(".")), f"empty token in {subject!r}"


def accepted(validator: Validator, value: object) -> str | None:
    try:
        return validator(value)
    except InvalidName:
        return None


# Values a client could try: mostly-safe strings with a few dangerous characters mixed in, any text, and
# non-strings.
_risky_text = st.text(alphabet=st.sampled_from([*SAFE_ALPHABET, ".", "*", ">", " ", "\t", "\n", "\u00e9"]))
_candidates = (
    _risky_text
    | st.text()
    | st.text(alphabet=SAFE_ALPHABET, min_size=100, max_size=200)
    | st.none()
    | st.integers()
    | st.booleans()
    | st.floats()
    | st.lists(st.text(max_size=3), max_size=2)
)

_tokens = st.text(alphabet=SAFE_ALPHABET, min_size=1, max_size=12)


# -- validators ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("validator", [validate_user_id, validate_room, validate_node_id])
@pytest.mark.parametrize("value", ["a", "alice", "A-1_b=2", "0", "-", "=", "_"])
def test_single_token_names_are_accepted(validator: Validator, value: str) -> None:
    assert validator(value) == value


@pytest.mark.parametrize("validator", [validate_user_id, validate_room, validate_node_id])
@pytest.mark.parametrize(
    "value",
    ["", "*", ">", "a.b", ".", "a b", "a\n", "\ta", "a\u00a0", "caf\u00e9", "a/b", "a:b", "a\x00", "a$"],
)
def test_unsafe_single_token_names_are_refused(validator: Validator, value: str) -> None:
    with pytest.raises(InvalidName):
        validator(value)


@pytest.mark.parametrize("validator", VALIDATORS)
@pytest.mark.parametrize("value", [None, 1, 1.5, True, b"abc", ["a"], {"a": 1}])
def test_non_strings_are_refused_with_invalid_name(validator: Validator, value: object) -> None:
    with pytest.raises(InvalidName):
        validator(value)


def test_user_id_and_room_length_limit() -> None:
    assert validate_user_id("u" * MAX_ID_LENGTH)
    assert validate_room("r" * MAX_ID_LENGTH)
    with pytest.raises(InvalidName, match=str(MAX_ID_LENGTH)):
        validate_user_id("u" * (MAX_ID_LENGTH + 1))
    with pytest.raises(InvalidName, match=str(MAX_ID_LENGTH)):
        validate_room("r" * (MAX_ID_LENGTH + 1))


def test_node_id_length_limit() -> None:
    assert validate_node_id("n" * MAX_NODE_ID_LENGTH)
    with pytest.raises(InvalidName, match=str(MAX_NODE_ID_LENGTH)):
        validate_node_id("n" * (MAX_NODE_ID_LENGTH + 1))


def test_error_messages_say_which_rule_was_broken() -> None:
    with pytest.raises(InvalidName, match="room name must be a string, got int"):
        validate_room(5)
    with pytest.raises(InvalidName, match="user id must not be empty"):
        validate_user_id("")
    with pytest.raises(InvalidName, match=r"found '\*', '\.'"):
        validate_room("a.*")


def test_validate_token_uses_the_given_kind_and_limit() -> None:
    assert validate_token("action", "close", 5) == "close"
    with pytest.raises(InvalidName, match="action is 6 characters long; the limit is 5"):
        validate_token("action", "closed", 5)


@pytest.mark.parametrize("value", ["n1.abc", "node-1.x", "a.b", "n" * 32 + "." + "c" * 32])
def test_conn_ids_are_two_safe_tokens(value: str) -> None:
    assert validate_conn_id(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "n1",
        "n1.",
        ".abc",
        "n1.a.b",
        "n1.*",
        "*.abc",
        "n1.>",
        "n1 .abc",
        "n1.abc\n",
        "n" * 33 + ".abc",
        "n1." + "c" * 33,
    ],
)
def test_malformed_conn_ids_are_refused(value: str) -> None:
    with pytest.raises(InvalidName, match="conn id"):
        validate_conn_id(value)


@pytest.mark.parametrize(
    "value",
    ["a", "chat.send", "a.b.c", "x-y_z=1.2", ".".join("t" * MAX_EVENT_TOKENS), "e" * MAX_EVENT_LENGTH],
)
def test_dotted_event_names_are_accepted(value: str) -> None:
    assert validate_event(value) == value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "non-empty"),
        ("a..b", "dot-separated"),
        (".a", "dot-separated"),
        ("a.", "dot-separated"),
        ("chat.*", "dot-separated"),
        ("chat.>", "dot-separated"),
        ("chat send", "dot-separated"),
        ("chat.send\n", "dot-separated"),
        (".".join("t" * (MAX_EVENT_TOKENS + 1)), f"limit is {MAX_EVENT_TOKENS}"),
        ("e" * (MAX_EVENT_LENGTH + 1), f"limit is {MAX_EVENT_LENGTH}"),
    ],
)
def test_bad_event_names_are_refused_with_a_reason(value: str, reason: str) -> None:
    with pytest.raises(InvalidName, match=re.escape(reason)):
        validate_event(value)


@pytest.mark.parametrize("value", ["", "acme.", "a.b.", "x-1.y_2."])
def test_valid_prefixes(value: str) -> None:
    assert validate_prefix(value) == value


@pytest.mark.parametrize("value", ["acme", ".", ".acme.", "acme..", "a b.", "*.", ">.", "acme.*.", " acme."])
def test_invalid_prefixes_are_refused(value: str) -> None:
    with pytest.raises(InvalidName, match="prefix"):
        validate_prefix(value)
    with pytest.raises(InvalidName):
        Subjects(value)


# -- Subjects --------------------------------------------------------------------------------------------


def test_default_subject_names() -> None:
    s = Subjects()
    assert s.conn("n1.abc") == "conn.n1.abc"
    assert s.user("alice") == "user.alice"
    assert s.room("lobby") == "room.lobby"
    assert s.client_event("chat.send") == "client.event.chat.send"
    assert s.client_message == "client.message"
    assert s.client_connect == "client.connect"
    assert s.client_disconnect == "client.disconnect"
    assert s.control_conn("n1.abc", "close") == "control.conn.n1.abc.close"
    assert s.control_user("alice", "close") == "control.user.alice.close"


def test_node_wildcards_cover_exactly_the_nodes_connections() -> None:
    s = Subjects()
    assert s.node_conns("n1") == "conn.n1.*"
    assert s.node_control_conns("n1") == "control.conn.n1.*.*"
    assert s.control_users == "control.user.*.*"
    conn_subject = s.conn("n1.abc").split(".")
    wildcard = s.node_conns("n1").split(".")
    assert len(conn_subject) == len(wildcard)
    assert all(w in ("*", t) for w, t in zip(wildcard, conn_subject, strict=True))
    control_subject = s.control_conn("n1.abc", "join").split(".")
    control_wildcard = s.node_control_conns("n1").split(".")
    assert len(control_subject) == len(control_wildcard)
    assert all(w in ("*", t) for w, t in zip(control_wildcard, control_subject, strict=True))


@pytest.mark.parametrize("node", ["", "*", ">", "n.1", "n 1", "n" * (MAX_NODE_ID_LENGTH + 1)])
def test_node_wildcards_refuse_bad_node_ids(node: str) -> None:
    with pytest.raises(InvalidName):
        Subjects().node_conns(node)
    with pytest.raises(InvalidName):
        Subjects().node_control_conns(node)
    with pytest.raises(InvalidName):
        Subjects().node_beat(node)
    with pytest.raises(InvalidName):
        Subjects().node_ping(node)


def test_prefix_applies_to_every_subject() -> None:
    plain, prefixed = Subjects(), Subjects("acme.")
    builders: list[Callable[[Subjects], str]] = [
        lambda s: s.conn("n1.abc"),
        lambda s: s.user("alice"),
        lambda s: s.room("lobby"),
        lambda s: s.node_conns("n1"),
        lambda s: s.client_event("chat.send"),
        lambda s: s.client_message,
        lambda s: s.client_connect,
        lambda s: s.client_disconnect,
        lambda s: s.control_conn("n1.abc", "close"),
        lambda s: s.control_user("alice", "leave"),
        lambda s: s.node_control_conns("n1"),
        lambda s: s.control_users,
        lambda s: s.presence_user("alice"),
        lambda s: s.presence_room("lobby"),
        lambda s: s.presence_online,
        lambda s: s.presence_cluster,
        lambda s: s.presence_queries,
        lambda s: s.broadcast,
        lambda s: s.authz("authz.prism"),
        lambda s: s.notify_user("alice"),
        lambda s: s.notify_room("lobby"),
        lambda s: s.notify_broadcast,
        lambda s: s.notify_inputs[0],
        lambda s: s.notify_inputs[1],
        lambda s: s.notify_inputs[2],
        lambda s: s.notify_dead(s.notify_user("alice")),
        lambda s: s.notify_inbox("alice"),
        lambda s: s.notify_inboxes,
        lambda s: s.notify_dead_letters,
        lambda s: s.node_beat("n1"),
        lambda s: s.node_beats,
        lambda s: s.node_ping("n1"),
        lambda s: s.node_swept("n1"),
        lambda s: s.nodes_swept,
        lambda s: s.recovery_room("lobby"),
        lambda s: s.recovery_user("alice"),
        lambda s: s.recovery_republish[0],
        lambda s: s.recovery_republish[1],
    ]
    for build in builders:
        assert build(prefixed) == "acme." + build(plain)


def test_every_public_subject_builder_is_covered_by_the_prefix_test() -> None:
    public = {name for name in dir(Subjects) if not name.startswith("_")} - {"prefix", "strip", "tail_offset"}
    assert public == {
        "node_beat",
        "node_beats",
        "node_ping",
        "node_swept",
        "nodes_swept",
        "recovery_room",
        "recovery_user",
        "recovery_republish",
        "conn",
        "user",
        "room",
        "node_conns",
        "client_event",
        "client_message",
        "client_connect",
        "client_disconnect",
        "control_conn",
        "control_user",
        "node_control_conns",
        "control_users",
        "presence_user",
        "presence_room",
        "presence_online",
        "presence_cluster",
        "presence_queries",
        "broadcast",
        "authz",
        "notify_user",
        "notify_room",
        "notify_broadcast",
        "notify_inputs",
        "notify_inbox",
        "notify_inboxes",
        "notify_dead",
        "notify_dead_letters",
    }


def test_multi_token_prefix() -> None:
    assert Subjects("eu.acme.").room("lobby") == "eu.acme.room.lobby"


def test_strip_removes_only_the_prefix() -> None:
    prefixed, unprefixed = "acme.room.lobby", "room.lobby"
    assert Subjects("acme.").strip(prefixed) == unprefixed
    assert Subjects("acme.").strip(unprefixed) == unprefixed
    assert Subjects().strip(unprefixed) == unprefixed


def test_builders_refuse_names_that_would_change_the_subject() -> None:
    s = Subjects()
    with pytest.raises(InvalidName):
        s.room("lobby.*")
    with pytest.raises(InvalidName):
        s.user(">")
    with pytest.raises(InvalidName):
        s.conn("n1.*")
    with pytest.raises(InvalidName):
        s.client_event("chat..send")
    with pytest.raises(InvalidName):
        s.control_conn("n1.abc", "close.*")
    with pytest.raises(InvalidName):
        s.control_user("alice", "")


# -- properties ------------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(st.sampled_from(VALIDATORS), _candidates)
def test_validators_raise_only_invalid_name(validator: Validator, value: object) -> None:
    result = accepted(validator, value)
    assert result is None or result == value


@PROPERTY_SETTINGS
@given(_candidates)
def test_accepted_room_gives_a_two_token_subject(value: object) -> None:
    room = accepted(validate_room, value)
    if room is None:
        return
    subject = Subjects().room(room)
    assert_well_formed_subject(subject)
    assert subject.split(".") == ["room", room]


@PROPERTY_SETTINGS
@given(_candidates)
def test_accepted_user_id_gives_a_two_token_subject(value: object) -> None:
    user = accepted(validate_user_id, value)
    if user is None:
        return
    subject = Subjects().user(user)
    assert_well_formed_subject(subject)
    assert subject.split(".") == ["user", user]


@PROPERTY_SETTINGS
@given(_candidates | st.builds(lambda a, b: f"{a}.{b}", _tokens, _tokens))
def test_accepted_conn_id_gives_a_three_token_subject(value: object) -> None:
    conn_id = accepted(validate_conn_id, value)
    if conn_id is None:
        return
    subject = Subjects().conn(conn_id)
    assert_well_formed_subject(subject)
    assert len(subject.split(".")) == 3


@PROPERTY_SETTINGS
@given(_candidates | st.lists(_tokens, min_size=1, max_size=MAX_EVENT_TOKENS + 2).map(".".join))
def test_accepted_event_name_gives_two_plus_its_tokens(value: object) -> None:
    name = accepted(validate_event, value)
    if name is None:
        return
    subject = Subjects().client_event(name)
    assert_well_formed_subject(subject)
    assert len(subject.split(".")) == 2 + len(name.split("."))
    assert len(name.split(".")) <= MAX_EVENT_TOKENS
    assert len(name) <= MAX_EVENT_LENGTH


@PROPERTY_SETTINGS
@given(_candidates)
def test_accepted_node_id_gives_well_formed_wildcards(value: object) -> None:
    node = accepted(validate_node_id, value)
    if node is None:
        return
    assert Subjects().node_conns(node).split(".") == ["conn", node, "*"]
    assert Subjects().node_control_conns(node).split(".") == ["control", "conn", node, "*", "*"]


@PROPERTY_SETTINGS
@given(_risky_text | st.text() | st.lists(_tokens, max_size=3).map(lambda ts: "".join(t + "." for t in ts)))
def test_accepted_prefix_is_empty_or_well_formed_tokens_ending_with_a_dot(value: str) -> None:
    prefix = accepted(lambda v: validate_prefix(str(v)), value)
    if prefix is None:
        return
    assert prefix == "" or prefix.endswith(".")
    room_subject = Subjects(prefix).room("lobby")
    assert_well_formed_subject(room_subject)
    assert room_subject == prefix + "room.lobby"


def test_presence_query_subjects() -> None:
    s = Subjects()
    assert s.presence_user("alice") == "presence.user.alice"
    assert s.presence_room("lobby") == "presence.room.lobby"
    assert (s.presence_online, s.presence_cluster, s.presence_queries) == (
        "presence.online",
        "presence.cluster",
        "presence.>",
    )
    with pytest.raises(InvalidName):
        s.presence_user("a.b")
    with pytest.raises(InvalidName):
        s.presence_room("*")


def test_tail_offset_is_where_the_name_starts_under_any_prefix() -> None:
    for subjects in (Subjects(), Subjects("acme.prod.")):
        assert subjects.conn("n1.abc")[subjects.tail_offset("conn.") :] == "n1.abc"
        assert (
            subjects.control_user("alice", "close")[subjects.tail_offset("control.user.") :] == "alice.close"
        )
