"""Tests for gateway.core.room_presence: debounced, batched room presence with an injected clock."""

from __future__ import annotations

import itertools

import orjson
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gateway.config import GatewayConfig
from gateway.core.room_presence import (
    Diff,
    Membership,
    Output,
    PresenceTracker,
    RoomMatcher,
    Snapshot,
    parse_entry,
    pattern_error,
)
from shared import frames
from shared.config import load
from shared.errors import ConfigError

ROOM = "lobby"


class Sim:
    """A tracker driven by a fake clock, with what each local connection has been told so far."""

    def __init__(self, debounce: float = 5.0, batch: float = 0.2, key_wait: float = 2.0) -> None:
        self.tracker = PresenceTracker[str](debounce, batch, key_wait)
        self.now = 0.0
        self.views: dict[str, set[str]] = {}
        self.log: list[tuple[float, Output[str]]] = []

    def local(self, conn: str, room: str = ROOM) -> bool:
        return self.tracker.add_local(room, conn, conn, self.now)

    def gone(self, conn: str, room: str = ROOM) -> bool:
        self.views.pop(conn, None)
        return self.tracker.remove_local(room, conn)

    def put(self, conn: str, user: str | None, room: str = ROOM) -> None:
        self.tracker.entry(room, Membership(conn, user, True), self.now)

    def purge(self, conn: str, room: str = ROOM) -> None:
        self.tracker.entry(room, Membership(conn, None, False), self.now)

    def caught_up(self, room: str = ROOM) -> None:
        self.tracker.caught_up(room, self.now)

    def advance(self, seconds: float = 0.0) -> list[Output[str]]:
        """Move the clock, running every tick that falls due on the way (at its own time)."""
        target = self.now + seconds
        out: list[Output[str]] = []
        while (due := self.tracker.next_due()) is not None and due <= target:
            self.now = max(self.now, due)
            out += self._apply(self.tracker.tick(self.now))
        self.now = target
        return out

    def _apply(self, outputs: list[Output[str]]) -> list[Output[str]]:
        for output in outputs:
            self.log.append((self.now, output))
            for conn in output.targets:
                if isinstance(output, Snapshot):
                    assert conn not in self.views, f"{conn} got a second snapshot"
                    self.views[conn] = set(output.members)
                else:
                    view = self.views[conn]
                    assert not view & set(output.joined), f"{conn} told of a join of a present user"
                    assert set(output.left) <= view, f"{conn} told of a leave of an absent user"
                    view |= set(output.joined)
                    view -= set(output.left)
        return outputs


def started(*members: tuple[str, str | None], batch: float = 0.2, debounce: float = 5.0) -> Sim:
    """A quiet room whose watch listed ``members`` (conn, user); local ``n1.me`` (user ``me``) has its
    snapshot."""
    sim = Sim(debounce=debounce, batch=batch)
    assert sim.local("n1.me") is True
    for conn, user in [("n1.me", "me"), *members]:
        sim.put(conn, user)
    sim.caught_up()
    sim.advance()
    assert "n1.me" in sim.views
    sim.advance(1)  # quiet for longer than a batch interval
    sim.log.clear()
    return sim


def diffs(outputs: list[Output[str]]) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    return [(o.joined, o.left) for o in outputs if isinstance(o, Diff)]


# -- snapshots -----------------------------------------------------------------------------------------------


def test_first_listing_is_not_news_and_the_joiner_gets_a_snapshot_with_itself() -> None:
    sim = Sim()
    assert sim.local("n1.a") is True
    sim.put("n2.x", "bob")
    sim.put("n1.a", "alice")
    sim.put("n2.anon", None)
    assert sim.advance(1) == []  # nothing before the watch has caught up
    sim.caught_up()
    out = sim.advance()
    assert out == [Snapshot(ROOM, ("alice", "bob"), ("n1.a",))]


def test_a_listing_purge_before_catch_up_removes_the_member() -> None:
    sim = Sim()
    sim.local("n1.a")
    sim.put("n1.a", "alice")
    sim.put("n2.x", "bob")
    sim.purge("n2.x")
    sim.caught_up()
    assert sim.advance() == [Snapshot(ROOM, ("alice",), ("n1.a",))]


