"""Benchmark scenarios. Each connects a fleet to a target, then measures two phases:

- ``peak``: publish as fast as delivery keeps up (at most ``window`` messages ahead of what clients
  have received), for deliveries/s and server CPU seconds;
- ``paced``: publish at half the peak rate, for latency percentiles (the p99-at-half-peak figure);
- ``capacity`` (with ``Settings.capacity``): paced steps searching for the highest rate whose p99 stays
  under a bound with no drops (:mod:`loadtest.capacity`).

Every loop is bounded in count and time; a delivery that does not arrive in time counts as a drop.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from loadtest import noise, payload, server_latency
from loadtest.capacity import CapacityOptions, Trial, search
from loadtest.fleet import SAMPLE_EVERY, Client, Fleet
from loadtest.procstat import cpu_seconds, machine_cores, rss_bytes
from loadtest.stats import Latency, summarize
from loadtest.targets.base import ConnSend, PreparingPublisher, Publisher, StampingPublisher, Target
from shared import gc_policy

PEAK_SECONDS = 15.0
_TICKS = os.sysconf("SC_CLK_TCK")
Publish = Callable[[int], Awaitable[None]]
Progress = Callable[[str, float], None]


@dataclass
class Phase:
    name: str
    messages: int
    expected: int
    delivered: int
    seconds: float
    rate: float
    cpu_seconds: float
    latency: Latency | None
    timeline: list[float] = field(default_factory=list)
    generator_cpu_seconds: float = 0.0  # the load generator's own CPU
    helper_cpu_seconds: float = 0.0  # NATS/Redis beside the generator: with the generator's, the client core
    offered_rate: float = 0.0  # deliveries/s a paced phase asked for (0: the peak phase, as fast as it goes)
    steal_share: float = 0.0  # of the machine's CPU time, taken by the hypervisor during the phase

    @property
    def drops(self) -> int:
        return max(0, self.expected - self.delivered)

    def trial(self, errors: int = 0) -> Trial:
        """This paced phase as a step of the capacity search."""
        seconds = self.seconds or 1.0
        return Trial(
            self.offered_rate,
            self.latency.p99 if self.latency else None,
            self.drops,
            errors,
            self.cpu_seconds / seconds,
            (self.generator_cpu_seconds + self.helper_cpu_seconds) / seconds,
            self.steal_share,
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["latency"] = self.latency.as_dict() if self.latency else None
        data["drops"] = self.drops
        return data


@dataclass
class Result:
    scenario: str
    target: str
    params: dict[str, Any]
    phases: list[Phase] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    errors: int = 0

    def phase(self, name: str) -> Phase | None:
        return next((p for p in self.phases if p.name == name), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "target": self.target,
            "params": self.params,
            "figures": self.figures,
            "errors": self.errors,
            "phases": [p.as_dict() for p in self.phases],
        }


@dataclass(frozen=True)
class Settings:
    connections: int = 1000
    messages: int = 20_000
    room_messages: int = 300
    room_members: int = 0  # 0: ``connections``
    window: int = 2000
    paced_seconds: float = 4.0
    paced_rate: float = 0.0  # deliveries/s in the paced phase; 0: half of the peak just measured
    size: int = 100
    users: int = 250
    idle_connections: int = 5000
    connect_connections: int = 2000
    timeout: float = 60.0
    capacity: CapacityOptions | None = None  # search for the rate at p99 < a bound after the paced phase


class Measured(Protocol):
    """What a phase's CPU is read from: a :class:`Target`, or nats-py alone."""

    @property
    def server_pid(self) -> int: ...

    @property
    def helper_pids(self) -> list[int]: ...


def _settle_generator() -> None:
    """Freeze the connected fleet out of the generator's garbage collections, as the gateway does with
    its own start-up (``shared.gc_policy``): with Python's defaults the generator, holding 1,000 clients,
    paused 2-9 ms in 24 of 232 collections and 64 ms in one during a 1:1 capacity search, and every
    message in flight then counted that pause as latency."""
    gc_policy.settle()


def _helpers_cpu(target: Measured) -> float:
    return sum(cpu_seconds(pid) for pid in target.helper_pids)


