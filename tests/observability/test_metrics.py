"""The metrics that need more than a counter: the Prism-Sent-At stamp, presence timings, queue depth."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from types import SimpleNamespace
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from gateway.core.presence_writes import ConnRecord
from gateway.io.outbox import LocalConn
from gateway.io.presence_writer import PresenceUnavailable
from gateway.metrics import (
    CLIENT_ERROR_CODES,
    DELIVERY_OUTCOMES,
    DISCONNECT_CODES,
    FRAME_KINDS,
    NAMES,
    PRESENCE_ERROR_OPS,
    PRESENCE_OPS,
    REJECTION_REASONS,
    GatewayMetrics,
    TimedPresence,
    watch_outbound,
)
from shared import headers as h
from shared.backend import PrismBackend
from tests.conftest import NodeFactory
from tests.helpers import scrape


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_backend_stamps_sent_at_only_when_asked() -> None:
    nc: Any = object()
    assert PrismBackend(nc)._headers(binary=False) is None
    before = time.time()
    stamped = PrismBackend(nc, sent_at=True)._headers(binary=True)
    assert stamped is not None
    assert stamped[h.FRAME] == h.FRAME_BINARY
    assert before <= float(stamped[h.SENT_AT]) <= time.time()


class FailingOps:
    """Presence operations that succeed at once, but for ``unregister``, which fails."""

    def _done(self, error: Exception | None = None) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)
        return future

    def register(self, record: ConnRecord) -> asyncio.Future[None]:
        return self._done()

    def unregister(self, record: ConnRecord, rooms: Collection[str]) -> asyncio.Future[None]:
        return self._done(PresenceUnavailable("kv timeout"))

    def joined(self, record: ConnRecord, room: str) -> asyncio.Future[None]:
        return self._done()

    def left(self, record: ConnRecord, room: str) -> asyncio.Future[None]:
        return self._done()


async def test_presence_operations_are_timed_failed_ones_too() -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry, "n1")
    ops = TimedPresence(FailingOps(), metrics, "n1")
    record = ConnRecord("n1.a", "n1", "alice", "/ws", "127.0.0.1:1", "2026-01-01T00:00:00Z")
    await ops.register(record)
    await ops.joined(record, "lobby")
    with pytest.raises(PresenceUnavailable):
        await ops.unregister(record, set())
    await asyncio.sleep(0)  # futures done before they were awaited run their callbacks on the next pass
    count = NAMES["presence_op_latency"] + "_count"
    assert value(registry, count, node="n1", op="register") == 1
    assert value(registry, count, node="n1", op="join") == 1
    assert value(registry, count, node="n1", op="unregister") == 1
    assert value(registry, count, node="n1", op="leave") == 0
    # Counters a dashboard or alert reads exist at 0 before anything happens.
    assert value(registry, NAMES["slow_consumers"], node="n1") == 0
    assert value(registry, NAMES["presence_errors"], node="n1", op="sweep") == 0


def test_outbound_backlog_is_read_at_scrape_time() -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry, "n1")
    conns: list[Any] = []
    watch_outbound(metrics, "n1", lambda: cast(list[LocalConn], conns))
    assert value(registry, NAMES["outbound_pending_bytes"], node="n1") == 0
    for queued, unsent in ((100, 1000), (5, 0)):
        ws = SimpleNamespace(unsent=lambda unsent=unsent: unsent)
        conns.append(SimpleNamespace(pending_bytes=queued, ws=ws))
    assert value(registry, NAMES["outbound_pending_bytes"], node="n1") == 1105
    assert value(registry, NAMES["outbound_max_pending_bytes"], node="n1") == 1100


async def test_a_fresh_node_serves_every_known_labelled_series_at_0(make_node: NodeFactory) -> None:
    """Before any event: dashboards show 0, not "No data", and rate() has a first sample."""
    node = await make_node(routes=("/ws", "/admin"))
    series = await asyncio.to_thread(scrape, f"http://127.0.0.1:{node.port}/metrics")
    expected: list[tuple[str, dict[str, str]]] = []
    for target, outcomes in DELIVERY_OUTCOMES.items():
        expected += [(NAMES["deliveries"], {"target": target, "outcome": o}) for o in outcomes]
        expected.append((NAMES["delivered_messages"], {"target": target}))
        expected.append((NAMES["delivery_latency"] + "_count", {"target": target}))
    expected += [(NAMES["disconnects"], {"code": code}) for code in DISCONNECT_CODES]
    expected += [(NAMES["client_errors"], {"code": code}) for code in CLIENT_ERROR_CODES]
    expected += [(NAMES["rejections"], {"reason": reason}) for reason in REJECTION_REASONS]
    expected += [(NAMES["frames_in"], {"kind": kind}) for kind in FRAME_KINDS]
    expected += [(NAMES[m], {"route": r}) for m in ("connects", "connections") for r in ("/ws", "/admin")]
    expected += [(NAMES["presence_errors"], {"op": op}) for op in PRESENCE_ERROR_OPS]
    expected += [(NAMES["presence_op_latency"] + "_count", {"op": op}) for op in PRESENCE_OPS]
    expected += [(NAMES["presence_repairs"], {"action": a}) for a in ("rewrite", "purge")]
    expected += [(NAMES[m], {}) for m in ("slow_consumers", "nats_reconnects", "frames_out", "bytes_out")]
    missing = []
    for name, labels in expected:
        key = (name, frozenset({"node": node.node_id, **labels}.items()))
        if series.get(key) != 0:
            missing.append(f"{name}{labels}: {series.get(key)}")
    assert not missing, missing
    # The examples, spelled out (the sets above come from the code under test).
    for name, labels in [
        ("prism_deliveries_total", {"target": "conn", "outcome": "gone"}),
        ("prism_deliveries_total", {"target": "room", "outcome": "no_recipient"}),
        ("prism_disconnects_total", {"code": "1006"}),
        ("prism_disconnects_total", {"code": "4001"}),
        ("prism_rejections_total", {"reason": "origin"}),
        ("prism_rejections_total", {"reason": "token_expired"}),
        ("prism_client_errors_total", {"code": "no_responders"}),
    ]:
        assert series[(name, frozenset({"node": node.node_id, **labels}.items()))] == 0