def test_anonymous_members_are_never_listed_or_announced() -> None:
    sim = started()
    sim.put("n2.anon", None)
    sim.advance(1)
    sim.purge("n2.anon")
    assert sim.advance(10) == []
    assert sim.views["n1.me"] == {"me"}


def test_snapshot_waits_for_the_joiners_own_key() -> None:
    sim = started(("n2.x", "bob"))
    sim.local("n1.a")
    assert sim.advance(0.5) == []
    sim.put("n1.a", "alice")
    out = sim.advance()
    assert out == [
        Diff(ROOM, ("alice",), (), ("n1.me",)),
        Snapshot(ROOM, ("alice", "bob", "me"), ("n1.a",)),
    ]


def test_snapshot_without_a_key_is_sent_after_the_key_wait() -> None:
    sim = Sim(key_wait=2.0)
    sim.local("n1.a")
    sim.put("n2.x", "bob")
    sim.caught_up()
    assert sim.advance(1.9) == []
    assert sim.advance(0.2) == [Snapshot(ROOM, ("bob",), ("n1.a",))]
    assert sim.log[0][0] == pytest.approx(2.0)


def test_second_local_conn_of_a_present_user_gets_a_snapshot_and_no_one_hears_of_it() -> None:
    sim = started(("n2.x", "bob"))
    sim.local("n1.me2")
    sim.put("n1.me2", "me")
    assert sim.advance() == [Snapshot(ROOM, ("bob", "me"), ("n1.me2",))]


# -- joins and leaves ----------------------------------------------------------------------------------------


def test_a_join_after_a_quiet_spell_goes_out_at_once() -> None:
    sim = started()
    sim.advance(1)
    sim.put("n2.x", "bob")
    assert sim.advance() == [Diff(ROOM, ("bob",), (), ("n1.me",))]


def test_a_leave_is_announced_only_after_the_debounce() -> None:
    sim = started(("n2.x", "bob"), debounce=5.0)
    sim.purge("n2.x")
    gone_at = sim.now
    assert sim.advance(4.99) == []
    assert sim.advance(0.02) == [Diff(ROOM, (), ("bob",), ("n1.me",))]
    assert sim.log[0][0] == pytest.approx(gone_at + 5.0)


def test_a_reconnect_within_the_debounce_announces_nothing() -> None:
    sim = started(("n2.x", "bob"), debounce=5.0)
    sim.purge("n2.x")
    sim.advance(3)
    sim.put("n3.y", "bob")  # back, on another node
    assert sim.advance(10) == []
    assert sim.views["n1.me"] == {"bob", "me"}


def test_a_user_leaves_only_when_the_last_of_its_keys_goes() -> None:
    sim = started(("n2.x", "bob"), ("n3.y", "bob"), debounce=1.0)
    sim.purge("n2.x")
    assert sim.advance(5) == []
    sim.purge("n3.y")
    assert diffs(sim.advance(5)) == [((), ("bob",))]


def test_a_user_back_after_the_debounce_is_a_new_join() -> None:
    sim = started(("n2.x", "bob"), debounce=1.0)
    sim.purge("n2.x")
    sim.advance(2)
    sim.put("n2.z", "bob")
    assert diffs(sim.advance(1)) == [(("bob",), ())]


def test_changes_within_the_batch_interval_are_coalesced_into_one_frame() -> None:
    sim = started(("n2.old", "zed"), batch=0.5, debounce=0.0)
    sim.advance(1)
    sim.put("n2.a", "a")  # first change after a quiet spell: at once
    assert diffs(sim.advance()) == [(("a",), ())]
    for i, user in enumerate(["b", "c", "d"]):
        sim.put(f"n2.{user}{i}", user)
        sim.advance(0.1)
    sim.purge("n2.old")
    out = sim.advance(1)
    assert diffs(out) == [(("b", "c", "d"), ("zed",))]
    assert sim.log[-1][0] - sim.log[-2][0] == pytest.approx(0.5)  # one batch interval after the first


