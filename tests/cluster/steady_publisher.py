"""A backend in a process of its own, so the test's 300 clients do not slow it down: JetStream publishes
at a steady rate, round-robin over rooms and users, up to 64 awaiting their acknowledgement, until a line
arrives on stdin. Then it prints ``{"sent": {channel: count}, "rate": per_second}`` as JSON: every count
was acknowledged, that is stored.

    python -m tests.cluster.steady_publisher NATS_URL RATE ROOMS USERS
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from collections import defaultdict
from typing import Any

import nats

IN_FLIGHT = 64


async def publish(url: str, rate: float, rooms: int, users: int) -> dict[str, Any]:
    nc = await nats.connect(url)
    js = nc.jetstream()
    loop = asyncio.get_running_loop()
    stop = asyncio.ensure_future(loop.run_in_executor(None, sys.stdin.readline))
    channels = [
        f"room.room{i % rooms}" if i % 2 == 0 else f"user.user{i % users}" for i in range(2 * rooms * users)
    ]
    sent: dict[str, int] = defaultdict(int)
    acks: set[asyncio.Future[Any]] = set()
    started = loop.time()
    count = 0
    for channel in itertools.cycle(channels):
        if stop.done():
            break
        if len(acks) >= IN_FLIGHT:
            done, acks = await asyncio.wait(acks, return_when=asyncio.FIRST_COMPLETED)
            for ack in done:
                ack.result()  # a refused publish ends the run with an error
        sent[channel] += 1
        acks.add(asyncio.ensure_future(js.publish(channel, f"{channel}:{sent[channel]}".encode())))
        count += 1
        ahead = started + count / rate - loop.time()
        if ahead > 0:
            await asyncio.sleep(ahead)  # pacing the load
    elapsed = loop.time() - started
    for ack in await asyncio.gather(*acks):
        assert ack.stream.startswith("RECOVERY_")
    await nc.close()
    return {"sent": dict(sent), "rate": count / elapsed}


if __name__ == "__main__":
    nats_url, per_second, room_count, user_count = sys.argv[1:5]
    result = asyncio.run(publish(nats_url, float(per_second), int(room_count), int(user_count)))
    print(json.dumps(result), flush=True)
