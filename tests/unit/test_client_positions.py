"""The client's position bookkeeping (shared/client/positions.py): what each recovery, pos and mark frame does
to the positions the SDK sends on its next join or connection."""

from __future__ import annotations

from shared.client.positions import Positions, Recovery
from shared.frames import Position


def test_a_recovery_frame_sets_the_position_and_is_reported() -> None:
    positions = Positions()
    frame = {"prism": "recovery", "room": "lobby", "recoverable": True, "epoch": "k3x", "seq": 10,
             "recovering": True, "recovered": False}  # fmt: skip
    recovery = positions.recovery(frame)
    assert recovery == Recovery("lobby", None, True, "k3x", 10, recovering=True, recovered=False)
    assert recovery.position == Position("k3x", 10)
    assert positions.rooms == {"lobby": Position("k3x", 10)}


def test_deliveries_move_the_position_and_duplicates_are_dropped() -> None:
    positions = Positions()
    positions.recovery({"prism": "recovery", "user": "ada", "recoverable": True, "epoch": "e", "seq": 5})
    expected = positions.expect({"prism": "pos", "user": "ada", "seq": 7})
    assert expected == ("user", "ada", 7)
    assert positions.accept(expected)
    assert positions.user == Position("e", 7)
    assert not positions.accept(("user", "ada", 7))  # the same message again
    assert not positions.accept(("user", "ada", 6))
    assert positions.user_query() == {"recover": "user", "user_epoch": "e", "user_seq": "7"}


def test_a_mark_only_moves_forward() -> None:
    positions = Positions()
    positions.recovery({"prism": "recovery", "room": "r", "recoverable": True, "epoch": "e", "seq": 5})
    positions.mark({"prism": "mark", "room": "r", "seq": 50})
    positions.mark({"prism": "mark", "room": "r", "seq": 40})
    assert positions.rooms["r"] == Position("e", 50)
    positions.mark({"prism": "mark", "room": "unknown", "seq": 60})
    assert "unknown" not in positions.rooms


def test_a_new_epoch_replaces_the_old_position() -> None:
    positions = Positions()
    positions.recovery({"prism": "recovery", "room": "r", "recoverable": True, "epoch": "old", "seq": 900})
    notice = {"prism": "recovery", "room": "r", "recoverable": True, "epoch": "new", "seq": 0,
              "recovering": True, "recovered": False}  # fmt: skip
    positions.recovery(notice)
    assert positions.accept(("room", "r", 1))
    assert positions.rooms["r"] == Position("new", 1)


def test_without_history_there_is_no_position() -> None:
    positions = Positions(user=Position("e", 3))
    recovery = positions.recovery({"prism": "recovery", "user": None, "recoverable": False})
    assert recovery == Recovery(None, None, recoverable=False)
    assert positions.user is None
    assert positions.user_query() == {"recover": "user"}
    positions.recovery({"prism": "recovery", "room": "r", "recoverable": True, "epoch": "e", "seq": 1})
    positions.recovery({"prism": "recovery", "room": "r", "recoverable": False})
    assert positions.rooms == {}


def test_malformed_frames_change_nothing() -> None:
    positions = Positions()
    assert positions.recovery({"prism": "recovery", "room": 5, "recoverable": True}) is None
    assert positions.recovery({"prism": "recovery", "room": "r", "recoverable": True, "seq": "1"}) is None
    assert positions.expect({"prism": "pos", "room": "r", "seq": True}) is None
    assert positions.rooms == {}
