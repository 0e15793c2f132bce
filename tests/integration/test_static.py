"""Static files on a real node's port: the browser SDK always, the console only when it is on."""

from __future__ import annotations

import asyncio
import http.client
from pathlib import Path

import orjson
import pytest

from gateway.io.static import WEB_DIR
from gateway.node import Node
from tests.conftest import NodeFactory

Answer = tuple[int, dict[str, str], bytes]


def _get(port: int, path: str, headers: dict[str, str]) -> Answer:
    # http.client sends the path exactly as given (no normalisation of "..", no decoding of %2e).
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


async def get(node: Node, path: str, **headers: str) -> Answer:
    return await asyncio.to_thread(_get, node.port, path, headers)


async def test_every_node_serves_the_sdk_with_etags(make_node: NodeFactory) -> None:
    node = await make_node()
    status, headers, body = await get(node, "/prism.js")
    assert status == 200
    assert body == (WEB_DIR / "prism.js").read_bytes()
    assert headers["content-type"] == "text/javascript; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["access-control-allow-origin"] == "*"  # importable by pages of any origin
    etag = headers["etag"]
    assert etag.startswith('"')
    assert etag.endswith('"')

    status, headers, body = await get(node, "/prism.js", **{"If-None-Match": etag})
    assert (status, body, headers["etag"]) == (304, b"", etag)
    assert (await get(node, "/prism.js", **{"If-None-Match": f'"other", W/{etag}'}))[0] == 304
    assert (await get(node, "/prism.js", **{"If-None-Match": '"other"'}))[0] == 200
    assert (await get(node, "/prism.js?v=2"))[0] == 200  # a cache-busting query is fine

    status, headers, body = await get(node, "/prism.d.ts")
    assert status == 200
    assert body == (WEB_DIR / "prism.d.ts").read_bytes()
    assert headers["content-type"] == "text/plain; charset=utf-8"


async def test_the_console_is_off_by_default(make_node: NodeFactory) -> None:
    node = await make_node()
    for path in ("/", "/console/index.html", "/console/config.json"):
        status, _, body = await get(node, path)
        assert status == 404, path
        assert body.startswith(b"no route")


async def test_the_console_when_on(make_node: NodeFactory) -> None:
    nodes = ("ws://localhost:8080/ws", "ws://localhost:8081/ws")
    node = await make_node(console=True, console_nodes=nodes, console_notify=True)
    index = WEB_DIR / "console" / "index.html"
    status, headers, body = await get(node, "/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert body == index.read_bytes()
    assert "access-control-allow-origin" not in headers  # the console is same-origin only
    assert (await get(node, "/console/index.html"))[2] == body

    status, headers, body = await get(node, "/console/config.json")
    assert (status, headers["content-type"]) == (200, "application/json")
    assert orjson.loads(body) == {"nodes": list(nodes), "notify": True}

    served = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
    served |= {".svg": "image/svg+xml", ".png": "image/png"}
    for path in sorted((WEB_DIR / "console").iterdir()):
        if path.suffix in served:
            status, headers, body = await get(node, f"/console/{path.name}")
            assert (status, headers["content-type"], body) == (200, served[path.suffix], path.read_bytes())


@pytest.mark.parametrize(
    "path",
    [
        "/console/../static.py",
        "/console/%2e%2e/static.py",
        "/console/%2E%2E%2Fstatic.py",
        "/console/..%2fio%2fstatic.py",
        "/console/../../pyproject.toml",
        "/console//etc/passwd",
        "/console/",
        "/console",
        "/console/.",
        "/console/./index.html",
        "/prism.js/",
        "/web/prism.js",
        "//prism.js",
    ],
)
async def test_paths_outside_the_console_directory_are_404(make_node: NodeFactory, path: str) -> None:
    node = await make_node(console=True)
    status, _, _ = await get(node, path)
    assert status == 404


async def test_the_console_defaults_to_the_pages_own_origin(make_node: NodeFactory) -> None:
    node = await make_node(console=True)
    _, _, body = await get(node, "/console/config.json")
    assert orjson.loads(body) == {"nodes": [], "notify": False}


def test_web_files_are_package_data() -> None:
    """pyproject ships gateway/web as package data: every file there matches one of its patterns."""
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert 'gateway = ["web/*.js", "web/*.d.ts", "web/console/*"]' in text
    names = {p.relative_to(WEB_DIR.parent).as_posix() for p in WEB_DIR.rglob("*") if p.is_file()}
    assert {"web/prism.js", "web/prism.d.ts", "web/console/index.html"} <= names
    nested = [n for n in names if n.count("/") > 2]
    assert not nested, (
        f"files in subdirectories of gateway/web/console are neither packaged nor served: {nested}"
    )
