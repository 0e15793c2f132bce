"""Who may open a WebSocket: allowed origins, connection caps per node and per address, the accept rate,
and connection counts that come back down on every way a connection can end."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from nats.aio.client import Client as NatsClient
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from gateway.node import Node
from shared.close_codes import CloseCode
from tests.conftest import NodeFactory, ws_url
from tests.helpers import eventually
from tests.security.conftest import HOSTILE_LIMITS, rejections, witnessed
from tests.security.tokens import TokenKit
from tests.security.wire import RawClient, upgrade_request


async def refused(url: str, **kwargs: object) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and body of a refused upgrade."""
    with pytest.raises(InvalidStatus) as caught:
        await connect(url, open_timeout=5, **kwargs)  # type: ignore[arg-type]
    response = caught.value.response
    return response.status_code, dict(response.headers.raw_items()), bytes(response.body)


async def opened(node: Node, **kwargs: object) -> ClientConnection:
    ws = await connect(ws_url(node), compression=None, open_timeout=5, **kwargs)  # type: ignore[arg-type]
    await asyncio.wait_for(ws.recv(), 5)  # welcome
    return ws


async def no_connections(node: Node) -> None:
    await eventually(
        lambda: node.admission.connections == 0 and not node.hub.conns,
        what=f"no connections (admission counts {node.admission.connections})",
    )


async def test_only_allowed_browser_origins_may_connect(make_node: NodeFactory) -> None:
    node = await make_node(
        allowed_origins=("https://app.example.com", "https://*.example.org", "http://localhost:*")
    )
    for origin in ("https://app.example.com", "https://eu.example.org", "http://localhost:3000"):
        ws = await opened(node, origin=origin)
        await ws.close()
    ws = await opened(node)  # no Origin: not a browser, nothing to hijack
    await ws.close()
    for origin in (
        "https://evil.example",
        "https://app.example.com.evil.example",
        "null",
        "http://localhost",
    ):
        status, _, body = await refused(ws_url(node), origin=origin)
        assert (status, body) == (403, b"origin not allowed\n")
    assert rejections(node, "origin") == 4
    await no_connections(node)


async def test_with_authentication_on_only_the_nodes_own_origin_may_connect_by_default(
    make_node: NodeFactory,
) -> None:
    kit = TokenKit()
    node = await make_node(jwt_secret=kit.secret)
    bearer = {"Authorization": f"Bearer {kit.hs256('alice')}"}
    own = f"http://127.0.0.1:{node.port}"  # websockets sends Host: 127.0.0.1:<port>
    for origin in (own, own.upper(), None):  # the node's own page, or not a browser
        ws = await opened(node, origin=origin, additional_headers=bearer)
        await ws.close()
    port = node.port
    for origin in (
        "https://evil.example",
        f"http://127.0.0.1:{port + 1}",
        f"http://localhost:{port}",
        "null",
    ):
        status, headers, body = await refused(ws_url(node), origin=origin, additional_headers=bearer)
        assert (status, body, headers["Connection"]) == (403, b"origin not allowed\n", "close"), origin
    # Refused before the token is looked at: no token, same 403.
    assert (await refused(ws_url(node), origin="https://evil.example"))[0] == 403
    assert rejections(node, "origin") == 5
    assert rejections(node, "token_missing") == 0
    await no_connections(node)


async def test_a_star_opens_an_authenticated_node_to_every_origin_and_auth_off_accepts_any(
    make_node: NodeFactory,
) -> None:
    kit = TokenKit()
    bearer = {"Authorization": f"Bearer {kit.hs256('alice')}"}
    open_to_all = await make_node(jwt_secret=kit.secret, allowed_origins=("*",))
    listed = await make_node(jwt_secret=kit.secret, allowed_origins=("https://app.example.com",))
    dev = await make_node()
    for node, headers in ((open_to_all, bearer), (dev, {})):
        for origin in ("https://evil.example", "null"):
            ws = await opened(node, origin=origin, additional_headers=headers)
            await ws.close()
    ws = await opened(listed, origin="https://app.example.com", additional_headers=bearer)
    await ws.close()
    # A list replaces the default: the node's own origin must be in it to pass.
    own = f"http://127.0.0.1:{listed.port}"
    assert (await refused(ws_url(listed), origin=own, additional_headers=bearer))[0] == 403


