"""External user ids (JWT subjects) <-> subject-safe user ids: encode_user_id and decode_user_id."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import InvalidName
from shared.subjects import MAX_ID_LENGTH, Subjects, decode_user_id, encode_user_id, validate_user_id


@pytest.mark.parametrize(
    ("external", "encoded"),
    [
        ("alice", "alice"),
        ("user_42-x", "user_42-x"),
        ("auth0|5f1c", "auth0=7C5f1c"),
        ("alice@example.com", "alice=40example=2Ecom"),
        ("a=b", "a=3Db"),
        ("=", "=3D"),
        ("two words", "two=20words"),
        ("wild*card>", "wild=2Acard=3E"),
        ("é", "=C3=A9"),
        ("日本", "=E6=97=A5=E6=9C=AC"),
        ("🙂", "=F0=9F=99=82"),
    ],
)
def test_known_encodings(external: str, encoded: str) -> None:
    assert encode_user_id(external) == encoded
    assert decode_user_id(encoded) == external
    assert Subjects().user(encoded) == f"user.{encoded}"


@pytest.mark.parametrize("bad", ["", "\ud800", "x" * (MAX_ID_LENGTH + 1), "@" * 43])
def test_ids_that_cannot_be_encoded_are_refused(bad: str) -> None:
    with pytest.raises(InvalidName):
        encode_user_id(bad)


def test_the_length_limit_counts_the_encoded_form() -> None:
    assert encode_user_id("@" * 42) == "=40" * 42  # 126 characters
    with pytest.raises(InvalidName, match="once encoded"):
        encode_user_id("@" * 43)


@pytest.mark.parametrize(
    "bad",
    ["a=", "a=4", "a=4g", "a=4a", "=41", "=FF", "=C3", "a.b", "", "=2", "=E6=97"],
)
def test_decode_refuses_what_no_encoding_produces(bad: str) -> None:
    with pytest.raises(InvalidName):
        decode_user_id(bad)


@given(st.text(min_size=1, max_size=MAX_ID_LENGTH // 9))
def test_every_short_id_encodes_to_a_valid_token_and_decodes_back(external: str) -> None:
    encoded = encode_user_id(external)
    assert validate_user_id(encoded) == encoded
    assert decode_user_id(encoded) == external


@given(st.text(min_size=1, max_size=200))
def test_any_id_either_round_trips_or_is_refused_as_invalid(external: str) -> None:
    try:
        encoded = encode_user_id(external)
    except InvalidName:
        return
    assert validate_user_id(encoded) == encoded
    assert decode_user_id(encoded) == external


@given(st.from_regex(r"[A-Za-z0-9_-]{1,128}", fullmatch=True))
def test_ids_that_are_already_safe_stay_unchanged(safe: str) -> None:
    assert encode_user_id(safe) == safe
    assert decode_user_id(safe) == safe


@given(st.from_regex(r"[A-Za-z0-9_=-]{1,128}", fullmatch=True))
def test_decode_accepts_exactly_the_canonical_encodings(token: str) -> None:
    try:
        external = decode_user_id(token)
    except InvalidName:
        return
    assert encode_user_id(external) == token
