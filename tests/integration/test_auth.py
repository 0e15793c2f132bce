"""Authentication and authorization with real nodes, real sockets and a real nats-server.

Tokens come from :mod:`tests.security.tokens`; keys are generated in the test and written to tmp_path.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Subprotocol

from gateway.node import Node
from shared.client import PrismClient
from shared.close_codes import CloseCode
from shared.errors import ConfigError, ConnectFailed
from shared.frames import refresh
from shared.nats_connection import flush_all
from shared.subjects import decode_user_id, encode_user_id
from tests.conftest import NodeFactory, ws_url
from tests.helpers import eventually
from tests.security.tokens import TokenKit, ec_key, rsa_key, write_jwks

Frame = dict[str, Any]


@pytest.fixture
def kit() -> TokenKit:
    return TokenKit()


@pytest.fixture
async def auth_node(make_node: NodeFactory, kit: TokenKit, tmp_path: Path) -> Node:
    return await make_node(**kit.node_settings(tmp_path))


async def open_ws(url: str, token: str | None = None, **kwargs: Any) -> tuple[ClientConnection, Frame]:
    """A raw WebSocket with ``token`` as a bearer header, and its welcome frame."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    ws = await connect(url, additional_headers=headers, **kwargs)
    welcome = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    assert welcome["prism"] == "welcome"
    return ws, welcome