class _Meter:
    """CPU of the server, the generator and the target's helpers from now until :meth:`phase`."""

    def __init__(self, target: Measured) -> None:
        self.target = target
        self.server = cpu_seconds(target.server_pid)
        self.generator = cpu_seconds(os.getpid())
        self.helpers = _helpers_cpu(target)
        self.steal = noise.steal_ticks()

    def phase(self, name: str, messages: int, expected: int, got: int, seconds: float, fleet: Fleet) -> Phase:
        phase = self.measured(name, messages, expected, got, seconds, summarize(fleet.latencies))
        phase.timeline = fleet.throughput()
        return phase

    def measured(
        self, name: str, messages: int, expected: int, got: int, seconds: float, latency: Latency | None
    ) -> Phase:
        return Phase(
            name,
            messages,
            expected,
            got,
            seconds,
            got / seconds,
            cpu_seconds(self.target.server_pid) - self.server,
            latency,
            generator_cpu_seconds=cpu_seconds(os.getpid()) - self.generator,
            helper_cpu_seconds=_helpers_cpu(self.target) - self.helpers,
            steal_share=(noise.steal_ticks() - self.steal) / _TICKS / (seconds * len(machine_cores())),
        )


def _noop(stage: str, fraction: float) -> None:
    return None


async def _peak(
    fleet: Fleet,
    target: Target,
    publish: Publish,
    fanout: int,
    count: int,
    window: int,
    timeout: float,
    received: Callable[[], int],
    progress: Progress,
) -> Phase:
    fleet.reset()
    meter = _Meter(target)
    start = time.perf_counter()
    stop_publishing = start + PEAK_SECONDS  # bounded in time too: a slow target sends fewer messages
    for seq in range(count):
        await publish(seq)
        if seq % 32 == 31:
            behind = (seq + 1 - window) * fanout
            if behind > received():
                await fleet.wait_until(received, behind, timeout)
            progress("peak", (seq + 1) / count)
            if time.perf_counter() > stop_publishing:
                count = seq + 1
                break
    await fleet.wait_until(received, count * fanout, timeout)
    return meter.phase("peak", count, count * fanout, received(), time.perf_counter() - start, fleet)


async def _publish_paced(
    publish: Publish, per_second: float, seconds: float, stage: str, progress: Progress
) -> int:
    """Call ``publish(seq)`` ``per_second`` times a second for ``seconds``, open loop, in bursts every
    2 ms; return how many were published."""
    tick = 0.002
    loop = asyncio.get_running_loop()
    start = loop.time()
    next_tick = start
    owed = 0.0
    seq = 0
    while (now := loop.time()) - start < seconds:
        owed += per_second * (now - next_tick + tick)
        burst = int(owed)
        owed -= burst
        for _ in range(burst):
            await publish(seq)
            seq += 1
        next_tick = now + tick
        progress(stage, (now - start) / seconds)
        await asyncio.sleep(max(0.0, next_tick - loop.time()))
    return seq


async def _paced(
    fleet: Fleet,
    target: Target,
    publish: Publish,
    fanout: int,
    rate: float,
    seconds: float,
    timeout: float,
    received: Callable[[], int],
    progress: Progress,
    name: str = "paced",
) -> Phase:
    """Publish ``rate`` deliveries/s (``rate / fanout`` messages/s) for ``seconds``, open loop."""
    fleet.reset()
    meter = _Meter(target)
    start = asyncio.get_running_loop().time()
    seq = await _publish_paced(publish, rate / fanout, seconds, name, progress)
    await fleet.wait_until(received, seq * fanout, timeout)
    phase = meter.phase(name, seq, seq * fanout, received(), asyncio.get_running_loop().time() - start, fleet)
    phase.offered_rate = rate
    return phase


async def _capacity(
    result: Result,
    fleet: Fleet,
    target: Target,
    publish: Publish,
    fanout: int,
    peak: float,
    s: Settings,
    received: Callable[[], int],
    progress: Progress,
) -> None:
    """The capacity search (:mod:`loadtest.capacity`), each step a paced phase named ``capacity``."""
    assert s.capacity is not None
    options = s.capacity

    async def step(rate: float) -> Trial:
        phase = await _paced(
            fleet,
            target,
            publish,
            fanout,
            rate,
            options.step_seconds,
            s.timeout,
            received,
            progress,
            "capacity",
        )
        result.phases.append(phase)
        return phase.trial(fleet.errors)  # _paced reset the fleet's counters: this step's errors

    found = await search(step, peak, options, fanout, SAMPLE_EVERY)
    result.figures.update(found.figures())


