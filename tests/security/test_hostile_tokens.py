"""Hostile tokens at a node with authentication on, next to a healthy authenticated client: every one
is refused before the upgrade, and nothing else notices. The tokens come from :mod:`tests.security.tokens`
(the authentication tests check each refusal's details; this checks that a stream of them is harmless)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from nats.aio.client import Client as NatsClient
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import NodeFactory, ws_url
from tests.helpers import eventually
from tests.security.conftest import HOSTILE_LIMITS, witnessed
from tests.security.tokens import TokenKit

DEEP_HEADER = b'{"alg":' + b"[" * 3000 + b"]" * 3000 + b"}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def status_of(url: str, token: str) -> int:
    with pytest.raises(InvalidStatus) as refused:
        await connect(url, open_timeout=5, additional_headers={"Authorization": f"Bearer {token}"})
    return refused.value.response.status_code


async def test_a_stream_of_hostile_tokens_is_refused_and_harmless(
    make_node: NodeFactory, nc: NatsClient, tmp_path: Path
) -> None:
    kit = TokenKit()
    node = await make_node(**HOSTILE_LIMITS, **kit.node_settings(tmp_path))
    hostile = kit.hostile("mallory")
    hostile |= {
        "huge": "x" * 7000,
        "deep_header": _b64(DEEP_HEADER) + "." + _b64(b"{}") + ".sig",
        "binary_garbage": _b64(bytes(range(256)) * 4),
        "many_dots": "." * 5000,
    }
    async with witnessed(node, nc, token=kit.hs256("healthy")):
        for _ in range(10):
            for name, token in hostile.items():
                assert await status_of(ws_url(node), token) == 401, name
    await eventually(lambda: not node.hub.conns, what="the healthy client to be gone")
    assert node.admission.connections == 0
