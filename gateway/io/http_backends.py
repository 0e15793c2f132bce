"""Calls to HTTP backends over aiohttp: a pooled client per backend, its concurrency limit, signatures,
retries, and the notifications still in flight when the node stops.

The decisions (which backend, what the body is, what an answer means, whether to retry) are in
:mod:`gateway.core.http_backends` and :mod:`gateway.core.retry`; this module only moves bytes. aiohttp
is used through its public client API only.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp

from gateway.core.http_backends import HttpBackend, HttpRouting
from gateway.core.retry import Attempt, Outcome
from gateway.metrics import HTTP_BACKEND_KINDS, HTTP_BACKEND_OUTCOMES, GatewayMetrics
from shared import http_signing, tracing

log = logging.getLogger("prism.http_backends")

MAX_ANSWER_BYTES = 1 << 20  # the most a backend's answer may hold (what a NATS reply may hold, too)
_OUTCOME_LABEL = {
    Outcome.OK: "ok",
    Outcome.STATUS: "status",
    Outcome.REFUSED: "refused",
    Outcome.BROKEN: "broken",
    Outcome.TIMEOUT: "timeout",
    Outcome.BUSY: "busy",
}


@dataclass(frozen=True, slots=True)
class Result:
    """How a call ended after its retries: the last attempt, the answer's body, and why it failed."""

    attempt: Attempt
    body: bytes = b""
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.attempt.outcome is Outcome.OK


class _AnswerTooBig(Exception):
    pass


class _Client:
    """One backend's pooled HTTP client and its limit: ``max_concurrency`` calls at once, and at most
    ``max_queue`` waiting for a slot."""

    def __init__(self, backend: HttpBackend, user_agent: str) -> None:
        self.backend = backend
        # Idle connections are closed after ``keepalive`` seconds, before a backend's own idle timeout
        # (uvicorn: 5 s) closes them under a request (which could then not be retried safely).
        connector = aiohttp.TCPConnector(
            limit=backend.max_concurrency,
            keepalive_timeout=backend.keepalive if backend.keepalive > 0 else None,
            force_close=backend.keepalive == 0,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": user_agent, "Content-Type": "application/json"},
            cookie_jar=aiohttp.DummyCookieJar(),  # a backend's cookies mean nothing here: skip the jar
        )
        self.timeout = aiohttp.ClientTimeout(total=backend.timeout)
        self.slots = asyncio.Semaphore(backend.max_concurrency)
        self.waiting = 0

    async def close(self) -> None:
        await self.session.close()