async def refused(url: str, token: str | None = None, **kwargs: Any) -> tuple[int, str]:
    """The HTTP status and body of an upgrade that must be refused."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    with pytest.raises(InvalidStatus) as caught:
        async with connect(url, additional_headers=headers, **kwargs):
            pass
    response = caught.value.response
    return response.status_code, response.body.decode()


async def command(ws: ClientConnection, frame: bytes | str) -> Frame:
    """Send ``frame`` and return the next gateway frame."""
    await ws.send(frame.decode() if isinstance(frame, bytes) else frame)
    answer: Frame = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    return answer


def exp_of(token: str) -> int:
    exp: int = jwt.decode(token, options={"verify_signature": False})["exp"]
    return exp


def rejections(node: Node, reason: str) -> float:
    sample = node.registry.get_sample_value(
        "prism_rejections_total", {"node": node.node_id, "reason": reason}
    )
    return sample or 0.0


# -- authentication ------------------------------------------------------------------------------------
async def test_an_hs256_token_in_the_authorization_header_names_the_user_and_user_query_is_ignored(
    auth_node: Node, kit: TokenKit
) -> None:
    ws, welcome = await open_ws(ws_url(auth_node, user="mallory"), kit.hs256("alice"))
    assert welcome["user"] == "alice"
    await ws.close()


async def test_rs256_and_es256_tokens_verify_against_pem_public_keys(auth_node: Node, kit: TokenKit) -> None:
    for token, user in ((kit.rs256("rita"), "rita"), (kit.es256("eve"), "eve")):
        ws, welcome = await open_ws(ws_url(auth_node), token)
        assert welcome["user"] == user
        await ws.close()


async def test_the_token_may_come_as_a_query_parameter(auth_node: Node, kit: TokenKit) -> None:
    ws, welcome = await open_ws(ws_url(auth_node, token=kit.hs256("quinn")))
    assert welcome["user"] == "quinn"
    await ws.close()


async def test_the_token_may_come_as_a_subprotocol_and_the_server_selects_prism(
    auth_node: Node, kit: TokenKit
) -> None:
    offered = [Subprotocol("prism"), Subprotocol(f"prism.bearer.{kit.hs256('bea')}")]
    ws, welcome = await open_ws(ws_url(auth_node), subprotocols=offered)
    assert welcome["user"] == "bea"
    assert ws.subprotocol == "prism"
    await ws.close()
    # Offered alone, the bearer entry is what the server answers, so a browser still accepts it.
    alone = [Subprotocol(f"prism.bearer.{kit.hs256('bea')}")]
    ws, welcome = await open_ws(ws_url(auth_node), subprotocols=alone)
    assert ws.subprotocol == alone[0]
    await ws.close()


async def test_a_missing_token_is_refused_with_401_and_counted(auth_node: Node) -> None:
    status, body = await refused(ws_url(auth_node, user="alice"))
    assert (status, body) == (401, "missing token\n")
    assert rejections(auth_node, "token_missing") == 1


async def test_every_hostile_token_is_refused_with_401(auth_node: Node, kit: TokenKit) -> None:
    for name, token in kit.hostile("alice").items():
        status, body = await refused(ws_url(auth_node), token)
        assert status == 401, f"{name}: {status} {body}"
        assert "Traceback" not in body
        assert len(body) < 200, body
    status, body = await refused(ws_url(auth_node), kit.hostile()["expired"])
    assert body == "token expired\n"
    status, body = await refused(ws_url(auth_node), kit.hostile()["alg_none"])
    assert body == "invalid token: algorithm 'none' is not accepted\n"
    # The same hostile tokens through the query and the subprotocol are refused as well.
    status, _ = await refused(ws_url(auth_node, token=kit.hostile()["forged_secret"]))
    assert status == 401
    offered = [Subprotocol("prism"), Subprotocol(f"prism.bearer.{kit.hostile()['alg_none']}")]
    status, _ = await refused(ws_url(auth_node), subprotocols=offered)
    assert status == 401
    assert rejections(auth_node, "token_expired") >= 3
    assert rejections(auth_node, "token_invalid") >= 10


async def test_hs256_signed_with_the_public_key_fails_on_a_node_with_public_keys_only(
    make_node: NodeFactory, kit: TokenKit, tmp_path: Path
) -> None:
    pem = tuple(str(p) for p in kit.write_pem(tmp_path))
    node = await make_node(jwt_public_key_file=pem)
    status, body = await refused(ws_url(node), kit.hostile()["hs256_with_rsa_public_key"])
    assert (status, body) == (401, "invalid token: no HS256 key\n")
    ws, welcome = await open_ws(ws_url(node), kit.rs256("rita"))
    assert welcome["user"] == "rita"
    await ws.close()


async def test_audience_and_issuer_are_checked_when_configured(make_node: NodeFactory, kit: TokenKit) -> None:
    node = await make_node(jwt_secret=kit.secret, jwt_audience=("prism", "chat"), jwt_issuer="https://idp")
    good = kit.hs256("alice", aud="chat", iss="https://idp")
    ws, welcome = await open_ws(ws_url(node), good)
    assert welcome["user"] == "alice"
    await ws.close()
    for token, reason in (
        (kit.hs256("alice", aud="billing", iss="https://idp"), "invalid token: wrong audience"),
        (kit.hs256("alice", iss="https://idp"), "invalid token: no 'aud' claim"),
        (kit.hs256("alice", aud="prism", iss="https://evil"), "invalid token: wrong issuer"),
        (kit.hs256("alice", aud="prism"), "invalid token: no 'iss' claim"),
    ):
        assert await refused(ws_url(node), token) == (401, reason + "\n")


async def test_a_route_the_token_does_not_list_is_refused_with_403(
    make_node: NodeFactory, kit: TokenKit
) -> None:
    node = await make_node(jwt_secret=kit.secret, routes=("/ws", "/admin"))
    token = kit.hs256("alice", routes=["/ws"])
    ws, _ = await open_ws(ws_url(node), token)
    await ws.close()
    status, body = await refused(ws_url(node, "/admin"), token)
    assert (status, body) == (403, "route '/admin' not allowed by the token\n")
    assert rejections(node, "token_forbidden") == 1


async def test_a_subject_that_is_not_a_subject_token_is_encoded_and_reachable(
    auth_node: Node, kit: TokenKit, nc: NatsClient
) -> None:
    sub = "auth0|5f1c.alice@example.com"
    ws, welcome = await open_ws(ws_url(auth_node), kit.hs256(sub))
    assert welcome["user"] == encode_user_id(sub) == "auth0=7C5f1c=2Ealice=40example=2Ecom"
    assert decode_user_id(welcome["user"]) == sub
    await nc.publish(f"user.{encode_user_id(sub)}", b"for the encoded id")
    assert await asyncio.wait_for(ws.recv(), 5) == "for the encoded id"
    await ws.close()


async def test_jwks_keys_are_chosen_by_kid_and_a_rotated_file_is_read_without_restart(
    make_node: NodeFactory, kit: TokenKit, tmp_path: Path
) -> None:
    jwks = write_jwks(tmp_path / "jwks.json", {"k1": rsa_key()})
    node = await make_node(jwks_file=str(jwks))
    ws, welcome = await open_ws(ws_url(node), kit.rs256("alice", kid="k1"))
    assert welcome["user"] == "alice"
    await ws.close()
    newer = TokenKit(rsa_private=rsa_key("rotated"))
    status, body = await refused(ws_url(node), newer.rs256("alice", kid="k2"))
    assert (status, body) == (401, "invalid token: no RS256 key with kid 'k2'\n")
    write_jwks(jwks, {"k1": rsa_key(), "k2": rsa_key("rotated"), "e1": ec_key()})
    ws, welcome = await open_ws(ws_url(node), newer.rs256("bob", kid="k2"))
    assert welcome["user"] == "bob"
    await ws.close()
    # A token whose kid names one key but that another key signed does not verify.
    status, _ = await refused(ws_url(node), newer.rs256("bob", kid="k1"))
    assert status == 401
    # Retiring k1 from the file retires its tokens.
    write_jwks(jwks, {"k2": rsa_key("rotated")})
    status, _ = await refused(ws_url(node), kit.rs256("alice", kid="k1"))
    assert status == 401


async def test_a_bad_key_file_stops_the_node_from_starting(make_node: NodeFactory, tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(ConfigError, match="holds no PEM public key"):
        await make_node(jwt_public_key_file=(str(bad),))


# -- expiry and refresh ----------------------------------------------------------------------------------
async def wait_close(ws: ClientConnection, timeout: float = 10) -> tuple[int | None, str | None, float]:
    """Read until the connection closes; its close code, reason and the time it closed."""
    async with asyncio.timeout(timeout):
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                pass
    return ws.close_code, ws.close_reason, time.time()


async def test_a_connection_is_closed_with_4501_when_its_token_expires(
    auth_node: Node, kit: TokenKit
) -> None:
    token = kit.hs256("alice", ttl=2)
    expires = exp_of(token)
    ws, _ = await open_ws(ws_url(auth_node), token)
    code, reason, closed_at = await wait_close(ws)
    assert (code, reason) == (CloseCode.UNAUTHORIZED, "token expired")
    assert closed_at >= expires - 0.05
    await eventually(lambda: rejections(auth_node, "session_expired") == 1, what="the expiry counted")


async def test_a_refresh_in_time_moves_the_close_to_the_new_expiry(auth_node: Node, kit: TokenKit) -> None:
    ws, _ = await open_ws(ws_url(auth_node), kit.hs256("alice", ttl=3))
    later = kit.hs256("alice", ttl=5)
    new_exp = exp_of(later)
    assert await command(ws, refresh(later, ref=1)) == {"prism": "ok", "ref": 1}
    code, reason, closed_at = await wait_close(ws)
    assert (code, reason) == (CloseCode.UNAUTHORIZED, "token expired")
    assert closed_at >= new_exp - 0.05, "closed at the first token's expiry, not the refreshed one's"


async def test_a_refused_refresh_keeps_the_current_token(auth_node: Node, kit: TokenKit) -> None:
    ws, _ = await open_ws(ws_url(auth_node), kit.hs256("alice"))
    answer = await command(ws, refresh(kit.hs256("bob"), ref="r1"))
    assert answer == {
        "prism": "error",
        "ref": "r1",
        "code": "forbidden",
        "message": "token is for another user",
    }
    answer = await command(ws, refresh(kit.hostile()["forged_secret"], ref=2))
    assert (answer["code"], answer["message"]) == (
        "invalid_token",
        "invalid token: signature verification failed",
    )
    answer = await command(ws, refresh(kit.hostile()["expired"], ref=3))
    assert (answer["code"], answer["message"]) == ("invalid_token", "token expired")
    answer = await command(ws, '{"prism":"refresh","ref":4}')
    assert answer["code"] == "invalid_token"
    deep = '{"prism":"refresh","token":"t","x":' + "[" * 100 + "]" * 100 + "}"
    assert (await command(ws, deep))["code"] == "invalid_frame"  # the depth limit applies to refresh too
    assert rejections(auth_node, "refresh_refused") == 3
    assert await command(ws, refresh(kit.hs256("alice"), ref=5)) == {"prism": "ok", "ref": 5}
    await ws.close()


# -- authorization by claims ---------------------------------------------------------------------------
async def test_joins_and_events_are_allowed_only_as_the_claims_say(
    auth_node: Node, kit: TokenKit, nc: NatsClient
) -> None:
    received: list[Msg] = []

    async def on_event(msg: Msg) -> None:
        received.append(msg)
        if msg.reply:
            await msg.respond(b'{"ok":true}')

    await nc.subscribe("client.event.>", cb=on_event)
    await flush_all(nc)
    token = kit.hs256(
        "alice", rooms=["lobby", "user-{user}", "chat-*"], events=["chat.*", "profile.update", "game.>"]
    )
    ws, _ = await open_ws(ws_url(auth_node), token)
    for room, allowed in (
        ("lobby", True),
        ("user-alice", True),
        ("user-bob", False),
        ("chat-42", True),
        ("secret", False),
        ("lobby2", False),
    ):
        answer = await command(ws, orjson.dumps({"prism": "join", "room": room, "ref": room}))
        if allowed:
            assert answer == {"prism": "ok", "ref": room}
        else:
            assert answer == {
                "prism": "error",
                "ref": room,
                "code": "forbidden",
                "message": f"not allowed to join {room!r}",
            }
    for event, allowed in (
        ("chat.send", True),
        ("chat.room.send", False),
        ("profile.update", True),
        ("game.move", True),
        ("game.a.b", True),
        ("game", False),
        ("admin.kick", False),
    ):
        answer = await command(ws, orjson.dumps({"event": event, "data": {}, "ref": event}))
        if allowed:
            assert answer == {"prism": "reply", "ref": event, "data": {"ok": True}}
        else:
            assert answer["code"] == "forbidden"
            assert answer["message"] == f"not allowed to send {event!r}"
    # A denied event without ref gets an error frame (ref null) and is not published: an allowed event
    # sent after it arrives, and nothing before it.
    count = len(received)
    answer = await command(ws, orjson.dumps({"event": "admin.kick", "data": {}}))
    assert answer == {
        "prism": "error",
        "ref": None,
        "code": "forbidden",
        "message": "not allowed to send 'admin.kick'",
    }
    await ws.send(orjson.dumps({"event": "chat.send", "data": "after"}).decode())
    await eventually(lambda: len(received) > count, what="the allowed event")
    assert [m.subject for m in received[count:]] == ["client.event.chat.send"]
    assert rejections(auth_node, "join_forbidden") == 3
    assert rejections(auth_node, "event_forbidden") == 4
    await ws.close()


async def test_without_claims_nothing_may_be_joined_or_sent_but_backends_may_join_clients(
    auth_node: Node, kit: TokenKit, nc: NatsClient
) -> None:
    ws, welcome = await open_ws(ws_url(auth_node), kit.hs256("alice"))
    answer = await command(ws, orjson.dumps({"prism": "join", "room": "lobby", "ref": 1}))
    assert answer["code"] == "forbidden"
    answer = await command(ws, orjson.dumps({"event": "chat.send", "ref": 2}))
    assert answer["code"] == "forbidden"
    reply = await nc.request(f"control.conn.{welcome['conn']}.join", b'{"room":"vip"}', timeout=5)
    assert orjson.loads(reply.data)["ok"] is True
    await nc.publish("room.vip", b"to the vip room")
    assert await asyncio.wait_for(ws.recv(), 5) == "to the vip room"
    # Leaving is always allowed.
    assert await command(ws, orjson.dumps({"prism": "leave", "room": "vip", "ref": 3})) == {
        "prism": "ok",
        "ref": 3,
    }
    await ws.close()


async def test_a_refresh_replaces_the_permissions(auth_node: Node, kit: TokenKit) -> None:
    ws, _ = await open_ws(ws_url(auth_node), kit.hs256("alice"))
    assert (await command(ws, orjson.dumps({"prism": "join", "room": "lobby"})))["code"] == "forbidden"
    assert (await command(ws, refresh(kit.hs256("alice", rooms=["lobby"]))))["prism"] == "ok"
    assert await command(ws, orjson.dumps({"prism": "join", "room": "lobby"})) == {"prism": "ok", "ref": None}
    await ws.close()


# -- authorization callout -------------------------------------------------------------------------------
async def test_the_callout_decides_what_the_claims_do_not_grant(
    make_node: NodeFactory, kit: TokenKit, nc: NatsClient
) -> None:
    node = await make_node(jwt_secret=kit.secret, authz_subject="authz.prism", authz_timeout=2.0)
    asked: list[Frame] = []

    async def authorize(msg: Msg) -> None:
        body = orjson.loads(msg.data)
        asked.append(body)
        name = body.get("room") or body.get("event")
        if name in ("vip", "chat.send"):
            await msg.respond(b'{"allow":true}')
        elif name == "secret":
            await msg.respond(b'{"allow":false,"reason":"members only"}')
        elif name == "garbage":
            await msg.respond(b"yes please")
        # "slow": no answer at all

    sub = await nc.subscribe("authz.prism", cb=authorize)
    await flush_all(nc)
    ws, welcome = await open_ws(ws_url(node), kit.hs256("alice", rooms=["lobby"], role="member"))

    async def join(room: str) -> Frame:
        return await command(ws, orjson.dumps({"prism": "join", "room": room, "ref": room}))

    assert await join("lobby") == {"prism": "ok", "ref": "lobby"}  # by claim: the callout is not asked
    assert asked == []
    assert await join("vip") == {"prism": "ok", "ref": "vip"}
    assert asked[0] == {
        "conn": welcome["conn"],
        "user": "alice",
        "node": node.node_id,
        "route": "/ws",
        "action": "join",
        "room": "vip",
        "claims": asked[0]["claims"],
    }
    assert asked[0]["claims"]["role"] == "member"
    assert await join("secret") == {
        "prism": "error",
        "ref": "secret",
        "code": "forbidden",
        "message": "members only",
    }
    assert (await join("garbage"))["message"] == "not allowed"
    answer = await join("slow")
    assert (answer["code"], answer["message"]) == ("forbidden", "authorization service did not answer")
    reply = await command(ws, orjson.dumps({"event": "chat.send", "data": 1, "ref": 9}))
    assert reply["code"] == "no_responders"  # allowed by the callout; no backend handles it
    assert (asked[-1]["action"], asked[-1]["event"]) == ("event", "chat.send")
    await sub.unsubscribe()
    await flush_all(nc)
    answer = await join("vip")
    # Denied either way; which message depends on whether the request met the server after it had
    # dropped the callout's interest ("unavailable", no responders) or raced it (a timeout).
    assert answer["code"] == "forbidden"
    assert answer["message"] in ("authorization service unavailable", "authorization service did not answer")
    await ws.close()


# -- auth off --------------------------------------------------------------------------------------------
async def test_with_auth_off_tokens_are_ignored_and_nothing_is_checked(
    make_node: NodeFactory, kit: TokenKit
) -> None:
    node = await make_node()
    ws, welcome = await open_ws(ws_url(node, user="alice"), kit.hostile()["alg_none"])
    assert welcome["user"] == "alice"
    assert await command(ws, orjson.dumps({"prism": "join", "room": "lobby", "ref": 1})) == {
        "prism": "ok",
        "ref": 1,
    }
    answer = await command(ws, refresh(kit.hs256("alice"), ref=2))
    assert answer["code"] == "unknown_command"
    await ws.close()


# -- the Python client ------------------------------------------------------------------------------------
async def test_the_python_client_connects_with_a_bearer_header_and_stops_on_401(
    auth_node: Node, kit: TokenKit
) -> None:
    token = kit.hs256("alice", rooms=["lobby"])
    client = await PrismClient.connect(
        ws_url(auth_node), additional_headers={"Authorization": f"Bearer {token}"}
    )
    assert client.user == "alice"
    await client.join("lobby")
    await client.close()
    bad = {"Authorization": f"Bearer {kit.hostile()['forged_secret']}"}
    with pytest.raises(ConnectFailed) as caught:
        async with asyncio.timeout(10):
            await PrismClient.connect(ws_url(auth_node), reconnect=True, additional_headers=bad)
    assert (caught.value.status, caught.value.code) == (401, CloseCode.UNAUTHORIZED)
