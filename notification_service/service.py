"""One notification service instance: wires NATS, the streams, the worker and the connect listener, and owns
the lifecycle.

    start()  /healthz up, connect NATS, create or update the streams and the consumer, listen for
             client.connect, start fetching -> ready
    drain()  unready, fetch no more, take no more connect events, finish what is in flight
    stop()   drain NATS and close it

:func:`run` adds signal handling for the ``prism notify`` process: the first SIGTERM/SIGINT drains,
a second one exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from notification_service import core
from notification_service.client_requests import SelfNotifyListener
from notification_service.config import NotifyConfig
from notification_service.inbox import Inbox
from notification_service.lifecycle import ConnectListener
from notification_service.metrics import NotifyMetrics
from notification_service.receipts import Receipts
from notification_service.streams import ensure_streams
from notification_service.worker import FETCH_TIMEOUT, Worker
from shared import nats_connection
from shared.health_http import HealthServer
from shared.lifecycle import State, not_ready_reason, run_until_signalled
from shared.nats_connection import NatsConnection, NatsOptions
from shared.startup import StartupSteps

log = logging.getLogger("prism.notify")


class NotifyService:
    def __init__(
        self,
        config: NotifyConfig,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], float] = time.time,
        backlog_interval: float = 5.0,
        metrics_port_fallback: bool = False,
    ) -> None:
        self.config = config
        # Whether a taken metrics_port may be replaced by any free one: when the operator did not choose
        # it, so that a second instance on one host starts (prism notify; see docs/notifications.md).
        self.metrics_port_fallback = metrics_port_fallback
        self.subjects = config.subjects
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = NotifyMetrics(self.registry)
        self.clock = clock
        self.backlog_interval = backlog_interval  # seconds between two readings of the consumer's backlog
        self.state = State.NEW
        self.http = HealthServer(self.registry, self.is_ready, self.not_ready_reason)
        self.worker: Worker | None = None
        self._bus: NatsConnection | None = None
        self._steps = StartupSteps()  # what the start waits for (NATS, JetStream), in /readyz
        self._receipts: Receipts | None = None
        self._listener: ConnectListener | None = None
        self._self_notify: SelfNotifyListener | None = None
        self._loop: asyncio.Task[None] | None = None
        self._psub: Any = None
        self._repairing: asyncio.Task[None] | None = None
        self._backlog: asyncio.Task[None] | None = None

    @property
    def metrics_port(self) -> int:
        return self.http.port

    # -- lifecycle -------------------------------------------------------------------------------------
    async def start(self) -> None:
        self.state = State.STARTING
        config = self.config
        await self.http.start(config.metrics_host, config.metrics_port, self.metrics_port_fallback)
        options = NatsOptions(servers=config.nats_servers, name="prism-notify", auth=config.nats_auth)
        self._steps.waiting = f"NATS at {', '.join(config.nats_servers)}"
        bus = self._bus = await nats_connection.connect(options, self._on_nats_state)
        self.metrics.nats_connected.set(1)
        nc = bus.nc
        js = nc.jetstream()
        await self._steps.run(
            "JetStream to serve the notification streams", lambda: ensure_streams(js, config)
        )
        receipts = self._receipts = Receipts(nc)
        await receipts.start()
        inbox = Inbox(
            js,
            nc,
            config.inbox_stream,
            self.subjects,
            receipts,
            config.receipt_timeout,
            self.metrics,
            self.clock,
        )
        psub = self._psub = await js.pull_subscribe_bind(durable=config.consumer, stream=config.stream)
        self.worker = Worker(
            psub,
            js,
            self.subjects,
            receipts,
            inbox,
            self.metrics,
            stream=config.stream,
            dead_stream=config.dead_stream,
            concurrency=config.concurrency,
            receipt_timeout=config.receipt_timeout,
            ack_wait=config.ack_wait,
            policy=core.RetryPolicy(config.max_deliveries, config.retry_delay, config.retry_max_delay),
            clock=self.clock,
            on_jetstream_error=self._repair_soon,
        )
        self._listener = ConnectListener(nc, self.subjects, inbox, config.concurrency)
        await self._listener.start()
        if config.notify_client_requests:
            self._self_notify = SelfNotifyListener(nc, js, config, self.metrics)
            await self._self_notify.start()
        await nats_connection.flush_all(nc)  # subscribed on the server before we say ready
        self._loop = asyncio.ensure_future(self.worker.run())
        self._backlog = asyncio.ensure_future(self._watch_backlog(js))
        self.state = State.READY
        self.metrics.ready.set(1)
        log.info("notification service ready: consumer %s on stream %s", config.consumer, config.stream)

    def is_ready(self) -> bool:
        return not_ready_reason(self.state, self._bus is not None and self._bus.connected) is None

    def not_ready_reason(self) -> str:
        if self.state is State.STARTING and self._steps.waiting:
            return f"starting: waiting for {self._steps.waiting}"
        return not_ready_reason(self.state, self._bus is not None and self._bus.connected) or "ready"

    async def drain(self) -> None:
        """Fetch no more and finish what is in flight (within ``drain_timeout``); what is not finished is
        redelivered by JetStream after ``ack_wait``."""
        if self.state in (State.DRAINING, State.STOPPED):
            return
        self.state = State.DRAINING
        self.metrics.ready.set(0)
        if self.worker is not None:
            self.worker.stop()
        if self._loop is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._loop), FETCH_TIMEOUT + 5)
            except TimeoutError:
                self._loop.cancel()
        if self._psub is not None:
            # Its queue may hold the server's "request expired" statuses, which a NATS drain would wait on.
            with contextlib.suppress(Exception):
                await self._psub.unsubscribe()
            self._psub = None
        timeout = self.config.drain_timeout
        if self._self_notify is not None:
            with contextlib.suppress(Exception):
                await self._self_notify.stop()
        if self._listener is not None:
            await self._listener.stop(timeout)
        if self.worker is not None and not await self.worker.wait_idle(timeout):
            log.warning("notifications still in flight after %.1fs; JetStream will redeliver them", timeout)

    async def stop(self) -> None:
        if self.state is State.STOPPED:
            return
        await self.drain()
        self.state = State.STOPPED
        for task in (self._repairing, self._backlog):
            if task is not None:
                task.cancel()
        if self._receipts is not None:
            with contextlib.suppress(Exception):
                await self._receipts.stop()
        if self._bus is not None:
            await self._bus.drain()
        self.metrics.nats_connected.set(0)
        await self.http.stop()
        if self._bus is not None:  # else it never started (a taken port, say): no line under the error
            log.info("notification service stopped")

    async def _on_nats_state(self, connected: bool) -> None:
        self.metrics.nats_connected.set(1 if connected else 0)
        if connected:
            self._repair_soon()

    def _repair_soon(self) -> None:
        """After a reconnect or a failed fetch: make sure the streams and the consumer exist (a NATS with
        in-memory storage comes back empty; an operator may have deleted the consumer)."""
        if self.state is State.READY and (self._repairing is None or self._repairing.done()):
            self._repairing = asyncio.ensure_future(self._repair())

    async def _watch_backlog(self, js: Any) -> None:
        """Every few seconds: how many notifications wait in the stream, taken or not (the consumer's
        figures, the same for every instance)."""
        while True:
            try:
                info = await js.consumer_info(self.config.stream, self.config.consumer)
                self.metrics.backlog.set(info.num_pending + info.num_ack_pending)
            except Exception as exc:
                log.debug("reading the consumer's backlog failed: %r", exc)
            await asyncio.sleep(self.backlog_interval)

    async def _repair(self) -> None:
        if self._bus is None:
            return
        try:
            await ensure_streams(self._bus.nc.jetstream(), self.config)
        except Exception as exc:
            log.warning("checking the streams and consumer failed: %r", exc)


async def run(config: NotifyConfig, metrics_port_fallback: bool = False) -> int:
    """Run one instance until SIGTERM/SIGINT, then drain and stop; a second signal exits at once."""
    service = NotifyService(config, metrics_port_fallback=metrics_port_fallback)

    def ready() -> None:
        host = "localhost" if config.metrics_host in ("0.0.0.0", "::", "127.0.0.1") else config.metrics_host
        print(
            f"prism notify ready: stream {config.stream}, consumer {config.consumer}, "
            f"metrics on http://{host}:{service.metrics_port}/metrics",
            flush=True,
        )

    return await run_until_signalled(service, ready)
