"""Tests for gateway.core.liveness: dead nodes, what a dead node's keys say, repairing a node's keys."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.core.liveness import (
    LOST_CLOSE_CODE,
    LocalState,
    dead_nodes,
    expected_keys,
    lost_connections,
    repair,
)
from shared import presence_keys as keys


def test_dead_nodes_are_registered_without_heartbeat_and_never_this_one() -> None:
    assert dead_nodes({"a", "b", "c", "me"}, {"a"}, "me") == {"b", "c"}
    assert dead_nodes({"a"}, {"a", "b"}, "me") == set()
    assert dead_nodes({"me"}, set(), "me") == set()


def test_lost_connections_groups_keys_by_connection() -> None:
    entries: dict[str, Any] = {
        keys.conn_key("n1.a"): {
            "conn": "n1.a",
            "node": "n1",
            "user": "alice",
            "route": "/ws",
            "remote": "127.0.0.1:5000",
            "connected_at": "2026-11-22T10:00:00.000Z",
        },
        keys.user_key("alice", "n1.a"): {"conn": "n1.a", "node": "n1", "connected_at": "x"},
        keys.room_key("lobby", "n1.a"): {"conn": "n1.a", "user": "alice"},
        keys.room_key("vip", "n1.a"): {"conn": "n1.a", "user": "alice"},
        keys.conn_key("n1.b"): {"conn": "n1.b", "node": "n1", "user": None, "route": "/ws"},
    }
    lost = lost_connections("n1", entries)
    assert [c.conn for c in lost] == ["n1.a", "n1.b"]
    alice, anonymous = lost
    assert alice.user == "alice"
    assert alice.rooms == {"lobby", "vip"}
    assert alice.connected_at == "2026-11-22T10:00:00.000Z"
    assert anonymous.user is None
    assert anonymous.rooms == set()
    event = alice.disconnect_event("2026-11-22T10:01:00.000Z", "n2")
    assert event["code"] == LOST_CLOSE_CODE
    assert event["rooms"] == ["lobby", "vip"]
    assert event["swept_by"] == "n2"
    assert event["node"] == "n1"


def test_a_half_closed_connection_is_still_reported() -> None:
    # The conn key went, the room key did not: the connection is still named, with its user.
    lost = lost_connections("n1", {keys.room_key("lobby", "n1.a"): {"user": "bob"}})
    assert len(lost) == 1
    assert lost[0].user == "bob"
    assert lost[0].rooms == {"lobby"}


def test_keys_of_other_nodes_are_ignored() -> None:
    assert lost_connections("n1", {keys.conn_key("n10.a"): {}}) == []


def test_expected_keys_and_repair() -> None:
    states = [
        LocalState("n1.a", "alice", frozenset({"lobby"})),
        LocalState("n1.b", None, frozenset()),
    ]
    expected = expected_keys(states)
    assert set(expected) == {
        keys.conn_key("n1.a"),
        keys.user_key("alice", "n1.a"),
        keys.room_key("lobby", "n1.a"),
        keys.conn_key("n1.b"),
    }
    actual = {keys.conn_key("n1.a"), keys.conn_key("n1.gone"), keys.user_key("carol", "n1.gone")}
    fix = repair(expected, actual)
    assert fix.missing == sorted(set(expected) - actual)
    assert fix.extra == sorted([keys.conn_key("n1.gone"), keys.user_key("carol", "n1.gone")])


names = st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=8)


@given(st.sets(names, max_size=6), st.sets(names, max_size=6))
def test_repair_makes_actual_equal_expected(expected: set[str], actual: set[str]) -> None:
    fix = repair(expected, actual)
    assert (actual - set(fix.extra)) | set(fix.missing) == expected
    assert not set(fix.missing) & actual
    assert not set(fix.extra) & expected