def test_a_mass_reconnect_produces_no_frames() -> None:
    users = [(f"n2.{i}", f"u{i}") for i in range(500)]
    sim = started(*users, debounce=5.0, batch=0.2)
    for conn, _ in users:
        sim.purge(conn)
        sim.advance(0.001)
    sim.advance(2)
    for conn, user in users:
        sim.put(conn.replace("n2.", "n3."), user)
        sim.advance(0.001)
    assert sim.advance(30) == []
    assert sim.views["n1.me"] == {"me"} | {u for _, u in users}


def test_a_mass_disconnect_is_a_few_frames_not_a_storm() -> None:
    users = [(f"n2.{i}", f"u{i}") for i in range(300)]
    sim = started(*users, debounce=5.0, batch=0.2)
    for conn, _ in users:
        sim.purge(conn)
        sim.advance(0.005)  # spread over 1.5 s
    sim.advance(10)
    frames_sent = diffs([o for _, o in sim.log])
    assert 2 <= len(frames_sent) <= 10
    assert sorted(u for _, left in frames_sent for u in left) == sorted(u for _, u in users)
    times = [t for t, _ in sim.log]
    assert all(b - a >= 0.2 - 1e-9 for a, b in itertools.pairwise(times))


def test_a_join_and_leave_before_the_flush_cancel_out() -> None:
    sim = started(batch=1.0, debounce=0.0)
    sim.put("n2.a", "a")
    sim.advance()  # "a" joined, flushed at once
    sim.put("n2.b", "b")  # pending until t+1
    sim.purge("n2.b")
    assert sim.advance(5) == []


def test_a_rewrite_of_the_same_key_is_nothing() -> None:
    sim = started(("n2.x", "bob"))
    sim.put("n2.x", "bob")
    assert sim.advance(10) == []


# -- local members and the room's lifetime -------------------------------------------------------------------


def test_room_state_lives_only_while_there_are_local_members() -> None:
    sim = Sim()
    assert sim.local("n1.a") is True
    assert sim.local("n1.b") is False
    assert sim.gone("n1.a") is False
    assert sim.gone("n1.b") is True
    assert sim.tracker.rooms == {}
    sim.put("n2.x", "bob")  # a late entry from a stopped watch
    sim.caught_up()
    assert sim.advance(10) == []
    assert sim.gone("n1.zzz") is False


def test_a_member_that_left_gets_nothing_more() -> None:
    sim = started(("n2.x", "bob"))
    sim.local("n1.c")
    sim.put("n1.c", "carol")
    assert sim.advance() == [
        Diff(ROOM, ("carol",), (), ("n1.me",)),
        Snapshot(ROOM, ("bob", "carol", "me"), ("n1.c",)),
    ]
    sim.gone("n1.c")
    sim.put("n2.y", "dave")
    out = sim.advance(1)
    assert out == [Diff(ROOM, ("dave",), (), ("n1.me",))]


def test_a_local_member_that_leaves_before_its_snapshot_gets_none() -> None:
    sim = started()
    sim.local("n1.c")
    sim.gone("n1.c")
    sim.put("n1.c", "carol")
    out = sim.advance()
    assert out == [Diff(ROOM, ("carol",), (), ("n1.me",))]


def test_rooms_are_independent() -> None:
    sim = started()
    sim.local("n1.o", room="other")
    sim.put("n1.o", "otto", room="other")
    sim.caught_up(room="other")
    sim.put("n2.x", "bob")
    out = sim.advance()
    assert out == [Diff(ROOM, ("bob",), (), ("n1.me",)), Snapshot("other", ("otto",), ("n1.o",))]


def test_a_restarted_watch_diffs_its_listing_against_what_it_knew() -> None:
    sim = started(("n2.stay", "stay"), ("n2.gone", "gone"), debounce=1.0)
    sim.tracker.reload(ROOM)
    sim.put("n1.me", "me")
    sim.put("n2.stay", "stay")
    sim.put("n3.new", "new")
    assert sim.advance(5) == []  # nothing until the listing is complete
    sim.caught_up()
    assert diffs(sim.advance()) == [(("new",), ())]
    assert diffs(sim.advance(2)) == [((), ("gone",))]


