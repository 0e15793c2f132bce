"""Prism's load generator and benchmarks: ``python -m loadtest`` (or ``prism loadtest``).

One process of clients (picows) on one core drives one gateway process pinned to the other core, and
the same scenario runs against the raw ``websockets`` ceiling (and opt-in peers) in the same run, so the
figures compare as ratios on a noisy machine. See ``docs/benchmarks.md``.

    payload.py   timestamped messages (latency is measured from publish to client receipt)
    stats.py     latency percentiles and throughput timelines
    fleet.py     many cheap WebSocket clients speaking a target's dialect
    targets/     what is measured: prism, the websockets ceiling, nats-py alone
    peers/       opt-in peers installed on demand: Socket.IO and Django Channels, both on Redis
    scenarios.py idle, connect, conn, room, user, request, mixed
    report.py    JSON, Markdown and PNG plots
"""
