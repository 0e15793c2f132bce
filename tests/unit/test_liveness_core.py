"""Tests for gateway.core.liveness: who is silent and who may judge, and what a dead node's keys say."""

from __future__ import annotations

from typing import Any

from gateway.core.liveness import LOST_CLOSE_CODE, BeatTable, beat_interval, lost_connections
from shared import presence_keys as keys

TTL = 6.0


def linked_table(now: float = 0.0) -> BeatTable:
    table = BeatTable("me", TTL)
    table.link_up(now)
    return table


def test_a_node_is_silent_once_unheard_for_longer_than_its_ttl() -> None:
    table = linked_table()
    table.heard("a", {"node": "a", "ttl": TTL}, 0.0)
    table.heard("b", {"node": "b", "ttl": 20}, 0.0)  # its own, longer TTL counts
    for t in range(0, 10):
        table.heard("me", {"node": "me"}, float(t))
    assert table.silent(TTL) == []
    assert table.silent(9.0) == ["a"]
    table.heard("a", {"node": "a"}, 9.0)
    assert table.silent(9.0) == []


def test_nobody_is_judged_by_a_node_that_just_linked_or_no_longer_hears_itself() -> None:
    table = linked_table(now=100.0)
    table.heard("a", {"node": "a"}, 0.0)  # heard long ago
    table.heard("me", {"node": "me"}, 100.0)
    assert table.silent(101.0) == []  # linked for 1 s only: it may have missed a's beats
    table.heard("me", {"node": "me"}, 106.5)
    assert table.silent(107.0) == ["a"]
    # Its own beats stop coming back (its link to NATS is broken): it judges nobody.
    assert table.silent(107.0 + 2 * beat_interval(TTL) + 2) == []
    table.link_down()
    table.heard("me", {"node": "me"}, 120.0)
    assert table.silent(120.0) == []


def test_a_node_that_stopped_or_was_swept_is_forgotten() -> None:
    table = linked_table()
    table.heard("a", {"node": "a", "connections": 3}, 0.0)
    assert table.alive()["a"]["connections"] == 3
    table.forget("a")
    assert "a" not in table.alive()
    table.heard("me", {"node": "me"}, 20.0)
    assert table.silent(20.0) == []


def test_lost_connections_come_from_conn_keys_with_the_rooms_of_room_keys() -> None:
    conns: dict[str, Any] = {
        keys.conn_key("n1.a"): {
            "conn": "n1.a",
            "node": "n1",
            "user": "alice",
            "route": "/ws",
            "remote": "127.0.0.1:5000",
            "connected_at": "2026-11-22T10:00:00.000Z",
        },
        keys.conn_key("n1.b"): {"conn": "n1.b", "node": "n1", "user": None, "route": "/ws"},
    }
    rooms = [keys.room_key("lobby", "n1.a"), keys.room_key("vip", "n1.a"), keys.room_key("x", "n1.gone")]
    lost = lost_connections("n1", conns, rooms)
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


def test_room_keys_without_a_conn_key_name_no_connection() -> None:
    # The conn key is written last on open and purged last on close: without it, the connection was
    # never announced, or its close already was.
    assert lost_connections("n1", {}, [keys.room_key("lobby", "n1.a")]) == []


def test_keys_of_other_nodes_are_ignored() -> None:
    assert lost_connections("n1", {keys.conn_key("n10.a"): {}}, []) == []