# -- matching, entries, frames, settings ---------------------------------------------------------------------


def test_room_matcher_takes_names_and_patterns() -> None:
    matcher = RoomMatcher(["lobby", "chat-*", "game-?", "team-[ab]"])
    for room in ("lobby", "chat-1", "chat-", "game-7", "team-a"):
        assert matcher.matches(room), room
    for room in ("lobby2", "chat", "game-17", "team-c", "Lobby"):
        assert not matcher.matches(room), room
    assert not RoomMatcher([])
    assert not RoomMatcher([]).matches("lobby")
    assert RoomMatcher(["*"]).matches("anything")


@pytest.mark.parametrize("pattern", ["lobby", "chat-*", "*", "team-[!ab]", "a=b_c"])
def test_valid_patterns(pattern: str) -> None:
    assert pattern_error(pattern) is None


@pytest.mark.parametrize("pattern", ["", "a.b", "a b", "room.>", "x" * 129])
def test_invalid_patterns(pattern: str) -> None:
    assert pattern_error(pattern)


def test_parse_entry() -> None:
    value = orjson.dumps({"conn": "n1.a", "node": "n1", "user": "alice", "joined_at": "t"})
    assert parse_entry("room.lobby.n1.a", None, value) == Membership("n1.a", "alice", True)
    anon = orjson.dumps({"conn": "n1.b", "node": "n1", "user": None})
    assert parse_entry("room.lobby.n1.b", None, anon) == Membership("n1.b", None, True)
    assert parse_entry("room.lobby.n1.a", "PURGE", b"") == Membership("n1.a", None, False)
    assert parse_entry("room.lobby.n1.a", "DEL", None) == Membership("n1.a", None, False)
    assert parse_entry("room.lobby.n1.a", None, b"not json") == Membership("n1.a", None, True)
    assert parse_entry("conn.n1.a", None, value) is None
    assert parse_entry("room.lobby.n1", None, value) is None


def test_presence_frames_start_with_the_prism_prefix_and_omit_empty_lists() -> None:
    [snap] = frames.presence_snapshot("lobby", ["alice", "bob"])
    assert snap == b'{"prism":"presence","room":"lobby","members":["alice","bob"]}'
    [empty] = frames.presence_snapshot("lobby", [])
    assert orjson.loads(empty) == {"prism": "presence", "room": "lobby", "members": []}
    [diff] = frames.presence_diff("lobby", ["carol"], ["bob"])
    assert diff == b'{"prism":"presence","room":"lobby","joined":["carol"],"left":["bob"]}'
    [only_left] = frames.presence_diff("lobby", [], ["bob"])
    assert orjson.loads(only_left) == {"prism": "presence", "room": "lobby", "left": ["bob"]}
    assert frames.presence_diff("lobby", [], []) == []
    assert all(frames.is_prism_frame(f) for f in (snap, diff))


def test_big_presence_batches_are_split() -> None:
    names = [f"u{i:04}" for i in range(2500)]
    parts = [orjson.loads(f) for f in frames.presence_snapshot("r", names)]
    assert [len(p.get("members", p.get("joined"))) for p in parts] == [1000, 1000, 500]
    assert "members" in parts[0]
    assert all(set(p) == {"prism", "room", "joined"} for p in parts[1:])
    assert [n for p in parts for n in p.get("members", p.get("joined", []))] == names
    diffs_ = [orjson.loads(f) for f in frames.presence_diff("r", names[:1500], names[1500:])]
    assert [len(d.get("joined", [])) + len(d.get("left", [])) for d in diffs_] == [1000, 1000, 500]
    assert [n for d in diffs_ for n in d.get("joined", [])] == names[:1500]
    assert [n for d in diffs_ for n in d.get("left", [])] == names[1500:]


def test_settings_defaults_and_environment() -> None:
    config = GatewayConfig()
    assert config.room_presence == ()
    assert config.presence_debounce == 5.0
    assert config.presence_batch == 0.2
    env = {"PRISM_ROOM_PRESENCE": "lobby, chat-*", "PRISM_PRESENCE_DEBOUNCE": "2.5"}
    loaded = load(GatewayConfig, None, environ=env)
    assert loaded.room_presence == ("lobby", "chat-*")
    assert loaded.presence_debounce == 2.5