async def test_a_full_node_answers_503_with_retry_after(make_node: NodeFactory) -> None:
    node = await make_node(max_connections=2)
    first, second = await opened(node), await opened(node)
    status, headers, body = await refused(ws_url(node))
    assert (status, headers["Retry-After"]) == (503, "5")
    assert body == b"node full: 2 connections\n"
    await first.close()
    await eventually(lambda: node.admission.connections == 1, what="the closed connection to be released")
    third = await opened(node)
    assert rejections(node, "max_connections") == 1
    for ws in (second, third):
        await ws.close()
    await no_connections(node)


async def test_one_address_over_its_cap_gets_429_with_retry_after(make_node: NodeFactory) -> None:
    node = await make_node(max_connections_per_ip=2)
    clients = [await opened(node), await opened(node)]
    status, headers, body = await refused(ws_url(node))
    assert (status, headers["Retry-After"]) == (429, "5")
    assert body == b"too many connections from your address (max 2)\n"
    assert node.admission.counts.per_ip == {"127.0.0.1": 2}
    assert rejections(node, "max_connections_per_ip") == 1
    for ws in clients:
        await ws.close()
    await no_connections(node)
    assert node.admission.counts.per_ip == {}


async def test_connections_over_the_accept_rate_get_503_with_retry_after(make_node: NodeFactory) -> None:
    node = await make_node(accept_rate=0.5, accept_burst=3)
    clients = [await opened(node) for _ in range(3)]
    status, headers, body = await refused(ws_url(node))
    assert status == 503
    assert headers["Retry-After"] in ("1", "2")  # a token every 2 s
    assert body == b"too many new connections: retry later\n"
    assert rejections(node, "accept_rate") == 1
    for ws in clients:
        await ws.close()


async def test_refusals_before_the_upgrade_are_cheap_for_everyone_else(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await make_node(**HOSTILE_LIMITS, max_connections=3, allowed_origins=("https://app.example.com",))
    async with witnessed(node, nc):  # the healthy client holds one of the three
        held = [await opened(node), await opened(node)]
        for _ in range(200):
            status, _, _ = await refused(ws_url(node))
            assert status == 503
            status, _, _ = await refused(ws_url(node), origin="https://evil.example")
            assert status == 403
        for ws in held:
            await ws.close()
    assert rejections(node, "max_connections") == 200
    assert rejections(node, "origin") == 200


async def test_the_count_comes_back_down_on_every_way_a_connection_ends(
    make_node: NodeFactory, nc: NatsClient
) -> None:
    node = await make_node(max_connections=1, handshake_timeout=0.5, close_timeout=0.5, sweep_interval=0.0)
    for _ in range(3):
        # the client closes
        ws = await opened(node)
        await ws.close()
        await no_connections(node)
        # the client's TCP connection just drops
        ws = await opened(node)
        ws.transport.abort()
        await no_connections(node)
        # the node closes it (a backend's control close)
        ws = await opened(node)
        conn_id = next(iter(node.hub.conns))
        await nc.request(f"control.conn.{conn_id}.close", b'{"code":4500}', timeout=5)
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == CloseCode.CLOSED_BY_BACKEND
        await no_connections(node)
        # refused after admission by a later check (an invalid ?user=)
        status, _, _ = await refused(ws_url(node, user="a.b"))
        assert status == 400
        await no_connections(node)
        # admitted, then the upgrade fails inside websockets (a bad Sec-WebSocket-Key)
        raw = await RawClient.open(node.port)
        raw.send(upgrade_request(key="not-base64-16-bytes"))
        with contextlib.suppress(TimeoutError):
            await raw.upgrade_response()
        assert raw.status == 400
        await raw.close()
        await no_connections(node)
        # a handshake that never finishes is never counted
        raw = await RawClient.open(node.port)
        raw.send(b"GET /ws HTTP/1.1\r\n")
        assert await raw.closed_by_server()
        await raw.close()
        await no_connections(node)
    assert rejections(node, "max_connections") == 0
    ws = await opened(node)
    await ws.close()


async def test_no_tcp_connection_outlives_the_nodes_stop(make_node: NodeFactory) -> None:
    node = await make_node(handshake_timeout=30)
    server = node._server
    assert server is not None
    # Whatever is still open when the node stops is dropped before stop() returns: a client that sent
    # nothing, one half way through its upgrade request.
    silent = await RawClient.open(node.port)
    halfway = await RawClient.open(node.port)
    halfway.send(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    await eventually(lambda: len(server.connections) == 2, what="the node to accept the TCP connections")
    await asyncio.wait_for(node.stop(), 10)  # not the 30 s handshake timeout
    assert not server.connections
    for raw in (silent, halfway):
        assert await raw.closed_by_server()
        await raw.close()
