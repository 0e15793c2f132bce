"""Tests for gateway.core.hub.Hub: local indexes, room/user refcounts and the Interest changes they emit."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from gateway.core.hub import Hub, Interest, JoinOutcome, Scope


def new_hub(max_rooms_per_conn: int = 10) -> Hub[str]:
    return Hub[str](max_rooms_per_conn)


def room_on(name: str) -> Interest:
    return Interest(Scope.ROOM, name, True)


def room_off(name: str) -> Interest:
    return Interest(Scope.ROOM, name, False)


def user_on(name: str) -> Interest:
    return Interest(Scope.USER, name, True)


def user_off(name: str) -> Interest:
    return Interest(Scope.USER, name, False)


# -- add / remove ----------------------------------------------------------------------------------------


def test_first_connection_of_a_user_starts_user_interest() -> None:
    hub = new_hub()
    assert hub.add("n1.a", "alice", "ha") == [user_on("alice")]
    assert hub.wants(Scope.USER, "alice")
    assert hub.get("n1.a") == "ha"
    assert len(hub) == 1


def test_second_connection_of_a_user_changes_no_interest() -> None:
    hub = new_hub()
    hub.add("n1.a", "alice", "ha")
    assert hub.add("n1.b", "alice", "hb") == []
    assert sorted(hub.user_conns("alice")) == ["ha", "hb"]
    assert sorted(hub.user_conn_ids("alice")) == ["n1.a", "n1.b"]


def test_anonymous_connection_starts_no_interest() -> None:
    hub = new_hub()
    assert hub.add("n1.a", None, "ha") == []
    assert hub.users == {}
    assert hub.get("n1.a") == "ha"


def test_adding_a_registered_conn_id_is_refused() -> None:
    hub = new_hub()
    hub.add("n1.a", "alice", "ha")
    with pytest.raises(ValueError, match=r"n1\.a"):
        hub.add("n1.a", "bob", "hb")
    assert hub.get("n1.a") == "ha"
    assert not hub.wants(Scope.USER, "bob")


def test_user_interest_ends_only_when_the_last_connection_goes() -> None:
    hub = new_hub()
    hub.add("n1.a", "alice", "ha")
    hub.add("n1.b", "alice", "hb")
    member, changes = hub.remove("n1.a")
    assert member is not None
    assert member.conn_id == "n1.a"
    assert changes == []
    assert hub.wants(Scope.USER, "alice")
    assert list(hub.user_conns("alice")) == ["hb"]
    _, changes = hub.remove("n1.b")
    assert changes == [user_off("alice")]
    assert not hub.wants(Scope.USER, "alice")
    assert list(hub.user_conns("alice")) == []


def test_remove_unknown_conn_returns_nothing() -> None:
    hub = new_hub()
    assert hub.remove("n1.missing") == (None, [])


def test_remove_is_idempotent() -> None:
    hub = new_hub()
    hub.add("n1.a", "alice", "ha")
    hub.remove("n1.a")
    assert hub.remove("n1.a") == (None, [])
    assert len(hub) == 0


def test_remove_returns_the_rooms_and_every_ended_interest() -> None:
    hub = new_hub()
    hub.add("n1.a", "alice", "ha")
    hub.add("n1.b", "bob", "hb")
    for room in ("lobby", "solo", "other"):
        hub.join("n1.a", room)
    hub.join("n1.b", "lobby")
    member, changes = hub.remove("n1.a")
    assert member is not None
    assert member.rooms == {"lobby", "solo", "other"}
    assert member.user == "alice"
    assert member.handle == "ha"
    assert sorted(changes, key=repr) == sorted(
        [room_off("solo"), room_off("other"), user_off("alice")], key=repr
    )
    assert hub.wants(Scope.ROOM, "lobby")
    assert list(hub.room_members("lobby")) == ["hb"]
    assert not hub.wants(Scope.ROOM, "solo")
    assert hub.rooms_of("n1.a") == set()


def test_remove_anonymous_member_of_a_room() -> None:
    hub = new_hub()
    hub.add("n1.a", None, "ha")
    hub.join("n1.a", "lobby")
    _, changes = hub.remove("n1.a")
    assert changes == [room_off("lobby")]
    assert hub.rooms == {}


# -- join / leave ----------------------------------------------------------------------------------------


def test_first_member_of_a_room_starts_room_interest() -> None:
    hub = new_hub()
    hub.add("n1.a", "alice", "ha")
    assert hub.join("n1.a", "lobby") == (JoinOutcome.JOINED, [room_on("lobby")])
    assert hub.wants(Scope.ROOM, "lobby")
    assert hub.rooms_of("n1.a") == {"lobby"}
    assert list(hub.room_members("lobby")) == ["ha"]


def test_second_member_of_a_room_changes_no_interest() -> None:
    hub = new_hub()
    hub.add("n1.a", "alice", "ha")
    hub.add("n1.b", "alice", "hb")
    hub.join("n1.a", "lobby")
    assert hub.join("n1.b", "lobby") == (JoinOutcome.JOINED, [])
    assert sorted(hub.room_members("lobby")) == ["ha", "hb"]


def test_joining_twice_is_already_member_and_changes_nothing() -> None:
    hub = new_hub()
    hub.add("n1.a", None, "ha")
    hub.join("n1.a", "lobby")
    assert hub.join("n1.a", "lobby") == (JoinOutcome.ALREADY_MEMBER, [])
    assert list(hub.room_members("lobby")) == ["ha"]


def test_join_by_unknown_conn_is_refused() -> None:
    hub = new_hub()
    assert hub.join("n1.ghost", "lobby") == (JoinOutcome.UNKNOWN_CONN, [])
    assert not hub.wants(Scope.ROOM, "lobby")


def test_room_limit_per_connection() -> None:
    hub = new_hub(max_rooms_per_conn=2)
    hub.add("n1.a", None, "ha")
    assert hub.join("n1.a", "r1")[0] is JoinOutcome.JOINED
    assert hub.join("n1.a", "r2")[0] is JoinOutcome.JOINED
    assert hub.join("n1.a", "r3") == (JoinOutcome.TOO_MANY_ROOMS, [])
    assert not hub.wants(Scope.ROOM, "r3")
    assert hub.join("n1.a", "r1") == (JoinOutcome.ALREADY_MEMBER, [])
    hub.leave("n1.a", "r1")
    assert hub.join("n1.a", "r3") == (JoinOutcome.JOINED, [room_on("r3")])


def test_room_limit_is_per_connection_not_per_node() -> None:
    hub = new_hub(max_rooms_per_conn=1)
    hub.add("n1.a", None, "ha")
    hub.add("n1.b", None, "hb")
    assert hub.join("n1.a", "r1")[0] is JoinOutcome.JOINED
    assert hub.join("n1.b", "r2")[0] is JoinOutcome.JOINED


def test_zero_room_limit_refuses_every_join() -> None:
    hub = new_hub(max_rooms_per_conn=0)
    hub.add("n1.a", None, "ha")
    assert hub.join("n1.a", "r1") == (JoinOutcome.TOO_MANY_ROOMS, [])


def test_last_member_leaving_ends_room_interest() -> None:
    hub = new_hub()
    hub.add("n1.a", None, "ha")
    hub.add("n1.b", None, "hb")
    hub.join("n1.a", "lobby")
    hub.join("n1.b", "lobby")
    assert hub.leave("n1.a", "lobby") == (True, [])
    assert hub.wants(Scope.ROOM, "lobby")
    assert hub.leave("n1.b", "lobby") == (True, [room_off("lobby")])
    assert not hub.wants(Scope.ROOM, "lobby")
    assert hub.rooms == {}


def test_leave_of_a_room_not_joined_is_false() -> None:
    hub = new_hub()
    hub.add("n1.a", None, "ha")
    hub.add("n1.b", None, "hb")
    hub.join("n1.b", "lobby")
    assert hub.leave("n1.a", "lobby") == (False, [])
    assert hub.leave("n1.a", "nowhere") == (False, [])
    assert hub.leave("n1.ghost", "lobby") == (False, [])
    assert list(hub.room_members("lobby")) == ["hb"]


def test_rejoin_after_leave_starts_interest_again() -> None:
    hub = new_hub()
    hub.add("n1.a", None, "ha")
    hub.join("n1.a", "lobby")
    hub.leave("n1.a", "lobby")
    assert hub.join("n1.a", "lobby") == (JoinOutcome.JOINED, [room_on("lobby")])


def test_rooms_and_users_are_separate_namespaces() -> None:
    hub = new_hub()
    hub.add("n1.a", "same", "ha")
    assert hub.join("n1.a", "same") == (JoinOutcome.JOINED, [room_on("same")])
    assert hub.leave("n1.a", "same") == (True, [room_off("same")])
    assert hub.wants(Scope.USER, "same")
    assert not hub.wants(Scope.ROOM, "same")


def test_rooms_of_returns_a_copy() -> None:
    hub = new_hub()
    hub.add("n1.a", None, "ha")
    hub.join("n1.a", "lobby")
    hub.rooms_of("n1.a").add("injected")
    assert hub.rooms_of("n1.a") == {"lobby"}
    assert hub.rooms_of("n1.ghost") == set()


def test_lookups_of_unknown_names_are_empty() -> None:
    hub = new_hub()
    assert hub.get("n1.ghost") is None
    assert list(hub.room_members("nowhere")) == []
    assert list(hub.user_conns("nobody")) == []
    assert hub.user_conn_ids("nobody") == []
    assert not hub.wants(Scope.ROOM, "nowhere")
    assert not hub.wants(Scope.USER, "nobody")


# -- stateful model --------------------------------------------------------------------------------------

CONN_IDS = [f"n1.c{i}" for i in range(6)]
USERS = [None, "alice", "bob", "carol"]
ROOMS = ["r1", "r2", "r3", "r4"]
MAX_ROOMS = 3


class HubMachine(RuleBasedStateMachine):
    """Random add/remove/join/leave sequences; the hub must stay consistent with a simple model."""

    def __init__(self) -> None:
        super().__init__()
        self.hub = new_hub(MAX_ROOMS)
        self.listening: set[tuple[Scope, str]] = set()
        self.model_users: dict[str, str | None] = {}
        self.model_rooms: dict[str, set[str]] = {}

    def apply(self, changes: list[Interest]) -> None:
        for change in changes:
            key = (change.scope, change.name)
            if change.active:
                assert key not in self.listening, f"started {key} twice"
                self.listening.add(key)
            else:
                assert key in self.listening, f"stopped {key} that was not started"
                self.listening.remove(key)

    @rule(conn_id=st.sampled_from(CONN_IDS), user=st.sampled_from(USERS))
    def add(self, conn_id: str, user: str | None) -> None:
        if conn_id in self.model_users:
            with pytest.raises(ValueError, match="already registered"):
                self.hub.add(conn_id, user, "h-" + conn_id)
            return
        self.apply(self.hub.add(conn_id, user, "h-" + conn_id))
        self.model_users[conn_id] = user
        self.model_rooms[conn_id] = set()

    @rule(conn_id=st.sampled_from(CONN_IDS))
    def remove(self, conn_id: str) -> None:
        member, changes = self.hub.remove(conn_id)
        if conn_id not in self.model_users:
            assert member is None
            assert changes == []
            return
        assert member is not None
        assert member.rooms == self.model_rooms[conn_id]
        assert member.user == self.model_users[conn_id]
        self.apply(changes)
        del self.model_users[conn_id]
        del self.model_rooms[conn_id]

    @rule(conn_id=st.sampled_from(CONN_IDS), room=st.sampled_from(ROOMS))
    def join(self, conn_id: str, room: str) -> None:
        outcome, changes = self.hub.join(conn_id, room)
        self.apply(changes)
        if conn_id not in self.model_rooms:
            assert outcome is JoinOutcome.UNKNOWN_CONN
        elif room in self.model_rooms[conn_id]:
            assert outcome is JoinOutcome.ALREADY_MEMBER
        elif len(self.model_rooms[conn_id]) >= MAX_ROOMS:
            assert outcome is JoinOutcome.TOO_MANY_ROOMS
        else:
            assert outcome is JoinOutcome.JOINED
            self.model_rooms[conn_id].add(room)
        if outcome is not JoinOutcome.JOINED:
            assert changes == []

    @rule(conn_id=st.sampled_from(CONN_IDS), room=st.sampled_from(ROOMS))
    def leave(self, conn_id: str, room: str) -> None:
        was_member, changes = self.hub.leave(conn_id, room)
        self.apply(changes)
        expected = room in self.model_rooms.get(conn_id, set())
        assert was_member is expected
        if expected:
            self.model_rooms[conn_id].discard(room)
        else:
            assert changes == []

    @invariant()
    def indexes_agree_with_members(self) -> None:
        hub = self.hub
        assert set(hub.conns) == set(self.model_users)
        expected_rooms: dict[str, dict[str, str]] = {}
        expected_users: dict[str, dict[str, str]] = {}
        for conn_id, member in hub.conns.items():
            assert member.conn_id == conn_id
            assert member.rooms == self.model_rooms[conn_id]
            assert len(member.rooms) <= MAX_ROOMS
            for room in member.rooms:
                expected_rooms.setdefault(room, {})[conn_id] = member.handle
            if member.user is not None:
                expected_users.setdefault(member.user, {})[conn_id] = member.handle
        assert hub.rooms == expected_rooms
        assert hub.users == expected_users

    @invariant()
    def emitted_interests_equal_what_the_hub_wants(self) -> None:
        wanted = {(Scope.ROOM, room) for room in ROOMS if self.hub.wants(Scope.ROOM, room)}
        wanted |= {(Scope.USER, user) for user in USERS if user and self.hub.wants(Scope.USER, user)}
        assert self.listening == wanted


HubMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_hub_state_machine = HubMachine.TestCase
