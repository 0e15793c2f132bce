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


def test_fnv1a32_matches_the_published_test_vectors() -> None:
    # From the FNV reference (http://www.isthe.com/chongo/tech/comp/fnv/): any language can check its own.
    assert keys.fnv1a32("") == 0x811C9DC5
    assert keys.fnv1a32("a") == 0xE40C292C
    assert keys.fnv1a32("foobar") == 0xBF9CF968


def test_each_name_lives_in_the_shard_of_its_hash() -> None:
    layout = keys.Layout("presence", 16)
    assert layout.shard_buckets[0] == "presence-0"
    assert layout.shard_buckets[-1] == "presence-15"
    assert layout.bucket_of("alice") == f"presence-{keys.fnv1a32('alice') % 16}"
    assert layout.bucket_of_key(keys.conn_key("n1.abc")) == layout.bucket_of("n1.abc")
    assert layout.bucket_of_key(keys.user_key("alice", "n1.abc")) == layout.bucket_of("alice")
    assert layout.bucket_of_key(keys.room_key("lobby", "n1.abc")) == layout.bucket_of("lobby")
    assert layout.bucket_of_key(keys.node_info_key("n1")) == "presence"


def test_names_spread_evenly_over_the_shards() -> None:
    layout = keys.Layout("presence", 16)
    counts = [0] * 16
    for i in range(16_000):
        counts[layout.shard_buckets.index(layout.bucket_of(f"user{i}"))] += 1
    assert max(counts) < 1.15 * 1000
    assert min(counts) > 0.85 * 1000


def test_the_layout_round_trips_and_refuses_what_it_cannot_read() -> None:
    layout = keys.Layout("presence", 8)
    assert keys.Layout.from_json("presence", layout.to_json()) == layout
    with pytest.raises(ValueError, match="not one this version reads"):
        keys.Layout.from_json("presence", b'{"version":3,"shards":8,"hash":"fnv1a32"}')
    with pytest.raises(ValueError, match="not one this version reads"):
        keys.Layout.from_json("presence", b'{"version":2,"shards":0,"hash":"fnv1a32"}')
