"""The example HTTP backend: a small Starlette app that a route names in its routes file, for services
that cannot speak NATS (``prism http-demo``; ``prism dev --http-backend`` runs one and wires it up).

It never touches NATS. The gateway calls it, signed with ``Prism-Signature`` (checked here with
:func:`gateway.core.http_signing.verify`), and it reaches clients through the gateway's HTTP API:

    POST /prism/connect      allows every connection, except of the user ``blocked`` (close 4503);
                             ``?room=<name>`` joins that room; claims {"greeted_at": ...}
    POST /prism/event        http.echo   a request: answers {"echo": <data>, "user", "claims"}
                             http.shout  {"room","text"}: publishes {"type":"shout","from","text"} to the
                                         room through POST /v1/rooms/<room>/messages; answers the receipts
    POST /prism/disconnect   counts it (204)
    GET  /stats              {"connects","events","disconnects"}: what it has seen (unsigned, for tests)

A request it cannot take is answered ``400 {"message": ...}``, which the client sees as the error frame
``backend_error``. It needs the ``http-demo`` extra (Starlette and uvicorn).
"""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from shared import http_signing, listen
from shared.config import setting
from shared.errors import ConfigError

log = logging.getLogger("prism.http_demo")

EVENTS = ("http.echo", "http.shout")
BLOCKED_USER = "blocked"
LISTEN = listen.Settings(
    "--http-demo-host or PRISM_HTTP_DEMO_HOST", "--http-demo-port or PRISM_HTTP_DEMO_PORT"
)


@dataclass(frozen=True, slots=True)
class HttpDemoConfig:
    """``prism http-demo``'s settings (``PRISM_HTTP_DEMO_*``)."""

    http_demo_host: str = setting("127.0.0.1", "address the example HTTP backend listens on")
    http_demo_port: int = setting(9000, "port of the example HTTP backend")
    http_demo_secret: str = field(
        default="",
        repr=False,
        metadata={"help": "the secret(s) the gateway signs with (its routes file's secret_env); use the env"},
    )
    http_demo_api_url: str = setting("http://127.0.0.1:8180", "the gateway's HTTP API (PRISM_API_PORT)")
    http_demo_api_key: str = field(
        default="", repr=False, metadata={"help": "an API key of the gateway (PRISM_API_KEYS); use the env"}
    )
    log_level: str = setting("info", "log level: debug, info, warning, error")

    def validate(self) -> None:
        if not self.http_demo_secret:
            raise ConfigError(
                "http_demo_secret is empty: set PRISM_HTTP_DEMO_SECRET to the gateway's signing secret"
            )
        if not 0 <= self.http_demo_port <= 65535:
            raise ConfigError(f"http_demo_port must be a port number, got {self.http_demo_port}")

    @property
    def secrets(self) -> list[bytes]:
        return [s.strip().encode() for s in self.http_demo_secret.split(",") if s.strip()]