class HttpBackends:
    """Every HTTP backend of a node, with :class:`HttpRouting` to pick one."""

    def __init__(self, routing: HttpRouting, node_id: str, metrics: GatewayMetrics, version: str) -> None:
        self.routing = routing
        self.node_id = node_id
        self.metrics = metrics
        self._user_agent = f"prism-gateway/{version}"
        self._clients: dict[str, _Client] = {}
        self._ids = itertools.count(1)
        self._id_prefix = f"{node_id}-{int(time.time() * 1000):x}-"
        self._notifications: set[asyncio.Task[Any]] = set()
        for backend in routing.backends:
            for kind in HTTP_BACKEND_KINDS:
                metrics.http_backend_latency.labels(node=node_id, backend=backend.name, kind=kind)
                for outcome in HTTP_BACKEND_OUTCOMES:
                    metrics.http_backend_calls.labels(
                        node=node_id, backend=backend.name, kind=kind, outcome=outcome
                    )

    async def start(self) -> None:
        """Make the clients (in the running loop)."""
        for backend in self.routing.backends:
            self._clients[backend.name] = _Client(backend, self._user_agent)

    async def stop(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for notifications in flight, then close every client."""
        if self._notifications:
            _, pending = await asyncio.wait(list(self._notifications), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("%d HTTP disconnect notification(s) not sent before stop", len(pending))
                await asyncio.gather(*pending, return_exceptions=True)
        for client in self._clients.values():
            await client.close()

    def call_id(self) -> str:
        """A new id for a call: the same across its retries, unique across the cluster (node id, start
        time and a counter), so a backend can tell a retried notification from a new one."""
        return f"{self._id_prefix}{next(self._ids)}"

    def notify(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run a notification in the background; :meth:`stop` waits for it."""
        task = asyncio.ensure_future(work)
        self._notifications.add(task)
        task.add_done_callback(self._notifications.discard)

    async def call(self, backend: HttpBackend, kind: str, url: str, body: bytes, idempotent: bool) -> Result:
        """POST ``body`` to ``url``, retrying as ``backend.retry`` allows; never raises for what the
        backend does. Each attempt may take ``backend.timeout`` seconds, and so may the wait for a slot."""
        started = time.monotonic()
        result = await self._call(backend, url, body, idempotent)
        labels = {"node": self.node_id, "backend": backend.name, "kind": kind}
        self.metrics.http_backend_latency.labels(**labels).observe(time.monotonic() - started)
        outcome = _OUTCOME_LABEL[result.attempt.outcome]
        self.metrics.http_backend_calls.labels(**labels, outcome=outcome).inc()
        return result

    async def _call(self, backend: HttpBackend, url: str, body: bytes, idempotent: bool) -> Result:
        client = self._clients[backend.name]
        if client.slots.locked() and client.waiting >= backend.max_queue:
            return Result(Attempt(Outcome.BUSY))
        if client.slots.locked():  # wait for a slot, at most one attempt's time
            client.waiting += 1
            try:
                await asyncio.wait_for(client.slots.acquire(), backend.timeout)
            except TimeoutError:
                return Result(Attempt(Outcome.BUSY))
            finally:
                client.waiting -= 1
        else:
            await client.slots.acquire()  # free: no timer needed
        loop = asyncio.get_running_loop()
        deadline = loop.time() + backend.timeout * (1 + backend.retry.retries)
        try:
            tried = 0
            while True:
                tried += 1
                result = await self._attempt(client, url, body)
                if result.ok:
                    return result
                delay = backend.retry.delay(result.attempt, tried, idempotent, deadline - loop.time())
                if delay is None:
                    return result
                log.debug("retrying %s (%s) in %.3fs", url, result.attempt.outcome.value, delay)
                await asyncio.sleep(delay)
        finally:
            client.slots.release()

    async def _attempt(self, client: _Client, url: str, body: bytes) -> Result:
        backend = client.backend
        headers = tracing.inject() if tracing.tracer is not None else {}  # traceparent: the client's span
        if backend.secrets:
            headers[http_signing.SIGNATURE_HEADER] = http_signing.sign(
                backend.secrets, int(time.time()), body
            )
        try:
            post = client.session.post(url, data=body, headers=headers, timeout=client.timeout)
            async with post as response:
                answer = await _read_bounded(response)
                status = response.status
        except TimeoutError:
            return Result(Attempt(Outcome.TIMEOUT))
        except aiohttp.ClientConnectorError as exc:  # no connection: the request never left
            return Result(Attempt(Outcome.REFUSED), detail=_why(exc))
        except (aiohttp.ClientError, _AnswerTooBig) as exc:
            return Result(Attempt(Outcome.BROKEN), detail=_why(exc))
        if 200 <= status < 300:
            return Result(Attempt(Outcome.OK, status), answer)
        return Result(Attempt(Outcome.STATUS, status), answer)


async def _read_bounded(response: aiohttp.ClientResponse) -> bytes:
    length = response.content_length
    if length is not None:
        if length > MAX_ANSWER_BYTES:
            raise _AnswerTooBig(f"answer of {length} bytes; the limit is {MAX_ANSWER_BYTES}")
        return await response.read()  # the usual case: a known, bounded length
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(65536):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise _AnswerTooBig(f"answer over {MAX_ANSWER_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _why(exc: BaseException) -> str:
    """A short reason for a client, naming no address or URL."""
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "name not resolved"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientConnectorSSLError):
        return "TLS handshake failed"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ConnectionRefusedError):
            return "connection refused"
        return os.strerror(exc.errno) if exc.errno else "no connection"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the backend closed the connection"
    if isinstance(exc, _AnswerTooBig):
        return str(exc)
    return type(exc).__name__
