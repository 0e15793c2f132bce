"""The consumer loop: fetch notifications from the durable pull consumer, deliver each, and settle it.

A notification is acked only once a gateway's receipt confirms it reached a socket, or its inbox copy is
stored (JetStream acknowledged the publish), or it is a room/broadcast with nobody in it, or its ttl has
passed. A failure is nak'ed with a growing delay, and dead-lettered once out of tries; a malformed one is
dead-lettered at once. Notifications to one target are processed one after the other (in stream order,
within an instance), different targets concurrently, at most ``concurrency`` at a time. Messages held
longer than a third of ``ack_wait`` are marked in progress so the server does not hand them to another
instance meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import nats.errors
from nats.aio.msg import Msg
from opentelemetry.trace import SpanKind, Tracer

from notification_service import core
from notification_service.inbox import Inbox
from notification_service.metrics import NotifyMetrics
from notification_service.receipts import Receipts
from shared import tracing
from shared.subjects import Subjects

log = logging.getLogger("prism.notify.worker")

FETCH_TIMEOUT = 0.5  # also bounds how long a stop waits for the fetch in progress
_NATS_FAILURES = (nats.errors.Error, OSError, TimeoutError)


class Worker:
    def __init__(
        self,
        psub: Any,
        js: Any,
        subjects: Subjects,
        receipts: Receipts,
        inbox: Inbox,
        metrics: NotifyMetrics,
        *,
        stream: str,
        dead_stream: str,
        concurrency: int,
        receipt_timeout: float,
        ack_wait: float,
        policy: core.RetryPolicy,
        clock: Callable[[], float],
        on_jetstream_error: Callable[[], None] = lambda: None,
    ) -> None:
        self.psub = psub
        self.js = js
        self.subjects = subjects
        self.receipts = receipts
        self.inbox = inbox
        self.metrics = metrics
        self.stream = stream
        self.dead_stream = dead_stream
        self.concurrency = concurrency
        self.receipt_timeout = receipt_timeout
        self.ack_wait = ack_wait
        self.policy = policy
        self.clock = clock
        self.on_jetstream_error = on_jetstream_error  # e.g. check the streams and consumer still exist
        self.processed = 0  # notifications settled by this instance (any outcome)
        self._held: dict[int, list[Any]] = {}  # id(msg) -> [msg, monotonic time of the last touch]
        self._tails: dict[str, asyncio.Task[None]] = {}  # subject -> last task queued for it
        self._room = asyncio.Event()
        self._stopping = False
        self._touch: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    # -- the loop --------------------------------------------------------------------------------------
    async def run(self) -> None:
        self._touch = asyncio.ensure_future(self._keep_alive())  # until wait_idle(): through the drain
        while not self._stopping:
            free = self.concurrency - len(self._held)
            if free <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                msgs = await self.psub.fetch(free, timeout=FETCH_TIMEOUT)
            except TimeoutError:
                continue
            except nats.errors.ConnectionClosedError:
                return
            except Exception as exc:  # NATS reconnecting, JetStream electing a leader, consumer gone
                log.warning("fetching notifications failed: %r", exc)
                self.on_jetstream_error()
                await self._pause(1.0)
                continue
            for msg in msgs:
                self._spawn(msg)

    def stop(self) -> None:
        """Fetch nothing more; what is held is finished (see :meth:`wait_idle`)."""
        self._stopping = True
        self._room.set()

    async def wait_idle(self, timeout: float) -> bool:
        """Wait for what is held to be settled; then stop marking messages in progress."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        finally:
            if self._touch is not None:
                self._touch.cancel()
        return True

    async def _pause(self, seconds: float) -> None:
        self._room.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._room.wait(), seconds)

    def _spawn(self, msg: Msg) -> None:
        self._held[id(msg)] = [msg, time.monotonic()]
        self._idle.clear()
        self.metrics.in_flight.set(len(self._held))
        key = msg.subject
        task = asyncio.ensure_future(self._in_turn(self._tails.get(key), msg))
        self._tails[key] = task
        task.add_done_callback(lambda done: self._done(key, done, msg))

    def _done(self, key: str, task: asyncio.Task[None], msg: Msg) -> None:
        if self._tails.get(key) is task:
            del self._tails[key]
        self._held.pop(id(msg), None)
        self.metrics.in_flight.set(len(self._held))
        self._room.set()
        if not self._held:
            self._idle.set()

    async def _in_turn(self, before: asyncio.Task[None] | None, msg: Msg) -> None:
        if before is not None:
            await asyncio.wait([before])
        started = time.monotonic()
        outcome = "error"
        try:
            if tracing.tracer is None:
                outcome = await self._handle(msg)
            else:
                outcome = await self._handle_traced(tracing.tracer, msg)
        except Exception:
            log.exception("processing %s failed", msg.subject)
            with contextlib.suppress(Exception):
                await msg.nak(delay=self.policy.delay(1))
        finally:
            self.processed += 1
            self.metrics.processing.labels(outcome=outcome).observe(time.monotonic() - started)

    async def _keep_alive(self) -> None:
        """Mark messages held for a third of ``ack_wait`` as in progress, so they are not redelivered."""
        every = self.ack_wait / 3
        while True:
            await asyncio.sleep(every / 2)
            now = time.monotonic()
            for entry in list(self._held.values()):
                if now - entry[1] >= every:
                    entry[1] = now
                    with contextlib.suppress(Exception):
                        await entry[0].in_progress()

    # -- one notification ------------------------------------------------------------------------------
    async def _handle_traced(self, tracer: Tracer, msg: Msg) -> str:
        """:meth:`_handle` in a span that continues the trace in the notification's headers (if any); the
        delivery publish carries its context on to the gateways."""
        attributes = {
            "messaging.system": "nats",
            "messaging.operation.type": "process",
            "messaging.destination.name": msg.subject,
        }
        parent = tracing.extract(msg.headers)
        with tracer.start_as_current_span(
            "prism.notify", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        ) as span:
            outcome = await self._handle(msg)
            span.set_attribute("prism.outcome", outcome)
            return outcome

    async def _handle(self, msg: Msg) -> str:
        meta = msg.metadata
        attempt = meta.num_delivered
        parsed = core.parse(msg.subject, msg.data, meta.timestamp.timestamp(), self.subjects)
        kind = parsed.kind if isinstance(parsed, core.Malformed) else parsed.target.kind.value
        if attempt == 1:
            self.metrics.received.labels(kind=kind).inc()
        else:
            self.metrics.redelivered.inc()
        if isinstance(parsed, core.Malformed):
            return await self._dead_letter(msg, core.DeadLetter(parsed.problem, parsed.reason))
        if (too_many := self.policy.on_arrival(attempt)) is not None:
            return await self._dead_letter(msg, too_many)
        if core.is_expired(parsed.expires_at, self.clock()):
            await msg.ack()
            self.metrics.expired.labels(where="stream").inc()
            return "expired"
        frame = parsed.frame()
        result = await self.receipts.deliver(
            parsed.target.delivery_subject(self.subjects), frame, self.receipt_timeout
        )
        step, problem = core.after_delivery(parsed.target.kind, result)
        if step is core.Step.DELIVERED:
            await msg.ack()
            self.metrics.delivered.labels(kind=kind).inc()
            return "delivered"
        if step is core.Step.NO_RECIPIENTS:
            await msg.ack()
            self.metrics.no_recipients.labels(kind=kind).inc()
            return "no_recipients"
        if step is core.Step.STORE:
            try:
                await self.inbox.store(parsed, frame)
            except _NATS_FAILURES as exc:
                self.on_jetstream_error()
                failed = core.DeliveryResult(core.Outcome.ERROR, error=f"storing in the inbox: {exc!r}")
                return await self._fail(msg, core.Problem.NATS_ERROR, failed, attempt)
            await msg.ack()
            return "stored"
        assert problem is not None
        return await self._fail(msg, problem, result, attempt)

    async def _fail(self, msg: Msg, problem: core.Problem, result: core.DeliveryResult, attempt: int) -> str:
        detail = core.failure_detail(problem, result, self.receipt_timeout)
        decision = self.policy.on_failure(problem, detail, attempt)
        if isinstance(decision, core.DeadLetter):
            return await self._dead_letter(msg, decision)
        log.info("%s try %d failed (%s); again in %.1fs", msg.subject, attempt, detail, decision.delay)
        await msg.nak(delay=decision.delay)
        self.metrics.retries.labels(reason=problem.value).inc()
        return "retry"

    async def _dead_letter(self, msg: Msg, dead: core.DeadLetter) -> str:
        meta = msg.metadata
        headers = {k: v for k, v in (msg.headers or {}).items() if not k.startswith("Nats-")}
        headers |= core.dead_letter_headers(
            dead.problem, dead.reason, msg.subject, meta.num_delivered, meta.sequence.stream, self.stream
        )
        try:
            await self.js.publish(
                self.subjects.notify_dead(msg.subject), msg.data, headers=headers, stream=self.dead_stream
            )
        except _NATS_FAILURES as exc:
            self.on_jetstream_error()
            log.warning("dead-lettering %s failed (%s); trying again later", msg.subject, exc)
            await msg.nak(delay=self.policy.delay(meta.num_delivered))
            return "retry"
        await msg.term()
        self.metrics.dead_lettered.labels(reason=dead.problem.value).inc()
        log.warning("dead-lettered %s: %s", msg.subject, dead.reason)
        return "dead_lettered"
