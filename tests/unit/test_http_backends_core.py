"""HTTP backends without sockets (gateway/core/http_backends.py): the routes file, which backend takes
what, the bodies sent, what answers mean and the error frames clients get."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gateway.core.http_backends import (
    MAX_CLAIMS_BYTES,
    Allow,
    BackendConfigError,
    BadAnswer,
    ConnInfo,
    Deny,
    HttpRouting,
    PollAnswer,
    client_error,
    connect_decision,
    disconnect_body,
    event_body,
    parse_backends,
    poll_answer,
)
from gateway.core.retry import Attempt, Outcome
from shared.frames import ErrorCode

ROUTES = ("/ws", "/admin")
ENV = {"APP_SECRET": "a" * 32, "TWO": "b" * 32 + "," + "c" * 40, "SHORT": "xyz"}


def backend(**entry: Any) -> dict[str, Any]:
    return {
        "name": "app",
        "event_url": "http://127.0.0.1:9000/event",
        "events": ["chat.*"],
        "unsigned": True,
    } | entry


def parse(*entries: dict[str, Any]) -> Any:
    return parse_backends({"backend": list(entries)}, ROUTES, ENV)


def test_a_minimal_backend_gets_the_documented_defaults() -> None:
    (b,) = parse(backend(secret_env="APP_SECRET", unsigned=False))
    assert b.routes == ROUTES
    assert (b.timeout, b.retry.retries, b.max_concurrency, b.max_queue, b.keepalive) == (
        5.0,
        2,
        64,
        1024,
        4.0,
    )
    assert b.secrets == (b"a" * 32,)
    assert b.handles("chat.send")
    assert not b.handles("chat.room.send")
    assert not b.handles("echo")


def test_several_secrets_are_read_for_rotation() -> None:
    (b,) = parse(backend(secret_env="TWO", unsigned=False))
    assert b.secrets == (b"b" * 32, b"c" * 40)


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ({"unsigned": False}, "set secret_env"),
        ({"secret_env": "NOPE", "unsigned": False}, "NOPE, which is not set"),
        ({"secret_env": "SHORT", "unsigned": False}, "at least 32"),
        ({"secret_env": "APP_SECRET"}, "contradict"),
        ({"event_url": "ftp://x/e"}, "http:// or https://"),
        ({"events": []}, "event_url needs events"),
        ({"events": ["chat..x"]}, "events:"),
        ({"routes": ["/nope"]}, "is not one of PRISM_ROUTES"),
        ({"timeout": 0}, "timeout must be a number"),
        ({"retries": 11}, "retries must be a whole number from 0 to 10"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"name": "a b"}, "backend name may contain only"),
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"event_url": None, "events": []}, "needs at least one of"),
        ({"forward_headers": ["Bad: x"]}, "forward_headers"),
    ],
)
def test_a_bad_entry_is_refused_with_a_message_naming_the_key(entry: dict[str, Any], says: str) -> None:
    with pytest.raises(BackendConfigError, match=says.replace("(", r"\(")):
        parse(backend(**entry))


def test_the_file_as_a_whole_is_checked() -> None:
    with pytest.raises(BackendConfigError, match="unique"):
        parse(backend(), backend())
    connect = {"connect_url": "http://x/c"}
    with pytest.raises(BackendConfigError, match="only one backend may have a connect_url"):
        parse(backend(**connect), backend(name="other", **connect))
    with pytest.raises(BackendConfigError, match="at least one"):
        parse_backends({}, ROUTES, ENV)
    with pytest.raises(BackendConfigError, match="unknown top-level key"):
        parse_backends({"backends": []}, ROUTES, ENV)


def test_routing_takes_the_first_matching_backend_of_the_route_and_leaves_the_rest_to_nats() -> None:
    chat = backend(name="chat", events=["chat.>"], connect_url="http://x/c", disconnect_url="http://x/d")
    admin = backend(name="admin", events=["*"], routes=["/admin"], disconnect_url="http://y/d")
    catch_all = backend(name="all", events=[">"], routes=["/admin"])
    routing = HttpRouting(parse(chat, admin, catch_all))
    assert routing.event("/ws", "chat.send").name == "chat"  # type: ignore[union-attr]
    assert routing.event("/ws", "echo") is None  # no HTTP backend: NATS
    assert routing.event("/admin", "kick").name == "admin"  # type: ignore[union-attr]
    assert routing.event("/admin", "chat.x").name == "chat"  # type: ignore[union-attr]  # file order
    assert routing.event("/admin", "a.b").name == "all"  # type: ignore[union-attr]
    assert routing.connect("/ws").name == "chat"  # type: ignore[union-attr]
    assert [b.name for b in routing.disconnect("/admin")] == ["chat", "admin"]
    assert routing.event("/other", "chat.send") is None


def test_event_and_disconnect_bodies_embed_data_and_claims_as_json() -> None:
    info = ConnInfo("node1.abc", "alice", "node1", "/ws", "127.0.0.1:5")
    body = orjson.loads(event_body("id-1", info, b'{"plan":"pro"}', "chat.send", True, b'{"text":"hi"}'))
    assert body == {
        "type": "event",
        "id": "id-1",
        "event": "chat.send",
        "request": True,
        "conn": "node1.abc",
        "user": "alice",
        "node": "node1",
        "route": "/ws",
        "remote": "127.0.0.1:5",
        "claims": {"plan": "pro"},
        "data": {"text": "hi"},
    }
    gone = orjson.loads(disconnect_body("id-2", info, b"{}", {"code": 1000, "rooms": ["lobby"]}))
    assert gone["type"] == "disconnect"
    assert gone["code"] == 1000
    assert gone["rooms"] == ["lobby"]


def test_connect_answers() -> None:
    assert connect_decision(204, b"", 10) == Allow()
    allow = connect_decision(200, b'{"allow":true,"user":"bob","rooms":["a","b","a"],"claims":{"x":1}}', 10)
    assert allow == Allow("bob", ("a", "b"), b'{"x":1}')
    assert connect_decision(200, b'{"allow":false}', 10) == Deny(4503, "forbidden")
    assert connect_decision(200, b'{"allow":false,"code":4501,"reason":"log in"}', 10) == Deny(4501, "log in")
    assert connect_decision(403, b"banned", 10) == Deny(4503, "banned")
    assert connect_decision(401, b'{"message":"who are you"}', 10) == Deny(4501, "who are you")
    long = connect_decision(200, orjson.dumps({"allow": False, "reason": "é" * 100}), 10)
    assert isinstance(long, Deny)
    assert len(long.reason.encode()) <= 123


@pytest.mark.parametrize(
    "answer",
    [
        b"not json",
        b'{"allow":"yes"}',
        b'{"allow":true,"user":"a.b"}',
        b'{"allow":true,"rooms":"lobby"}',
        b'{"allow":true,"rooms":["a","b","c"]}',
        b'{"allow":true,"claims":[1]}',
        b'{"allow":false,"code":1000}',
        orjson.dumps({"allow": True, "claims": {"x": "y" * MAX_CLAIMS_BYTES}}),
    ],
)
def test_answers_that_break_the_contract_are_bad(answer: bytes) -> None:
    with pytest.raises(BadAnswer):
        connect_decision(200, answer, 2)


@pytest.mark.parametrize(
    ("attempt", "body", "code", "says"),
    [
        (
            Attempt(Outcome.TIMEOUT),
            b"",
            ErrorCode.TIMEOUT,
            "no answer from HTTP backend 'app' to 'chat.send' in 5s",
        ),
        (Attempt(Outcome.REFUSED), b"", ErrorCode.BACKEND_UNAVAILABLE, "cannot reach HTTP backend 'app'"),
        (Attempt(Outcome.BUSY), b"", ErrorCode.BACKEND_UNAVAILABLE, "is busy"),
        (Attempt(Outcome.STATUS, 503), b"", ErrorCode.BACKEND_UNAVAILABLE, "answered 503"),
        (Attempt(Outcome.STATUS, 403), b"not yours", ErrorCode.FORBIDDEN, "not yours"),
        (
            Attempt(Outcome.STATUS, 422),
            b'{"error":"text too long"}',
            ErrorCode.BACKEND_ERROR,
            "(422): text too long",
        ),
        (
            Attempt(Outcome.STATUS, 500),
            b"Traceback ...",
            ErrorCode.BACKEND_ERROR,
            "failed on 'chat.send' (500)",
        ),
    ],
)
def test_failures_become_clear_error_frames(
    attempt: Attempt, body: bytes, code: ErrorCode, says: str
) -> None:
    (b,) = parse(backend())
    got_code, message = client_error(b, "chat.send", attempt, body)
    assert got_code is code
    assert says in message
    assert "Traceback" not in message  # a 5xx body is the backend's business, not the client's


def test_poll_answers() -> None:
    assert poll_answer(204, b"", "c0") == PollAnswer((), "c0")
    answer = poll_answer(
        200,
        b'{"messages":[{"conn":"n.a","data":"hi"},{"conn":"n.b","data_base64":"AAE="}],"cursor":"c1"}',
        None,
    )
    assert answer == PollAnswer((("n.a", b"hi", False), ("n.b", b"\x00\x01", True)), "c1")
    assert poll_answer(200, b'{"messages":[]}', "c0").cursor == "c0"
    for bad in (
        b"[]",
        b"x",
        b'{"messages":[{"data":"a"}]}',
        b'{"messages":[{"conn":"a","data":"a","data_base64":"AA=="}]}',
        b'{"messages":[{"conn":"a","data_base64":"!"}]}',
        b'{"cursor":5}',
    ):
        with pytest.raises(BadAnswer):
            poll_answer(200, bad, None)
    (b,) = parse(backend(poll_url="http://x/p", poll_interval=0))
    assert HttpRouting([b]).polls() == [(b, "/ws"), (b, "/admin")]
