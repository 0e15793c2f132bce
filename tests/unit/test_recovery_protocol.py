"""Recovery's wire formats and settings, without I/O: the join command's recover fields, the frames the
node sends, which rooms and users have history and what the streams capture, and the settings' checks."""

from __future__ import annotations

import orjson
import pytest

from gateway.config import GatewayConfig
from gateway.core.history_layout import Recoverable, entry_error, stream_specs
from gateway.core.hub import Scope
from gateway.core.inbound import Join, parse_client_frame
from shared import frames
from shared.errors import ConfigError, FrameError
from shared.frames import ErrorCode, Position
from shared.subjects import Subjects


# -- the join command ---------------------------------------------------------------------------------
def test_a_plain_join_is_unchanged() -> None:
    assert parse_client_frame('{"prism":"join","room":"lobby","ref":1}') == Join("lobby", 1)


def test_a_recover_join_with_and_without_a_position() -> None:
    fresh = parse_client_frame('{"prism":"join","room":"lobby","ref":1,"recover":true}')
    assert fresh == Join("lobby", 1, recover=True, position=None)
    again = parse_client_frame('{"prism":"join","room":"lobby","recover":true,"epoch":"k3x","seq":1200}')
    assert again == Join("lobby", None, recover=True, position=Position("k3x", 1200))
    assert parse_client_frame('{"prism":"join","room":"lobby","recover":false}') == Join("lobby", None)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ('{"prism":"join","room":"a","ref":3,"recover":1}', "recover must be true or false"),
        ('{"prism":"join","room":"a","ref":3,"epoch":"k3x","seq":1}', 'epoch and seq need "recover": true'),
        ('{"prism":"join","room":"a","ref":3,"recover":true,"epoch":"k3x"}', "epoch and seq go together"),
        ('{"prism":"join","room":"a","ref":3,"recover":true,"seq":4}', "epoch and seq go together"),
        ('{"prism":"join","room":"a","ref":3,"recover":true,"epoch":"k3x","seq":-4}', "seq must be"),
        ('{"prism":"join","room":"a","ref":3,"recover":true,"epoch":"k.x","seq":4}', "epoch must be"),
    ],
)
def test_a_malformed_recover_join_is_an_invalid_position_error(frame: str, message: str) -> None:
    with pytest.raises(FrameError) as caught:
        parse_client_frame(frame)
    assert caught.value.code == ErrorCode.INVALID_POSITION
    assert caught.value.ref == 3
    assert message in caught.value.message


# -- frames ---------------------------------------------------------------------------------------------
def test_recovery_frames_start_like_every_gateway_frame() -> None:
    made = [
        frames.recovery("room", "lobby", epoch="k3x", seq=5, recovering=True, recovered=False),
        frames.not_recoverable("user", "alice"),
        frames.pos("room", "lobby", 1201),
        frames.mark("user", "alice", 1350),
    ]
    for frame in made:
        assert frames.is_prism_frame(frame)
        assert isinstance(orjson.loads(frame), dict)
    assert orjson.loads(made[0]) == {
        "prism": "recovery",
        "room": "lobby",
        "recoverable": True,
        "epoch": "k3x",
        "seq": 5,
        "recovering": True,
        "recovered": False,
    }
    assert made[2] == b'{"prism":"pos","room":"lobby","seq":1201}'
    assert made[3] == b'{"prism":"mark","user":"alice","seq":1350}'


def test_the_client_side_join_builder() -> None:
    assert orjson.loads(frames.join("lobby", 1)) == {"prism": "join", "room": "lobby", "ref": 1}
    assert orjson.loads(frames.join("lobby", 2, recover=True, epoch="k3x", seq=9)) == {
        "prism": "join",
        "room": "lobby",
        "ref": 2,
        "recover": True,
        "epoch": "k3x",
        "seq": 9,
    }


# -- which names have history, and the streams ---------------------------------------------------------
def test_recoverable_names_are_exact_or_all() -> None:
    recoverable = Recoverable(["lobby", "game-1"], ["*"])
    assert recoverable.matches(Scope.ROOM, "lobby")
    assert not recoverable.matches(Scope.ROOM, "lobby2")
    assert recoverable.matches(Scope.USER, "anyone")
    assert not Recoverable([], [])
    assert Recoverable([], ["bob"]).scopes() == [Scope.USER]


def test_a_partial_pattern_is_refused_with_the_reason() -> None:
    problem = entry_error(Scope.ROOM, "chat-*")
    assert problem is not None
    assert "whole names only" in problem
    assert entry_error(Scope.USER, "*") is None
    assert entry_error(Scope.USER, "auth0=7C5f1c") is None


def test_the_streams_capture_exactly_the_recoverable_subjects() -> None:
    specs = stream_specs(
        Recoverable(["lobby", "game"], ["*"]),
        Subjects("acme."),
        "RECOVERY",
        history=100,
        ttl=60.0,
        max_bytes=-1,
        replicas=3,
        storage="memory",
    )
    rooms, users = specs[Scope.ROOM], specs[Scope.USER]
    assert rooms.name == "RECOVERY_ROOMS"
    assert rooms.subjects == ("acme.room.game", "acme.room.lobby", "acme.recovery-anchor.rooms")
    assert users.subjects == ("acme.user.*", "acme.recovery-anchor.users")
    assert rooms.republish == ("acme.>", "acme.recovery.>")
    assert (users.max_msgs_per_subject, users.max_age, users.replicas) == (100, 60.0, 3)


# -- settings -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"recover_rooms": ("chat-*",)}, "recover_rooms entry 'chat-*'"),
        ({"recover_users": ("a.b",)}, "recover_users entry 'a.b'"),
        ({"recover_history": 0}, "recover_history"),
        ({"recover_ttl": 0.5}, "recover_ttl"),
        ({"recover_sync": 200.0}, "recover_sync"),
        ({"recover_sync": 0.0}, "recover_sync"),
        ({"recover_max_bytes": 10}, "recover_max_bytes"),
        ({"recover_replicas": 0}, "recover_replicas"),
        ({"recover_storage": "disk"}, "recover_storage"),
        ({"recover_stream": "a.b"}, "recover_stream"),
    ],
)
def test_bad_recovery_settings_are_one_clear_line(settings: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("*", r"\*").replace(".", r"\.")):
        GatewayConfig(**settings).validate()  # type: ignore[arg-type]


def test_the_recovery_defaults_are_valid_and_off() -> None:
    config = GatewayConfig()
    config.validate()
    assert not Recoverable(config.recover_rooms, config.recover_users)