def create_app(config: HttpDemoConfig) -> Any:
    """The ASGI app (Starlette)."""
    import aiohttp
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    seen: Counter[str] = Counter()
    clients: dict[str, aiohttp.ClientSession] = {}

    async def signed_body(request: Request) -> dict[str, Any] | None:
        raw = await request.body()
        header = request.headers.get(http_signing.SIGNATURE_HEADER)
        if not http_signing.verify(header, raw, config.secrets, time.time()):
            return None
        body: dict[str, Any] = orjson.loads(raw)
        return body

    def unsigned() -> Response:
        return JSONResponse({"message": "bad or missing Prism-Signature"}, status_code=401)

    async def connect(request: Request) -> Response:
        body = await signed_body(request)
        if body is None:
            return unsigned()
        seen["connects"] += 1
        if body.get("user") == BLOCKED_USER:
            return JSONResponse({"allow": False, "code": 4503, "reason": "this user is blocked"})
        room = body.get("query", {}).get("room")
        greeted = datetime.now(UTC).isoformat(timespec="seconds")
        return JSONResponse(
            {"allow": True, "rooms": [room] if room else [], "claims": {"greeted_at": greeted}}
        )

    async def event(request: Request) -> Response:
        body = await signed_body(request)
        if body is None:
            return unsigned()
        seen["events"] += 1
        name, data = body.get("event"), body.get("data")
        if name == "http.echo":
            return JSONResponse({"echo": data, "user": body.get("user"), "claims": body.get("claims")})
        if name == "http.shout":
            if not isinstance(data, dict) or not isinstance(data.get("room"), str) or not data.get("text"):
                return JSONResponse(
                    {"message": 'data must be {"room": "lobby", "text": "hi"}'}, status_code=400
                )
            shout = orjson.dumps(
                {"type": "shout", "from": body.get("user"), "text": str(data["text"])[:1000]}
            )
            url = f"{config.http_demo_api_url}/v1/rooms/{data['room']}/messages"
            headers = {"Authorization": f"Bearer {config.http_demo_api_key}"}
            async with clients["api"].post(url, data=shout, headers=headers) as answer:
                receipts = await answer.json()
                return JSONResponse(receipts, status_code=200 if answer.status == 200 else 502)
        return JSONResponse({"message": f"the example backend does not handle {name!r}"}, status_code=400)

    async def disconnect(request: Request) -> Response:
        if await signed_body(request) is None:
            return unsigned()
        seen["disconnects"] += 1
        return Response(status_code=204)

    async def stats(request: Request) -> Response:
        return JSONResponse({k: seen[k] for k in ("connects", "events", "disconnects")})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        clients["api"] = aiohttp.ClientSession()
        try:
            yield
        finally:
            await clients["api"].close()

    return Starlette(
        routes=[
            Route("/prism/connect", connect, methods=["POST"]),
            Route("/prism/event", event, methods=["POST"]),
            Route("/prism/disconnect", disconnect, methods=["POST"]),
            Route("/stats", stats, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def routes_file(
    base_url: str, routes: tuple[str, ...] = ("/ws",), secret_env: str = "PRISM_HTTP_DEMO_SECRET"
) -> str:
    """A routes file (TOML) that sends a route's connects, ``http.*`` events and disconnects here."""
    listed = ", ".join(f'"{r}"' for r in routes)
    return (
        "# The example HTTP backend (shared/http_demo.py); see docs/http-backends.md\n"
        "[[backend]]\n"
        'name = "http-demo"\n'
        f"routes = [{listed}]\n"
        f'connect_url = "{base_url}/prism/connect"\n'
        f'event_url = "{base_url}/prism/event"\n'
        f'disconnect_url = "{base_url}/prism/disconnect"\n'
        'events = ["http.>"]\n'
        'idempotent_events = ["http.echo"]\n'
        f'secret_env = "{secret_env}"\n'
    )


async def run(config: HttpDemoConfig) -> int:
    """Serve until SIGTERM/SIGINT (uvicorn handles both)."""
    try:
        import uvicorn
    except ModuleNotFoundError:
        raise ConfigError(
            "the example HTTP backend needs the http-demo extra: pip install 'prism-gateway[http-demo]'"
        ) from None
    # The socket is bound here, not by uvicorn, so that a busy port is one clear line and "ready" is
    # printed once connections are accepted (they wait in the backlog until uvicorn serves them).
    listener = socket.socket(socket.AF_INET6 if ":" in config.http_demo_host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((config.http_demo_host, config.http_demo_port))
    except OSError as exc:
        listener.close()
        raise listen.unavailable(exc, config.http_demo_host, config.http_demo_port, LISTEN) from None
    listener.listen(1024)
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), log_level="warning", access_log=False, lifespan="on")
    )
    port = listener.getsockname()[1]
    print(
        f"prism http-demo ready: http://{config.http_demo_host}:{port} (connect, {', '.join(EVENTS)}, "
        "disconnect)",
        flush=True,
    )
    await server.serve(sockets=[listener])
    return 0
