"""Tests for gateway.core.presence_writes: the writes of each connection event, and repairs."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from gateway.core import presence_writes as pw
from gateway.core.presence_writes import ConnRecord, LocalState, Write
from shared import presence_keys as keys
from shared.presence_keys import Layout

LAYOUT = Layout(shards=8)
ALICE = ConnRecord("n1.a", "n1", "alice", "/ws", "127.0.0.1:1", "2026-01-01T00:00:00.000Z")
ANON = ConnRecord("n1.b", "n1", None, "/ws", "127.0.0.1:2", "2026-01-01T00:00:00.000Z")


def test_a_connect_writes_the_user_key_then_the_conn_key_in_their_shards() -> None:
    writes = pw.register_writes(LAYOUT, ALICE)
    assert [(w.bucket, w.key) for w in writes] == [
        (LAYOUT.bucket_of("alice"), keys.user_key("alice", "n1.a")),
        (LAYOUT.bucket_of("n1.a"), keys.conn_key("n1.a")),
    ]
    assert orjson.loads(writes[1].value or b"") == {
        "conn": "n1.a",
        "node": "n1",
        "user": "alice",
        "route": "/ws",
        "remote": "127.0.0.1:1",
        "connected_at": "2026-01-01T00:00:00.000Z",
    }
    assert [w.key for w in pw.register_writes(LAYOUT, ANON)] == [keys.conn_key("n1.b")]  # no user key


def test_a_close_purges_rooms_then_user_then_conn() -> None:
    writes = pw.unregister_writes(LAYOUT, ALICE, {"vip", "lobby"})
    assert [w.key for w in writes] == [
        keys.room_key("lobby", "n1.a"),
        keys.room_key("vip", "n1.a"),
        keys.user_key("alice", "n1.a"),
        keys.conn_key("n1.a"),
    ]
    assert all(w.value is None for w in writes)
    assert writes[0].bucket == LAYOUT.bucket_of("lobby")


def test_join_and_leave_touch_the_rooms_shard() -> None:
    (put,) = pw.join_writes(LAYOUT, ALICE, "lobby", "2026-01-01T00:00:01.000Z")
    assert (put.bucket, put.key) == (LAYOUT.bucket_of("lobby"), keys.room_key("lobby", "n1.a"))
    assert orjson.loads(put.value or b"")["user"] == "alice"
    assert pw.leave_writes(LAYOUT, ALICE, "lobby") == [Write(put.bucket, put.key)]


def test_repair_purges_what_is_gone_and_writes_what_is_missing() -> None:
    expected = pw.expected_writes(LAYOUT, [LocalState(ALICE, frozenset({"lobby"}))], "t")
    gone = (LAYOUT.bucket_of("n1.z"), keys.conn_key("n1.z"))
    present = (LAYOUT.bucket_of("n1.a"), keys.conn_key("n1.a"))
    fix = pw.repair(expected, [present, gone])
    assert fix.writes[0] == Write(*gone)
    assert {(w.bucket, w.key) for w in fix.writes[1:]} == set(expected) - {present}
    assert (fix.rewritten, fix.purged) == (1, 1)


names = st.text("abcdefghij", min_size=1, max_size=3)


@given(st.sets(names, max_size=5), st.sets(st.tuples(names, names), max_size=8))
def test_repair_makes_the_buckets_equal_what_is_expected(
    users: set[str], actual: set[tuple[str, str]]
) -> None:
    states = [LocalState(ConnRecord(f"n1.{u}", "n1", u, "/", "", ""), frozenset({u})) for u in users]
    expected = pw.expected_writes(LAYOUT, states, "t")
    fix = pw.repair(expected, actual)
    state = set(actual)
    for write in fix.writes:
        (state.discard if write.value is None else state.add)((write.bucket, write.key))
    assert state == set(expected)