async def _two_phases(
    result: Result,
    fleet: Fleet,
    target: Target,
    publish: Publish,
    fanout: int,
    count: int,
    window: int,
    s: Settings,
    progress: Progress,
    received: Callable[[], int] | None = None,
    server_timed: bool = False,
) -> None:
    """Peak, then paced. ``server_timed``: the paced phase's sampled messages carry their publish time,
    and the server's own latency histogram is read around it."""
    _settle_generator()
    counter = received or (lambda: fleet.received)
    peak = await _peak(fleet, target, publish, fanout, count, window, s.timeout, counter, progress)
    result.phases.append(peak)
    rate = s.paced_rate or peak.rate / 2
    before = await target.latency_buckets(result.scenario) if server_timed else None
    fleet.stamping = before is not None
    paced = await _paced(fleet, target, publish, fanout, rate, s.paced_seconds, s.timeout, counter, progress)
    fleet.stamping = False
    result.phases.append(paced)
    after = await target.latency_buckets(result.scenario) if before is not None else None
    if before is not None and after is not None:
        result.figures.update(_server_latency(server_latency.delta(before, after)))
    errors = fleet.errors  # fleet.reset() in each capacity step zeroes it
    if s.capacity is not None:
        await _capacity(result, fleet, target, publish, fanout, peak.rate, s, counter, progress)
    p99 = round(paced.latency.p99, 3) if paced.latency else -1
    result.figures.update(
        {
            "deliveries_per_s": round(peak.rate),
            "server_cpu_s": round(peak.cpu_seconds, 3),
            "deliveries_per_cpu_s": round(peak.delivered / peak.cpu_seconds) if peak.cpu_seconds else 0,
            # A fixed --paced-rate compares latency across runs; it is not the half-peak target's figure.
            "p99_ms_at_paced_rate" if s.paced_rate else "p99_ms_at_half_peak": p99,
            "drops": peak.drops + paced.drops,
        }
    )
    result.errors += errors


def _conn_sender(pub: Publisher, ids: list[str], size: int) -> ConnSend:
    """``send(index, data)``: ``pub.conn(ids[index], data)``, prepared once if the publisher can."""
    if isinstance(pub, PreparingPublisher):
        return pub.conn_sender(ids, size)

    def send(index: int, data: bytes) -> Awaitable[None]:
        return pub.conn(ids[index], data)

    return send


def _server_latency(buckets: server_latency.Buckets) -> dict[str, float]:
    """What the server itself measured in the paced phase: publish to socket write, sampled messages."""
    p99 = server_latency.quantile(buckets, 0.99)
    within = server_latency.share_within(buckets, 0.005)
    if p99 is None or within is None:
        return {}
    return {
        "server_timed": round(buckets.get(math.inf, 0.0)),
        "server_p99_ms": round(p99 * 1000, 2),
        "server_within_5ms": round(within, 4),
    }


async def _connect(
    fleet: Fleet, target: Target, count: int, users: Callable[[int], str | None]
) -> list[Client]:
    return await fleet.connect_many([target.url(users(i)) for i in range(count)])


# -- scenarios ----------------------------------------------------------------------------------------
async def conn(target: Target, pub: Publisher, s: Settings, progress: Progress = _noop) -> Result:
    """1:1 delivery: messages round-robin over ``connections`` connections, each to ``conn.<id>``."""
    result = Result(
        "conn", target.name, {"connections": s.connections, "messages": s.messages, "size": s.size}
    )
    fleet = Fleet(target.dialect)
    clients = await _connect(fleet, target, s.connections, lambda i: None)
    ids = [c.conn_id or "" for c in clients]
    timed = [c.sampled for c in clients]
    # A client that does not time its messages only counts them: it gets one prebuilt message, so the
    # generator's core spends its time receiving, not formatting (docs/benchmarks.md).
    untimed = payload.make(0, s.size)
    send = _conn_sender(pub, ids, len(untimed))
    # In the paced phase, messages to the clients that time theirs also carry their publish time for a
    # server that times deliveries itself, so both ends measure the same messages.
    stamp = pub.conn_stamped if isinstance(pub, StampingPublisher) else None

    async def publish(seq: int) -> None:
        index = seq % len(ids)
        if not timed[index]:
            await send(index, untimed)
        elif stamp is not None and fleet.stamping:
            await stamp(ids[index], payload.make(seq, s.size))
        else:
            await send(index, payload.make(seq, s.size))

    await _two_phases(
        result, fleet, target, publish, 1, s.messages, s.window, s, progress, server_timed=stamp is not None
    )
    await fleet.close_all()
    return result


