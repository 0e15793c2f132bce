"""Static files on the gateway's port: the browser SDK (``/prism.js``, ``/prism.d.ts``) always, and the web
console (``/``, ``/console/<file>``, ``/console/config.json``) when ``console`` is on.

Every file is read once, when the node starts, into memory: the set of servable names is fixed then, so a
request path is only ever looked up in a dict and never joined onto a directory (``/console/../x`` and
``/console/%2e%2e/x`` are simply names that are not there: 404). Responses carry a strong ``ETag`` and
``Cache-Control: no-cache``, so browsers revalidate each time and get ``304`` while nothing changed. The
SDK files are served to pages of any origin (``Access-Control-Allow-Origin: *``), so an application's
own pages can import a node's ``/prism.js``; the console's files are same-origin only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

WEB_DIR = Path(__file__).resolve().parent.parent / "web"  # gateway/web, installed as package data
CONSOLE_PREFIX = "/console/"

CONTENT_TYPES: Mapping[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
}
# No registered type for TypeScript; text/plain lets a browser tab show it instead of downloading it.
DTS_TYPE = "text/plain; charset=utf-8"
_MAX_CONSOLE_FILE = 4 << 20  # a console asset is small; anything bigger is a mistake, not served


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str
    # Readable by pages of any origin (CORS): a module script from another origin is only run with
    # Access-Control-Allow-Origin, and the SDK is public code with no credentials involved.
    any_origin: bool = False

    @classmethod
    def of(cls, body: bytes, content_type: str, any_origin: bool = False) -> Asset:
        return cls(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"', any_origin)


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """Whether an ``If-None-Match`` header names ``etag`` (weak comparison, as RFC 9110 asks for GET)."""
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        tag = candidate.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def respond(asset: Asset, request: Request) -> Response:
    headers = Headers(
        [
            ("ETag", asset.etag),
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),  # a .js is never taken for anything else
        ]
    )
    if asset.any_origin:
        headers["Access-Control-Allow-Origin"] = "*"
    if etag_matches(request.headers.get("If-None-Match"), asset.etag):
        return Response(304, "Not Modified", headers, b"")
    headers["Content-Type"] = asset.content_type
    headers["Content-Length"] = str(len(asset.body))
    return Response(200, "OK", headers, asset.body)


def console_config(nodes: Sequence[str], notify: bool) -> bytes:
    """``/console/config.json``: which nodes the console offers (empty: the page's own origin)."""
    return orjson.dumps({"nodes": list(nodes), "notify": notify})


def _read_console(directory: Path) -> dict[str, Asset]:
    assets: dict[str, Asset] = {}
    if not directory.is_dir():
        return assets
    for path in sorted(directory.iterdir()):
        content_type = CONTENT_TYPES.get(path.suffix.lower())
        if content_type is None or path.name.startswith(".") or not path.is_file():
            continue
        if path.stat().st_size > _MAX_CONSOLE_FILE:
            continue
        assets[path.name] = Asset.of(path.read_bytes(), content_type)
    return assets


class StaticSite:
    """The static routes of one node, with every body already in memory (see the module docstring)."""

    def __init__(self, routes: Mapping[str, Asset]) -> None:
        self.routes = dict(routes)

    @classmethod
    def load(
        cls,
        *,
        console: bool = False,
        console_nodes: Sequence[str] = (),
        console_notify: bool = False,
        web_dir: Path = WEB_DIR,
    ) -> StaticSite:
        """Read the SDK (and, with ``console``, the console's files) from ``web_dir``. Blocking: call it
        once at start (in a thread from async code)."""
        routes = {
            "/prism.js": Asset.of((web_dir / "prism.js").read_bytes(), CONTENT_TYPES[".js"], any_origin=True),
            "/prism.d.ts": Asset.of((web_dir / "prism.d.ts").read_bytes(), DTS_TYPE, any_origin=True),
        }
        if console:
            files = _read_console(web_dir / "console")
            for name, asset in files.items():
                routes[CONSOLE_PREFIX + name] = asset
            if "index.html" in files:
                routes["/"] = files["index.html"]
            config = console_config(console_nodes, console_notify)
            routes[CONSOLE_PREFIX + "config.json"] = Asset.of(config, CONTENT_TYPES[".json"])
        return cls(routes)

    def get(self, route: str, request: Request) -> Response | None:
        """The response for ``route`` (a path without its query), or ``None`` if it is not a static one."""
        asset = self.routes.get(route)
        return None if asset is None else respond(asset, request)
