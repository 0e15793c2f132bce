"""The history streams over nats-py's public API: create or update them, read a channel's messages after
a position (batched direct gets), read the last message of many channels at once (``multi_last``), and
learn the stream's state (epoch, first and last sequence).

Direct gets may be answered by any replica, each from a consistent state of its own, so one read is
always a consistent snapshot; what a lagging replica does not have yet arrives live or is caught by the
next check (gateway/recovery.py). The stream's state comes from ``STREAM.INFO``, which only the leader
answers. Many recoveries at once share one such request (:class:`_Probe`), so a mass reconnect costs a
request per round trip, not one per client.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.js.api import DiscardPolicy, RePublish, RetentionPolicy, StorageType, StreamConfig, StreamInfo

from gateway.core.history_layout import StreamSpec
from gateway.core.hub import Scope
from gateway.core.recovery import StreamState, epoch_of
from gateway.io.bus import Bus, BusUnavailable, Headers, SubscriptionHandle
from shared.errors import ConfigError
from shared.startup import StartupSteps

log = logging.getLogger("prism.history")

READ_PAGE_BYTES = 4 << 20  # one direct-get batch carries at most this much; a longer read takes pages
MULTI_LAST_SUBJECTS = 1000  # the server answers 413 to a multi_last over more than 1024 subjects
_STATUS_EOB = "204"
_STATUS_NOT_FOUND = "404"
_UNIX = datetime(1970, 1, 1, tzinfo=UTC)
_STREAM_NAME_IN_USE = 10058  # JetStream's err_code when another node created the stream meanwhile


class HistoryUnavailable(Exception):
    """The history could not be read or its state learned (NATS down, JetStream not answering)."""


@dataclass(frozen=True, slots=True)
class HistoryMessage:
    seq: int
    payload: bytes
    headers: dict[str, str] | None


def stream_config(spec: StreamSpec) -> StreamConfig:
    source, destination = spec.republish
    return StreamConfig(
        name=spec.name,
        description="Prism message history for recovery (docs/protocol.md, 'Recovery')",
        subjects=list(spec.subjects),
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        max_msgs_per_subject=spec.max_msgs_per_subject,
        max_age=spec.max_age,
        max_bytes=spec.max_bytes,
        storage=StorageType.MEMORY if spec.storage == "memory" else StorageType.FILE,
        num_replicas=spec.replicas,
        allow_direct=True,
        republish=RePublish(src=source, dest=destination),
        # Oldest-first removal is what lets a node tell whether history still covers a gap
        # (gateway/core/recovery.history_covers): no deleting or purging single messages or subjects.
        deny_delete=True,
        deny_purge=True,
    )


def _differs(have: StreamConfig, want: StreamConfig) -> list[str]:
    """The settings Prism manages that ``have`` does not match."""
    wrong = []
    if set(have.subjects or ()) != set(want.subjects or ()):
        wrong.append("subjects")
    for name in ("max_msgs_per_subject", "max_bytes", "num_replicas", "allow_direct", "deny_delete"):
        if getattr(have, name) != getattr(want, name):
            wrong.append(name)
    if abs((have.max_age or 0) - (want.max_age or 0)) > 0.001:
        wrong.append("max_age")
    if have.deny_purge != want.deny_purge:
        wrong.append("deny_purge")
    republish = have.republish
    assert want.republish is not None
    if republish is None or (republish.src, republish.dest) != (want.republish.src, want.republish.dest):
        wrong.append("republish")
    return wrong


def state_of(info: StreamInfo) -> StreamState:
    created = info.created
    if created is None:
        raise HistoryUnavailable(f"stream {info.config.name} reports no creation time (nats-server too old)")
    micros = (created - _UNIX) // timedelta(microseconds=1)
    return StreamState(epoch_of(micros), info.state.first_seq, info.state.last_seq)


class _Probe:
    """Single-flight ``STREAM.INFO`` requests that many callers share: :meth:`after` answers with a
    request *sent* at or after a given time (a recovery that has just read the history needs the state
    from after its read), so callers that arrive while one is in flight wait for the next one."""

    def __init__(self, fetch: Callable[[], Awaitable[StreamState]]) -> None:
        self._fetch = fetch
        self._inflight: tuple[asyncio.Future[StreamState], float] | None = None
        self.last: StreamState | None = None
        self._last_sent = float("-inf")

    def _start(self) -> asyncio.Future[StreamState]:
        loop = asyncio.get_running_loop()
        sent = loop.time()
        future = asyncio.ensure_future(self._run(sent))
        self._inflight = (future, sent)
        return future

    async def _run(self, sent: float) -> StreamState:
        try:
            state = await self._fetch()
        finally:
            self._inflight = None
        if sent >= self._last_sent:
            self.last, self._last_sent = state, sent
        return state

    async def after(self, moment: float) -> StreamState:
        while True:
            if self._inflight is not None:
                future, sent = self._inflight
                if sent >= moment:
                    return await asyncio.shield(future)
                await asyncio.wait({future})  # sent too early for this caller: the next one
                continue
            if self.last is not None and self._last_sent >= moment:
                return self.last
            return await asyncio.shield(self._start())


# One reply of a direct get: payload and headers (with ``Status`` for the end of a batch, or a 404).
_Reply = tuple[bytes, Headers | None]


class HistoryStore:
    """The history streams of the scopes in ``specs``. Direct gets go through the ``bus`` (the data
    plane): sent on the connection that carries the channels' subscriptions, each after the SUB that
    precedes it (so nothing published in between is missed), and answered on its fast path. ``nc``
    (nats-py) creates and inspects the streams."""

    def __init__(
        self, nc: NatsClient, specs: dict[Scope, StreamSpec], bus: Bus, timeout: float = 5.0
    ) -> None:
        self.nc = nc
        self.bus = bus
        self.js = nc.jetstream(timeout=timeout)
        self.specs = specs
        self.timeout = timeout
        self._probes = {scope: _Probe(self._state_fn(scope)) for scope in specs}
        self._inbox = ""
        self._sub: SubscriptionHandle | None = None
        self._tokens = itertools.count()
        self._waiting: dict[str, asyncio.Queue[_Reply]] = {}

    def _state_fn(self, scope: Scope) -> Callable[[], Awaitable[StreamState]]:
        return lambda: self._state(scope)

    async def start(self, steps: StartupSteps) -> None:
        """Create or update every stream, through ``steps``: retried while JetStream cannot answer yet (a
        cluster electing its leaders); a setting the server refuses is a :class:`ConfigError`."""
        self._inbox = self.bus.new_inbox()
        self._sub = await self.bus.subscribe(f"{self._inbox}.*", self._on_reply)
        for scope, spec in self.specs.items():
            await steps.run(f"JetStream to serve the history stream {spec.name}", partial(self.ensure, scope))
            await self.write_anchor(scope)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()
        self._sub = None

    async def ensure(self, scope: Scope) -> None:
        spec = self.specs[scope]
        want = stream_config(spec)
        try:
            info = await self.js.stream_info(spec.name)
        except nats.js.errors.NotFoundError:
            try:
                await self.js.add_stream(want)
                log.info("created history stream %s for %s", spec.name, ", ".join(spec.subjects))
                return
            except nats.js.errors.ServiceUnavailableError:
                raise
            except nats.js.errors.APIError as exc:
                if exc.err_code != _STREAM_NAME_IN_USE:
                    problem = f"cannot create history stream {spec.name}: {exc.description}"
                    raise ConfigError(problem) from None
                info = await self.js.stream_info(spec.name)  # another node made it first
        if (info.config.storage or StorageType.FILE) != want.storage:
            raise ConfigError(
                f"history stream {spec.name} exists with {info.config.storage} storage but "
                f"recover_storage is {spec.storage}: delete the stream or change the setting"
            )
        wrong = _differs(info.config, want)
        if wrong:
            log.info("updating history stream %s: %s", spec.name, ", ".join(wrong))
            try:
                await self.js.update_stream(want)
            except nats.js.errors.ServiceUnavailableError:
                raise
            except nats.js.errors.APIError as exc:
                raise ConfigError(f"cannot update history stream {spec.name}: {exc.description}") from None

    async def _state(self, scope: Scope) -> StreamState:
        name = self.specs[scope].name
        try:
            info = await self.js.stream_info(name)
        except nats.js.errors.NotFoundError:
            log.warning("history stream %s is gone; creating it again (a new epoch)", name)
            await self.ensure(scope)
            info = await self.js.stream_info(name)
        except (nats.errors.Error, TimeoutError) as exc:
            raise HistoryUnavailable(f"{name}: {exc!r}") from None
        return state_of(info)

    def known(self, scope: Scope) -> StreamState | None:
        """The state the last finished request saw (None before the first)."""
        return self._probes[scope].last

    async def state_after(self, scope: Scope, moment: float) -> StreamState:
        """The state from a request sent at or after ``moment`` (loop time)."""
        return await self._probes[scope].after(moment)

    async def write_anchor(self, scope: Scope) -> None:
        """Store an empty message on the stream's anchor subject (see history_layout.ANCHOR_TOKEN)."""
        try:
            await self.js.publish(self.specs[scope].anchor, b"")
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("could not write the anchor of %s: %r", self.specs[scope].name, exc)

    # -- reads -------------------------------------------------------------------------------------------
    def _on_reply(self, subject: str, reply: str, data: bytes, headers: Headers | None) -> None:
        queue = self._waiting.get(subject)
        if queue is not None:
            queue.put_nowait((data, headers))

    async def _batch(self, scope: Scope, body: dict[str, Any]) -> tuple[list[_Reply], dict[str, str]]:
        """One direct-get request: the messages, and the headers of the end-of-batch (empty for 404)."""
        reply = f"{self._inbox}.{next(self._tokens)}"
        queue: asyncio.Queue[_Reply] = asyncio.Queue()
        self._waiting[reply] = queue
        messages: list[_Reply] = []
        stream = self.specs[scope].name
        try:
            await self.bus.publish_encoded(f"$JS.API.DIRECT.GET.{stream}", reply, b"", orjson.dumps(body))
            async with asyncio.timeout(self.timeout):
                while True:
                    data, parsed = await queue.get()
                    headers = parsed or {}
                    status = headers.get("Status")
                    if status is None:
                        messages.append((data, headers))
                    elif status == _STATUS_EOB:
                        return messages, headers
                    elif status == _STATUS_NOT_FOUND:
                        return messages, {}
                    else:
                        raise HistoryUnavailable(f"{stream}: direct get answered {status} {headers}")
        except (nats.errors.Error, BusUnavailable, TimeoutError) as exc:
            raise HistoryUnavailable(f"{stream}: {exc!r}") from None
        finally:
            del self._waiting[reply]

    async def read(self, scope: Scope, subject: str, after: int, limit: int) -> list[HistoryMessage]:
        """The stored messages of ``subject`` with a sequence above ``after``, oldest first, at most
        ``limit`` of them."""
        found: list[HistoryMessage] = []
        start = after + 1
        while len(found) < limit:
            body = {
                "seq": start,
                "next_by_subj": subject,
                "batch": limit - len(found),
                "max_bytes": READ_PAGE_BYTES,
            }
            messages, end = await self._batch(scope, body)
            for data, headers in messages:
                assert headers is not None
                found.append(HistoryMessage(int(headers["Nats-Sequence"]), data, _own_headers(headers)))
            if not messages or int(end.get("Nats-Num-Pending", "0")) == 0:
                break
            start = found[-1].seq + 1
        return found[:limit]

    async def lasts(self, scope: Scope, subjects: list[str]) -> dict[str, tuple[int, int]]:
        """For each subject: (the sequence of its last stored message or 0, the stream sequence up to
        which that answer is exact). Each group of subjects is read with the anchor, from one replica."""
        answers: dict[str, tuple[int, int]] = {}
        anchor = self.specs[scope].anchor
        for first in range(0, len(subjects), MULTI_LAST_SUBJECTS):
            chunk = subjects[first : first + MULTI_LAST_SUBJECTS]
            lasts: dict[str, int] = {}
            body: dict[str, Any] = {"multi_last": [*chunk, anchor]}
            while True:
                messages, end = await self._batch(scope, body)
                for _, headers in messages:
                    assert headers is not None
                    lasts[headers["Nats-Subject"]] = int(headers["Nats-Sequence"])
                if "Nats-UpTo-Sequence" not in end:
                    raise HistoryUnavailable(f"{self.specs[scope].name}: no anchor in the history")
                upto = int(end["Nats-UpTo-Sequence"])
                if int(end.get("Nats-Num-Pending", "0")) == 0 or not messages:
                    break
                body = {**body, "seq": int(end["Nats-Last-Sequence"]) + 1, "up_to_seq": upto}
            for subject in chunk:
                answers[subject] = (lasts.get(subject, 0), upto)
        return answers


_REPLY_HEADERS = frozenset(
    {
        "Nats-Stream",
        "Nats-Subject",
        "Nats-Sequence",
        "Nats-Time-Stamp",
        "Nats-Num-Pending",
        "Nats-Last-Sequence",
    }
)


def _own_headers(headers: dict[str, str]) -> dict[str, str] | None:
    """The headers the backend published with, without the ones the direct get added."""
    own = {k: v for k, v in headers.items() if k not in _REPLY_HEADERS}
    return own or None