@pytest.mark.parametrize(
    "overrides",
    [
        {"room_presence": ("a.b",)},
        {"room_presence": ("room.>",)},
        {"presence_debounce": -1.0},
        {"presence_debounce": float("nan")},
        {"presence_batch": float("inf")},
    ],
)
def test_bad_settings_are_refused(overrides: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        load(GatewayConfig, None, environ={}, **overrides)


# -- the invariants, for any sequence of changes ------------------------------------------------------------

USERS = ["alice", "bob", "carol", None]
DEBOUNCE = 1.0


class PresenceMachine(RuleBasedStateMachine):
    """Random membership changes on several nodes' keys and local joins, with time passing.

    Every local member's view (snapshot + diffs) always equals what the tracker shows; a leave is only
    ever announced for a user absent for the whole debounce; once things settle, views equal the keys.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sim = Sim(debounce=DEBOUNCE, batch=0.3, key_wait=0.5)
        self.keys: dict[str, str | None] = {}
        self.absent_since: dict[str, float] = {}
        self.locals: set[str] = set()
        self.serial = 0
        self.sim.local("n1.first")
        self.locals.add("n1.first")
        self.sim.caught_up()

    def _present(self) -> set[str]:
        return {u for u in self.keys.values() if u is not None}

    def _check_new_outputs(self, start: int) -> None:
        for at, output in self.sim.log[start:]:
            if isinstance(output, Diff):
                for user in output.left:
                    assert user not in self._present()
                    assert at - self.absent_since[user] >= DEBOUNCE - 1e-9

    def _record(self, before: set[str]) -> None:
        after = self._present()
        for user in before - after:
            self.absent_since[user] = self.sim.now

    @rule(user=st.sampled_from(USERS), node=st.sampled_from(["n2", "n3"]))
    def put(self, user: str | None, node: str) -> None:
        self.serial += 1
        conn = f"{node}.c{self.serial}"
        before = self._present()
        self.keys[conn] = user
        self.sim.put(conn, user)
        self._record(before)

    @precondition(lambda self: bool(self.keys))
    @rule(data=st.data())
    def purge(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from(sorted(self.keys)))
        before = self._present()
        del self.keys[conn]
        self.sim.purge(conn)
        self._record(before)

    @rule(seconds=st.sampled_from([0.0, 0.05, 0.2, 0.4, 0.9, 1.1, 3.0]))
    def wait(self, seconds: float) -> None:
        start = len(self.sim.log)
        self.sim.advance(seconds)
        self._check_new_outputs(start)

    @rule(user=st.sampled_from(USERS))
    def local_join(self, user: str | None) -> None:
        self.serial += 1
        conn = f"n1.l{self.serial}"
        self.sim.local(conn)
        self.locals.add(conn)
        before = self._present()
        self.keys[conn] = user
        self.sim.put(conn, user)
        self._record(before)

    @precondition(lambda self: len(self.locals) > 1)
    @rule(data=st.data())
    def local_leave(self, data: st.DataObject) -> None:
        conn = data.draw(st.sampled_from(sorted(self.locals - {"n1.first"})))
        self.locals.discard(conn)
        self.sim.gone(conn)
        before = self._present()
        self.keys.pop(conn, None)
        self.sim.purge(conn)
        self._record(before)

    @invariant()
    def views_match_what_the_room_shows(self) -> None:
        state = self.sim.tracker.rooms[ROOM]
        shown = (state.visible - state.joined) | state.left  # what the last flush told everyone
        for conn, view in self.sim.views.items():
            assert view == shown, conn

    def teardown(self) -> None:
        start = len(self.sim.log)
        self.sim.advance(DEBOUNCE + 1.0)
        self._check_new_outputs(start)
        present = self._present()
        for conn in self.locals:
            assert self.sim.views[conn] == present, conn


TestPresenceMachine = PresenceMachine.TestCase
TestPresenceMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
