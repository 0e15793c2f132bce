"""The NATS connection every Prism process makes (gateway, notification service, demo backend, ``prism
dev``): nats-py's client, connected the same way everywhere, with the same log lines.

:func:`connect` retries while no server answers (a process may start before NATS does), one warning per
attempt with exponential backoff and full jitter (:class:`shared.backoff.Backoff`), and then allows
unlimited reconnects for the life of the connection. Refused credentials and TLS failures are a
:class:`ConfigError` at once: retrying cannot help. The gateway uses a connection made here for JetStream
and KV (``gateway/io/bus.py``); its data plane is a connection of its own (``gateway/io/nats_link.py``),
made from the same :class:`NatsOptions` with the same first-connect backoff, errors and log lines.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import nats.errors
from nats.aio.client import Client as NatsClient

from shared.backoff import Backoff
from shared.errors import ConfigError
from shared.nats_auth import NatsAuth

# The documented logger of NATS connection lines (docs/observability.md).
log = logging.getLogger("prism.bus")

# The first connect's delays: up to 0.5 s, doubling, at most 5 s (jittered, so a whole cluster starting
# at once does not knock on NATS in step).
CONNECT_BACKOFF = Backoff(base=0.5, cap=5.0)


@dataclass(frozen=True, slots=True)
class NatsOptions:
    """How to reach NATS: for nats-py here, and for the gateway's data-plane connection
    (``gateway/io/nats_link.py``), which also uses the last two (nats-py's defaults are the same)."""

    servers: list[str]
    name: str
    connect_timeout: float = 5.0
    max_reconnect_attempts: int = -1
    reconnect_time_wait: float = 1.0
    drain_timeout: float = 10.0
    auth: NatsAuth = field(default_factory=NatsAuth)
    ping_interval: float = 120.0  # seconds between the client's own PINGs
    reconnect_buffer: int = 2 * 1024 * 1024  # bytes published while disconnected that wait for a reconnect


class NatsUnreachable(Exception):
    """No NATS server answered within the time the first connect was given (:func:`connect`, or the
    data plane's ``NatsLink.connect``); the message says where and why (the last error, e.g. connection
    refused)."""


@dataclass(slots=True)
class ConnectionEvents:
    """nats-py's callbacks, which log only what an operator should act on."""

    on_state: Callable[[bool], Awaitable[None]] | None = None
    connected: bool = False  # the first connect succeeded: errors from now on are news
    closing: bool = False  # closed on purpose (drain, close): its disconnect is not a warning
    last_error: Exception | None = None  # the first connect's latest error, for its retry line
    refused: list[Exception] = field(default_factory=list)  # authorization errors of the first connect

    async def disconnected(self) -> None:
        if self.closing:
            log.debug("NATS connection closed")
        else:
            log.warning("NATS disconnected")
        if self.on_state:
            await self.on_state(False)

    async def reconnected(self) -> None:
        log.info("NATS reconnected")
        if self.on_state:
            await self.on_state(True)

    async def error(self, exc: Exception) -> None:
        if "authorization violation" in str(exc).lower():
            self.refused.append(exc)
        if not self.connected:  # the connect loop says what went wrong, once per attempt
            self.last_error = exc
            return
        log.warning("NATS error: %s", exc)


class NatsConnection:
    """One connected nats-py client (:attr:`nc`) and the callbacks that log its life."""

    def __init__(self, nc: NatsClient, events: ConnectionEvents | None = None) -> None:
        self.nc = nc
        self.events = events if events is not None else ConnectionEvents(connected=True)

    @property
    def connected(self) -> bool:
        return bool(self.nc.is_connected)

    async def drain(self) -> None:
        """Drain (subscriptions finish what they hold), or close if NATS is already gone."""
        self.events.closing = True
        if not self.nc.is_closed:
            try:
                await self.nc.drain()
            except (nats.errors.ConnectionClosedError, nats.errors.FlushTimeoutError, TimeoutError):
                await self.nc.close()

    async def close(self) -> None:
        self.events.closing = True
        if not self.nc.is_closed:
            await self.nc.close()


async def connect(
    options: NatsOptions,
    on_state: Callable[[bool], Awaitable[None]] | None = None,
    give_up_after: float | None = None,
) -> NatsConnection:
    """Connect, retrying while no server answers: forever, or for ``give_up_after`` seconds and then
    raise :class:`NatsUnreachable`. ``on_state`` hears of every disconnect (False) and reconnect (True)."""
    events = ConnectionEvents(on_state)
    servers = ", ".join(options.servers)
    loop = asyncio.get_running_loop()
    deadline = None if give_up_after is None else loop.time() + give_up_after
    # nats-py's own first connect retries silently forever when reconnects are unlimited. Try each
    # server a couple of times, say so in one line when NATS is not there, back off and try again,
    # then allow unlimited reconnects for the life of the connection.
    schedule = CONNECT_BACKOFF.schedule()
    while True:
        nc = NatsClient()
        events.last_error = None
        try:
            await nc.connect(
                servers=options.servers,
                name=options.name,
                connect_timeout=int(options.connect_timeout),
                max_reconnect_attempts=1,
                reconnect_time_wait=int(options.reconnect_time_wait),
                drain_timeout=int(options.drain_timeout),
                disconnected_cb=events.disconnected,
                reconnected_cb=events.reconnected,
                error_cb=events.error,
                **options.auth.connect_kwargs(),
            )
            break
        except ssl.SSLCertVerificationError as exc:
            raise ConfigError(f"TLS to NATS at {servers} failed: {exc}") from None
        except (nats.errors.NoServersError, OSError, TimeoutError) as exc:
            if events.refused:  # the servers answered, and said no: retrying cannot help
                raise credentials_refused(options) from None
            why = reason(events.last_error or exc)
            delay = schedule.next_delay() or CONNECT_BACKOFF.cap
            if deadline is not None and loop.time() + delay > deadline:
                raise NatsUnreachable(f"NATS at {servers} unreachable ({why})") from None
            log.warning("cannot reach NATS at %s (%s); retrying in %.1fs", servers, why, delay)
            await asyncio.sleep(delay)
        except nats.errors.Error as exc:
            if "authorization violation" not in str(exc).lower():
                raise
            raise credentials_refused(options) from None
    events.connected = True
    nc.options["max_reconnect_attempts"] = options.max_reconnect_attempts
    return NatsConnection(nc, events)


def reason(exc: BaseException) -> str:
    """Why a connect failed, in words: "Connection refused" (the loop's own message varies: uvloop and
    asyncio word a refused connect differently), else the error's message or its type."""
    if isinstance(exc, ssl.SSLError):  # its errno is OpenSSL's, not the system's
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


def credentials_refused(options: NatsOptions) -> ConfigError:
    return ConfigError(
        f"NATS at {', '.join(options.servers)} refused this node's credentials: check "
        "PRISM_NATS_USER / PRISM_NATS_PASSWORD, PRISM_NATS_TOKEN, PRISM_NATS_NKEY_SEED_FILE or "
        "PRISM_NATS_CREDS_FILE"
    )


async def flush_all(nc: NatsClient, timeout: int = 10) -> None:
    """Return once the server has processed every command ``nc`` was given before: a SUB or UNSUB just
    made, or a PUB. ``nc.flush()`` alone does not promise that in nats-py 2.16: it writes its PING
    straight to the socket, while those commands wait in the client's buffer for its flusher task, so
    the PONG can come back before the server has seen a SUB (a message another connection publishes
    right after then finds no subscriber: 39 in 500 such rounds here). By the time the first flush
    returns the flusher has written them, so a second PING follows them on the wire and its PONG
    proves it."""
    await nc.flush(timeout)
    await nc.flush(timeout)
