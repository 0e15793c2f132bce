"""The HTTP API on its own port (``PRISM_API_PORT``): publish, control and presence for services that
cannot speak NATS. Every operation is a NATS publish or request made with :class:`PrismBackend`, so any
node answers any request, whichever node holds the connections. docs/http-api.md is the manual and
docs/openapi.yaml the contract (tests/integration/test_http_api.py keeps the two true).

Why aiohttp: one well-kept library (aio-libs, typed, a C HTTP parser hardened by years on the open
internet) gives both this server and the pooled keep-alive client that HTTP backends need
(gateway/io/http_backends.py), and runs on the node's uvloop event loop beside websockets and nats-py.
Only its public ``aiohttp.web`` API is used.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import nats.errors
import orjson
from aiohttp import web
from nats.aio.client import Client as NatsClient

from gateway.core.api_auth import ApiAuthError, ApiCredentials
from gateway.core.http_api import (
    ApiRequestError,
    Publish,
    close_body,
    control_status,
    json_body,
    parse_batch,
    publish_of,
    receipts_answer,
)
from gateway.io.auth import KeyRing
from gateway.metrics import GatewayMetrics
from shared import headers as h
from shared import listen
from shared.backend import PresenceQueryError, PrismBackend
from shared.errors import InvalidName
from shared.subjects import Subjects

log = logging.getLogger("prism.http_api")

MAX_BODY_BYTES = 4 << 20  # a batch of many messages; each single message is bounded by NATS max_payload
RECEIPT_TIMEOUT = 2.0  # seconds to wait for the first receipt or control reply
RECEIPT_WINDOW = 0.25  # seconds to collect more receipts after the first (user, room, broadcast)
BATCH_PARALLEL = 64  # messages of one batch in flight at once

API_LISTEN = listen.Settings("--host or PRISM_HOST", "--api-port or PRISM_API_PORT")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(status: int, body: Any) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def _error(status: int, code: str, message: str) -> web.Response:
    return _json(status, {"error": code, "message": message})


class HttpApi:
    def __init__(
        self,
        credentials: ApiCredentials,
        keyring: KeyRing | None,
        subjects: Subjects,
        metrics: GatewayMetrics,
        node_id: str,
        unavailable: Callable[[], str | None],
    ) -> None:
        """``unavailable``: why the node cannot serve the API right now (None: it can)."""
        self.credentials = credentials
        self.keyring = keyring
        self.subjects = subjects
        self.metrics = metrics
        self.node_id = node_id
        self.unavailable = unavailable
        self.prism: PrismBackend | None = None  # once NATS is connected (attach)
        self.max_payload = 1 << 20
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.app = web.Application(middlewares=[self._guard], client_max_size=MAX_BODY_BYTES)
        add = self.app.router
        add.add_post("/v1/conns/{conn}/messages", self.publish_conn, name="publish_conn")
        add.add_post("/v1/users/{user}/messages", self.publish_user, name="publish_user")
        add.add_post("/v1/rooms/{room}/messages", self.publish_room, name="publish_room")
        add.add_post("/v1/broadcast", self.broadcast, name="broadcast")
        add.add_post("/v1/batch", self.batch, name="batch")
        add.add_post("/v1/conns/{conn}/close", self.close_conn, name="close_conn")
        add.add_put("/v1/conns/{conn}/rooms/{room}", self.join_conn, name="join_conn")
        add.add_delete("/v1/conns/{conn}/rooms/{room}", self.leave_conn, name="leave_conn")
        add.add_post("/v1/users/{user}/close", self.close_user, name="close_user")
        add.add_put("/v1/users/{user}/rooms/{room}", self.join_user, name="join_user")
        add.add_delete("/v1/users/{user}/rooms/{room}", self.leave_user, name="leave_user")
        add.add_get("/v1/users/{user}/presence", self.user_presence, name="user_presence")
        add.add_get("/v1/rooms/{room}/presence", self.room_presence, name="room_presence")
        add.add_post("/v1/presence/online", self.online, name="online")
        add.add_get("/v1/cluster", self.cluster, name="cluster")

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(self, host: str, port: int) -> None:
        """Listen; requests get 503 until :meth:`attach`. :class:`shared.errors.PortUnavailable` if the
        port cannot be bound."""
        runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:  # a user mistake: PortUnavailable, one line naming the setting
            await runner.cleanup()
            raise listen.unavailable(exc, host, port, API_LISTEN) from None
        self._runner = runner
        for address in runner.addresses:
            self.port = int(address[1])
            break

    def attach(self, nc: NatsClient) -> None:
        self.prism = PrismBackend(nc, self.subjects)
        self.max_payload = int(nc.max_payload)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- every request: credentials, readiness, errors, metrics --------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route
        operation = route.name or "unknown"
        response = await self._answer(request, handler)
        self.metrics.api_requests.labels(
            node=self.node_id, operation=operation, status=str(response.status)
        ).inc()
        return response

    async def _answer(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            keys = self.keyring.keys() if self.keyring is not None and self.credentials.accepts_jwt else []
            principal = self.credentials.check(request.headers.getall("Authorization", []), keys)
        except ApiAuthError as exc:
            response = _error(401, "unauthorized", str(exc))
            response.headers["WWW-Authenticate"] = 'Bearer realm="prism-api"'
            return response
        why = self.unavailable() if self.prism is not None else "starting"
        if why is not None:
            response = _error(503, "unavailable", f"node not available: {why}")
            response.headers["Retry-After"] = "1"
            return response
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "too_large", f"body over {MAX_BODY_BYTES} bytes")
        except web.HTTPNotFound:
            return _error(
                404, "not_found", f"no operation {request.method} {request.path}; see docs/openapi.yaml"
            )
        except web.HTTPMethodNotAllowed as exc:
            response = _error(405, "method_not_allowed", f"{request.method} is not allowed on {request.path}")
            response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
            return response
        except (ApiRequestError, InvalidName) as exc:
            return _error(400, "invalid_request", str(exc))
        except PresenceQueryError as exc:
            status = 503 if exc.code == "unavailable" else 400
            return _error(status, exc.code, str(exc).partition(": ")[2])
        except nats.errors.TimeoutError:
            return _error(504, "timeout", f"no node answered within {RECEIPT_TIMEOUT:g}s")
        except nats.errors.NoRespondersError:
            return _error(503, "unavailable", "no gateway node answered")
        except (nats.errors.ConnectionClosedError, nats.errors.ConnectionDrainingError) as exc:
            return _error(503, "unavailable", f"NATS connection closed: {exc}")
        except web.HTTPException:
            raise
        except Exception:  # a bug: say so in JSON (and the log), as for every other answer
            log.exception("HTTP API %s %s failed", request.method, request.path)
            return _error(500, "internal", "the node failed on this request; see its log")
        finally:
            log.debug("%s %s by %s", request.method, request.path, principal.name)

    def _backend(self) -> PrismBackend:
        assert self.prism is not None  # the guard answers 503 until attach()
        return self.prism

    # -- publish -------------------------------------------------------------------------------------
    async def _payload(self, request: web.Request) -> tuple[bytes, bool]:
        payload = await request.read()
        if len(payload) > self.max_payload:
            raise web.HTTPRequestEntityTooLarge(max_size=self.max_payload, actual_size=len(payload))
        return payload, request.headers.get(h.FRAME) == h.FRAME_BINARY

    async def publish_conn(self, request: web.Request) -> web.Response:
        payload, binary = await self._payload(request)
        message = publish_of(self.subjects, "conn", request.match_info["conn"], payload, binary)
        return await self._publish_one(message)

    async def publish_user(self, request: web.Request) -> web.Response:
        payload, binary = await self._payload(request)
        return await self._publish_one(
            publish_of(self.subjects, "user", request.match_info["user"], payload, binary)
        )

    async def publish_room(self, request: web.Request) -> web.Response:
        payload, binary = await self._payload(request)
        return await self._publish_one(
            publish_of(self.subjects, "room", request.match_info["room"], payload, binary)
        )

    async def broadcast(self, request: web.Request) -> web.Response:
        payload, binary = await self._payload(request)
        return await self._publish_one(publish_of(self.subjects, "broadcast", None, payload, binary))

    async def _publish_one(self, message: Publish) -> web.Response:
        status, body = await self._deliver(message)
        return _json(status, body)

    async def _deliver(self, message: Publish) -> tuple[int, dict[str, Any]]:
        """(status, answer) of one delivery with receipts."""
        prism = self._backend()
        try:
            receipts = await prism.deliver(
                message.subject,
                message.payload,
                binary=message.binary,
                timeout=RECEIPT_TIMEOUT,
                window=RECEIPT_WINDOW,
            )
        except nats.errors.NoRespondersError:
            if message.target == "conn":
                conn = self.subjects.strip(message.subject).removeprefix("conn.")
                return 410, {"error": "gone", "message": f"connection {conn} is not open"}
            return 200, receipts_answer([])  # nobody holds the user or room: nothing to deliver
        if message.target == "conn":
            if not receipts:
                return 504, {"error": "timeout", "message": f"no receipt within {RECEIPT_TIMEOUT:g}s"}
            return 200, receipts[0]
        return 200, receipts_answer(receipts)

    async def batch(self, request: web.Request) -> web.Response:
        messages = parse_batch(self.subjects, await request.read(), self.max_payload)
        limit = asyncio.Semaphore(BATCH_PARALLEL)

        async def one(message: Publish) -> dict[str, Any]:
            async with limit:
                status, body = await self._deliver(message)
            return {"status": status, **body}

        results = await asyncio.gather(*(one(m) for m in messages))
        return _json(200, {"results": results})

    # -- control -------------------------------------------------------------------------------------
    async def _control_conn(self, conn: str, action: str, body: dict[str, Any]) -> web.Response:
        try:
            reply = await self._backend().control(
                self.subjects.control_conn(conn, action), body, timeout=RECEIPT_TIMEOUT
            )
        except nats.errors.NoRespondersError:
            return _error(410, "gone", f"connection {conn} is not open")
        return self._control_answer(reply)

    def _control_answer(self, reply: dict[str, Any]) -> web.Response:
        if control_status(reply) != 200:
            return _error(400, "refused", str(reply.get("error", "refused")))
        return _json(200, reply)

    async def close_conn(self, request: web.Request) -> web.Response:
        body = close_body(await request.read())
        return await self._control_conn(request.match_info["conn"], "close", body)

    async def join_conn(self, request: web.Request) -> web.Response:
        room = request.match_info["room"]
        return await self._control_conn(request.match_info["conn"], "join", {"room": room})

    async def leave_conn(self, request: web.Request) -> web.Response:
        room = request.match_info["room"]
        return await self._control_conn(request.match_info["conn"], "leave", {"room": room})

    async def _control_user(self, user: str, action: str, body: dict[str, Any]) -> web.Response:
        self.subjects.control_user(user, action)  # InvalidName: 400
        replies = await self._backend().control_user(
            user, action, body, timeout=RECEIPT_TIMEOUT, window=RECEIPT_WINDOW
        )
        refused = [r for r in replies if control_status(r) != 200]
        if refused:
            return _error(400, "refused", str(refused[0].get("error", "refused")))
        return _json(200, {"conns": sum(int(r.get("conns", 0)) for r in replies), "replies": replies})

    async def close_user(self, request: web.Request) -> web.Response:
        body = close_body(await request.read())
        return await self._control_user(request.match_info["user"], "close", body)

    async def join_user(self, request: web.Request) -> web.Response:
        return await self._control_user(
            request.match_info["user"], "join", {"room": request.match_info["room"]}
        )

    async def leave_user(self, request: web.Request) -> web.Response:
        return await self._control_user(
            request.match_info["user"], "leave", {"room": request.match_info["room"]}
        )

    # -- presence ------------------------------------------------------------------------------------
    async def user_presence(self, request: web.Request) -> web.Response:
        user = request.match_info["user"]
        self.subjects.presence_user(user)  # InvalidName: 400
        return _json(200, await self._backend().user_presence(user, timeout=RECEIPT_TIMEOUT))

    async def room_presence(self, request: web.Request) -> web.Response:
        room = request.match_info["room"]
        self.subjects.presence_room(room)
        return _json(200, await self._backend().room_presence(room, timeout=RECEIPT_TIMEOUT))

    async def online(self, request: web.Request) -> web.Response:
        body = json_body(await request.read(), "body")
        users = body.get("users") if isinstance(body, dict) else None
        if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
            raise ApiRequestError('expected {"users": ["alice", "bob"]}')
        return _json(200, {"online": await self._backend().online(users, timeout=RECEIPT_TIMEOUT)})

    async def cluster(self, request: web.Request) -> web.Response:
        return _json(200, await self._backend().cluster_presence(timeout=RECEIPT_TIMEOUT))