async def room(target: Target, pub: Publisher, s: Settings, progress: Progress = _noop) -> Result:
    """Room fan-out: one publish reaches every one of ``room_members`` (default: ``connections``) members
    of one room."""
    members = s.room_members or s.connections
    result = Result("room", target.name, {"members": members, "messages": s.room_messages, "size": s.size})
    fleet = Fleet(target.dialect)
    clients = await _connect(fleet, target, members, lambda i: None)
    await fleet.join(clients, "bench")

    async def publish(seq: int) -> None:
        await pub.room("bench", payload.make(seq, s.size))

    window = max(2, s.window // members * 10)
    await _two_phases(result, fleet, target, publish, members, s.room_messages, window, s, progress)
    await fleet.close_all()
    return result


async def user(target: Target, pub: Publisher, s: Settings, progress: Progress = _noop) -> Result:
    """User fan-out: ``users`` users with connections/users devices each; publishes go to ``user.<id>``."""
    per_user = max(1, s.connections // s.users)
    result = Result(
        "user",
        target.name,
        {"users": s.users, "devices": per_user, "messages": s.messages // per_user, "size": s.size},
    )
    fleet = Fleet(target.dialect)
    await _connect(fleet, target, s.users * per_user, lambda i: f"u{i % s.users}")

    async def publish(seq: int) -> None:
        await pub.user(f"u{seq % s.users}", payload.make(seq, s.size))

    await _two_phases(
        result, fleet, target, publish, per_user, s.messages // per_user, s.window // per_user, s, progress
    )
    await fleet.close_all()
    return result


async def request(target: Target, pub: Publisher, s: Settings, progress: Progress = _noop) -> Result:
    """Client -> backend request/reply: each request carries its send time and comes back as a reply.

    At most 8 requests are in flight per connection, under the gateway's default limit of 16."""
    count = s.connections // 10 or 1
    result = Result("request", target.name, {"connections": count, "requests": s.messages // 2})
    await target.start_echo()
    fleet = Fleet(target.dialect)
    clients = await _connect(fleet, target, count, lambda i: None)

    async def publish(seq: int) -> None:
        client = clients[seq % len(clients)]
        client.send(fleet.dialect.request("bench.echo", b'{"t":%d}' % time.time_ns(), fleet.next_ref()))

    await _two_phases(
        result,
        fleet,
        target,
        publish,
        1,
        s.messages // 2,
        min(s.window, len(clients) * 8),
        s,
        progress,
        received=lambda: fleet.replies,
    )
    await fleet.close_all()
    return result


async def idle(target: Target, pub: Publisher, s: Settings, progress: Progress = _noop) -> Result:
    """Server memory per idle connection (each with a user, so hub, presence and subscriptions count)."""
    result = Result("idle", target.name, {"connections": s.idle_connections})
    fleet = Fleet(target.dialect)
    await _connect(fleet, target, 200, lambda i: f"warm{i}")  # warm the server's allocator first
    await fleet.close_all()
    before = rss_bytes(target.server_pid)
    fleet = Fleet(target.dialect)
    batch = 500
    for start in range(0, s.idle_connections, batch):
        await _connect_range(fleet, target, start, min(batch, s.idle_connections - start))
        progress("connect", (start + batch) / s.idle_connections)
    after = rss_bytes(target.server_pid)
    result.figures.update(
        {
            "rss_before_mb": round(before / 2**20, 1),
            "rss_after_mb": round(after / 2**20, 1),
            "rss_per_conn_kb": round((after - before) / s.idle_connections / 1024, 2),
        }
    )
    await fleet.close_all()
    return result


async def _connect_range(fleet: Fleet, target: Target, start: int, count: int) -> None:
    await fleet.connect_many([target.url(f"idle{start + i}") for i in range(count)])


async def connect(target: Target, pub: Publisher, s: Settings, progress: Progress = _noop) -> Result:
    """New connections per second until each has its welcome (Prism sends it after presence is written)."""
    result = Result("connect", target.name, {"connections": s.connect_connections, "concurrency": 200})
    fleet = Fleet(target.dialect)
    cpu0 = cpu_seconds(target.server_pid)
    start = time.perf_counter()
    await _connect(fleet, target, s.connect_connections, lambda i: f"c{i}")
    seconds = time.perf_counter() - start
    cpu = cpu_seconds(target.server_pid) - cpu0
    result.figures.update(
        {
            "connects_per_s": round(s.connect_connections / seconds),
            "server_cpu_s": round(cpu, 3),
            "seconds": round(seconds, 3),
        }
    )
    await fleet.close_all()
    return result


async def mixed(target: Target, pub: Publisher, s: Settings, progress: Progress = _noop) -> Result:
    """A bit of everything at once, paced: 10 rooms of 100, 1:1 messages and requests on the same node."""
    result = Result("mixed", target.name, {"rooms": 10, "members": 100, "seconds": s.paced_seconds})
    await target.start_echo()
    fleet = Fleet(target.dialect)
    clients = await _connect(fleet, target, 1000, lambda i: f"m{i % 250}")
    for r in range(10):
        await fleet.join(clients[r * 100 : (r + 1) * 100], f"mix{r}")
    ids = [c.conn_id or "" for c in clients]
    fleet.reset()
    meter = _Meter(target)
    loop = asyncio.get_running_loop()
    start = loop.time()
    published = requests = 0
    while loop.time() - start < s.paced_seconds:  # every 10 ms: 1 room message, 50 conn messages, 10 requests
        await pub.room(f"mix{published % 10}", payload.make(published, s.size))
        for i in range(50):
            await pub.conn(ids[(published * 50 + i) % len(ids)], payload.make(published, s.size))
        for i in range(10):
            clients[(requests + i) % len(clients)].send(
                fleet.dialect.request("bench.echo", b'{"t":%d}' % time.time_ns(), fleet.next_ref())
            )
        published += 1
        requests += 10
        progress("mixed", (loop.time() - start) / s.paced_seconds)
        await asyncio.sleep(0.01)
    expected = published * 150
    await fleet.wait_until(lambda: fleet.received, expected, s.timeout)
    await fleet.wait_until(lambda: fleet.replies, requests, s.timeout)
    got = fleet.received + fleet.replies
    phase = meter.phase("paced", published, expected + requests, got, loop.time() - start, fleet)
    result.phases.append(phase)
    result.figures.update(
        {
            "deliveries_per_s": round(phase.rate),
            "server_cpu_s": round(phase.cpu_seconds, 3),
            "p99_ms": round(phase.latency.p99, 3) if phase.latency else -1,
            "drops": phase.drops,
        }
    )
    result.errors = fleet.errors
    await fleet.close_all()
    return result


SCENARIOS: dict[str, Callable[[Target, Publisher, Settings, Progress], Awaitable[Result]]] = {
    "idle": idle,
    "connect": connect,
    "conn": conn,
    "room": room,
    "user": user,
    "request": request,
    "mixed": mixed,
}


async def nats_alone_conn(target: Any, s: Settings, progress: Progress = _noop) -> Result:
    """The conn scenario's publishes, received by nats-py alone (a callback that only counts; in the
    capacity search's steps it also times the messages that carry their publish time)."""
    from loadtest.rawnats import RawPublisher

    result = Result(
        "conn", target.name, {"connections": s.connections, "messages": s.messages, "size": s.size}
    )
    raw = await RawPublisher.connect(target.nats.url)
    await target.reset()
    _settle_generator()
    cpu0 = cpu_seconds(target.server_pid)
    start = time.perf_counter()
    window = s.window  # the same messages in flight as Prism gets
    # The same publishes as Prism's conn scenario: every SAMPLE_EVERY-th connection's message built fresh.
    untimed = payload.make(0, s.size)
    heads = raw.heads([f"conn.bench.c{i}" for i in range(s.connections)], len(untimed))

    async def publish(seq: int) -> None:
        index = seq % s.connections
        data = payload.make(seq, s.size) if index % SAMPLE_EVERY == 0 else untimed
        await raw.publish_head(heads[index], data)

    for seq in range(s.messages):
        await publish(seq)
        if seq % 32 == 31:
            if seq + 1 - window > target.received:
                await target.wait_until(seq + 1 - window, s.timeout)
            progress("peak", (seq + 1) / s.messages)
    raw.write()
    expected = s.messages // 1000 * 1000  # the receiver reports every 1,000 messages
    await target.wait_until(expected, s.timeout)
    seconds = time.perf_counter() - start
    cpu = cpu_seconds(target.server_pid) - cpu0
    peak = Phase("peak", s.messages, expected, target.received, seconds, target.received / seconds, cpu, None)
    result.phases.append(peak)
    result.figures.update({"deliveries_per_s": round(peak.rate), "server_cpu_s": round(cpu, 3)})
    if s.capacity is not None:
        options = s.capacity

        async def step(rate: float) -> Trial:
            phase = await _nats_alone_paced(target, publish, rate, options.step_seconds, s, progress)
            result.phases.append(phase)
            return phase.trial()

        found = await search(step, peak.rate, options, 1, SAMPLE_EVERY)
        result.figures.update(found.figures())
    await raw.close()
    return result


async def _nats_alone_paced(
    target: Any, publish: Publish, rate: float, seconds: float, s: Settings, progress: Progress
) -> Phase:
    """One capacity step for nats-py alone: ``rate`` messages/s, open loop, timed by the receiver."""
    await target.reset(timing=True)
    meter = _Meter(target)
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = await _publish_paced(publish, rate, seconds, "capacity", progress)
    await target.expect(sent, s.timeout)
    stats = await target.stats()
    phase = meter.measured("capacity", sent, sent, stats.count, loop.time() - start, stats.latency)
    phase.offered_rate = rate
    return phase
