"""Tests for shared.presence_keys: the KV key layout and its server-side watch filters."""

from __future__ import annotations

import re

import pytest

from shared import presence_keys as keys


def filter_matches(pattern: str, key: str) -> bool:
    """NATS subject matching: '*' is one token, a final '>' is one or more tokens."""
    regex = r"\.".join(
        "[^.]+" if token == "*" else ".+" if token == ">" else re.escape(token)
        for token in pattern.split(".")
    )
    return re.fullmatch(regex, key) is not None


def test_bucket_name() -> None:
    assert keys.BUCKET == "presence"


def test_key_layout() -> None:
    assert keys.conn_key("n1.abc") == "conn.n1.abc"
    assert keys.user_key("alice", "n1.abc") == "user.alice.n1.abc"
    assert keys.room_key("lobby", "n1.abc") == "room.lobby.n1.abc"


@pytest.mark.parametrize(
    "key", [keys.conn_key("n1.abc"), keys.user_key("alice", "n1.abc"), keys.room_key("lobby", "n1.abc")]
)
def test_conn_id_is_recovered_from_any_key(key: str) -> None:
    assert keys.conn_id_from_key(key) == "n1.abc"


def test_user_filter_matches_only_that_users_keys() -> None:
    pattern = keys.user_filter("alice")
    assert filter_matches(pattern, keys.user_key("alice", "n1.abc"))
    assert filter_matches(pattern, keys.user_key("alice", "n2.xyz"))
    assert not filter_matches(pattern, keys.user_key("alice2", "n1.abc"))
    assert not filter_matches(pattern, keys.room_key("alice", "n1.abc"))


def test_room_filter_matches_only_that_rooms_keys() -> None:
    pattern = keys.room_filter("lobby")
    assert filter_matches(pattern, keys.room_key("lobby", "n1.abc"))
    assert not filter_matches(pattern, keys.room_key("lobby-2", "n1.abc"))
    assert not filter_matches(pattern, keys.user_key("lobby", "n1.abc"))


def test_node_conns_filter_matches_only_that_nodes_conn_keys() -> None:
    pattern = keys.node_conns_filter("n1")
    assert filter_matches(pattern, keys.conn_key("n1.abc"))
    assert not filter_matches(pattern, keys.conn_key("n2.abc"))
    assert not filter_matches(pattern, keys.user_key("n1", "n1.abc"))
