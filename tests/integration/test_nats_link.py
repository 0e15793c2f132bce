"""The data plane's own NATS connection (gateway/io/nats_link.py) against a real nats-server: every way to
authenticate, TLS, reconnecting (resubscribe, the reconnect buffer and its limit, failover to a server the
cluster advertised), staleness both ways, max_payload, permission errors, and the backlog signal."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from gateway.embedded_nats import NatsCluster, NatsServer
from gateway.io.bus import Headers
from gateway.io.nats_link import BusUnavailable, NatsLink, PayloadTooLarge
from shared.errors import ConfigError
from shared.nats_auth import NatsAuth
from shared.nats_connection import NatsOptions, NatsUnreachable, flush_all
from tests.helpers import eventually
from tests.nats_credentials_support import Decentralised, Pki, new_seed, public_key

pytestmark = pytest.mark.timeout(60)


def start_nats(tmp_path: Path, config: str = "", client_port: int = -1) -> NatsServer:
    config_file = tmp_path / "nats.conf"
    config_file.write_text(config)
    return NatsServer.start(
        tmp_path / "nats", log_file=tmp_path / "nats.log", config_file=config_file, client_port=client_port
    )


def options(*urls: str, **settings: object) -> NatsOptions:
    return NatsOptions(servers=list(urls), name="link-test", connect_timeout=3.0, **settings)  # type: ignore[arg-type]


class Inbox:
    """A subscription's messages, as (subject, reply, payload, headers)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str, bytes, Headers | None]] = []

    def __call__(self, subject: str, reply: str, payload: bytes, headers: Headers | None) -> None:
        self.messages.append((subject, reply, payload, headers))

    def payloads(self) -> list[bytes]:
        return [m[2] for m in self.messages]


async def round_trip(link: NatsLink, other: NatsClient) -> None:
    """A message each way between ``link`` and a nats-py client on the same server."""
    inbox = Inbox()
    subject = f"test.{secrets.token_hex(4)}"
    await link.subscribe(subject, inbox)
    await link.flush()
    await other.publish(subject, b"to the link", headers={"K": "v"})
    await eventually(lambda: inbox.payloads() == [b"to the link"], what="the link's delivery")
    assert inbox.messages[0][3] == {"K": "v"}
    back: list[Msg] = []

    async def on_msg(msg: Msg) -> None:
        back.append(msg)

    sub = await other.subscribe(subject + ".back", cb=on_msg)
    await flush_all(other)  # nats-py's flush() alone can reach the server before the SUB
    await link.publish(subject + ".back", b"from the link", {"H": "1"})
    await eventually(lambda: len(back) == 1, what="the link's publish")
    assert (back[0].data, back[0].headers) == (b"from the link", {"H": "1"})
    await sub.unsubscribe()


@pytest.fixture
async def plain(tmp_path: Path) -> AsyncIterator[NatsServer]:
    server = start_nats(tmp_path)
    yield server
    server.stop()


# -- authentication and TLS ------------------------------------------------------------------------------


async def test_user_and_password_and_url_credentials(tmp_path: Path) -> None:
    server = start_nats(tmp_path, 'authorization { users = [ { user: "gw", password: "s3cret" } ] }\n')
    try:
        other = await nats.connect(server.url, user="gw", password="s3cret")
        link = await NatsLink.connect(options(server.url, auth=NatsAuth(user="gw", password="s3cret")))
        await round_trip(link, other)
        await link.close()
        in_url = server.url.replace("nats://", "nats://gw:s3cret@")
        link = await NatsLink.connect(options(in_url))
        await round_trip(link, other)
        await link.close()
        with pytest.raises(ConfigError, match="refused this node's credentials"):
            await NatsLink.connect(options(server.url, auth=NatsAuth(user="gw", password="wrong")))
        await other.close()
    finally:
        server.stop()


async def test_token(tmp_path: Path) -> None:
    token = secrets.token_urlsafe(16)
    server = start_nats(tmp_path, f'authorization {{ token: "{token}" }}\n')
    try:
        other = await nats.connect(server.url, token=token)
        link = await NatsLink.connect(options(server.url, auth=NatsAuth(token=token)))
        await round_trip(link, other)
        await link.close()
        with pytest.raises(ConfigError):
            await NatsLink.connect(options(server.url, auth=NatsAuth(token="wrong")))
        await other.close()
    finally:
        server.stop()


async def test_nkey(tmp_path: Path) -> None:
    import nkeys

    seed = new_seed(nkeys.PREFIX_BYTE_USER)
    seed_file = tmp_path / "gw.nk"
    seed_file.write_bytes(seed)
    server = start_nats(tmp_path, f'authorization {{ users = [ {{ nkey: "{public_key(seed)}" }} ] }}\n')
    try:
        other = await nats.connect(server.url, nkeys_seed=str(seed_file))
        link = await NatsLink.connect(options(server.url, auth=NatsAuth(nkey_seed_file=str(seed_file))))
        await round_trip(link, other)
        await link.close()
        stranger = tmp_path / "stranger.nk"
        stranger.write_bytes(new_seed(nkeys.PREFIX_BYTE_USER))
        with pytest.raises(ConfigError):
            await NatsLink.connect(options(server.url, auth=NatsAuth(nkey_seed_file=str(stranger))))
        await other.close()
    finally:
        server.stop()


async def test_credentials_file(tmp_path: Path) -> None:
    setup = Decentralised.make(tmp_path)
    server = start_nats(tmp_path, setup.server_config)
    try:
        other = await nats.connect(server.url, user_credentials=setup.creds_file)
        link = await NatsLink.connect(options(server.url, auth=NatsAuth(creds_file=setup.creds_file)))
        await round_trip(link, other)
        await link.close()
        await other.close()
    finally:
        server.stop()


async def test_mutual_tls(tmp_path: Path) -> None:
    pki = Pki.make(tmp_path)
    server = start_nats(tmp_path, pki.server_config())
    url = f"tls://127.0.0.1:{server.client_port}"
    auth = NatsAuth(tls_ca_file=pki.ca_file, tls_cert_file=pki.client_cert, tls_key_file=pki.client_key)
    try:
        other = await nats.connect(url, tls=auth.tls_context())
        link = await NatsLink.connect(options(url, auth=auth))
        assert link.info.get("tls_required")
        await round_trip(link, other)
        await link.close()
        # A server whose certificate this CA did not sign is a configuration error, at once.
        (tmp_path / "other").mkdir()
        stranger = Pki.make(tmp_path / "other")
        with pytest.raises(ConfigError, match="TLS to NATS"):
            await NatsLink.connect(options(url, auth=NatsAuth(tls_ca_file=stranger.ca_file)), give_up_after=5)
        # Without its client certificate the server refuses the link (the server's alert, in words).
        with pytest.raises(NatsUnreachable, match=r"unreachable \(TLS: "):
            await NatsLink.connect(options(url, auth=NatsAuth(tls_ca_file=pki.ca_file)), give_up_after=1)
        await other.close()
    finally:
        server.stop()


async def test_a_tls_url_against_a_server_without_tls_is_refused(plain: NatsServer) -> None:
    url = plain.url.replace("nats://", "tls://")
    with pytest.raises(ConfigError, match="offers no TLS"):
        await NatsLink.connect(options(url), give_up_after=1)


# -- reconnecting ----------------------------------------------------------------------------------------


async def test_reconnect_resubscribes_and_sends_what_waited(tmp_path: Path) -> None:
    first = start_nats(tmp_path)
    port = first.client_port
    states: list[bool] = []

    async def on_state(connected: bool) -> None:
        states.append(connected)

    link = await NatsLink.connect(options(first.url, reconnect_time_wait=0.2), on_state)
    inbox = Inbox()
    await link.subscribe("test.live", inbox)
    await link.subscribe("test.group", inbox, queue="workers")
    await link.flush()
    first.kill()
    await eventually(lambda: not link.connected, what="the link to notice")
    await link.publish("test.waited", b"one")
    await link.publish_encoded("test.waited", "", b"NATS/1.0\r\nK: v\r\n\r\n", b"two")
    await link.subscribe("test.later", inbox)  # made while disconnected: sent on reconnect
    flushed = asyncio.ensure_future(link.flush(timeout=20))
    second = start_nats(tmp_path, client_port=port)
    try:
        other = await nats.connect(second.url)
        waited: list[Msg] = []

        async def on_waited(msg: Msg) -> None:
            waited.append(msg)

        await other.subscribe("test.waited", cb=on_waited)
        await other.flush()
        await eventually(lambda: link.connected, timeout=20, what="the link to reconnect")
        await flushed  # the flush made while disconnected was answered after the reconnect
        assert states == [False, True]
        # What was published while disconnected went out after the reconnect, before anyone here
        # subscribed to it on the new server, or after: either way the order and the headers held.
        for subject in ("test.live", "test.group", "test.later"):
            await other.publish(subject, subject.encode())
        await eventually(lambda: len(inbox.messages) == 3, what="deliveries on the re-sent subscriptions")
        assert sorted(inbox.payloads()) == [b"test.group", b"test.later", b"test.live"]
        await link.close()
        await other.close()
    finally:
        second.stop()


async def test_the_reconnect_buffer_has_a_limit(tmp_path: Path) -> None:
    server = start_nats(tmp_path)
    link = await NatsLink.connect(options(server.url, reconnect_buffer=1000, reconnect_time_wait=5.0))
    server.kill()
    try:
        await eventually(lambda: not link.connected, what="the link to notice")
        await link.publish("test.x", b"x" * 600)
        with pytest.raises(BusUnavailable, match="reconnect buffer is full"):
            await link.publish("test.x", b"x" * 600)
        await link.publish("test.x", b"x" * 100)  # what still fits is taken
    finally:
        await link.close()
        server.stop()
    with pytest.raises(BusUnavailable):
        await link.publish("test.x", b"after close")


async def test_failover_to_a_server_the_cluster_advertised(tmp_path: Path) -> None:
    cluster = NatsCluster.start(tmp_path, 3, "link-test")
    try:
        first = cluster.servers[0]
        states: list[bool] = []

        async def on_state(connected: bool) -> None:
            states.append(connected)

        link = await NatsLink.connect(options(first.url, reconnect_time_wait=0.2), on_state)  # one URL

        def learned() -> bool:
            return len(link.info.get("connect_urls") or []) >= 2

        await eventually(learned, what="the cluster's connect_urls")
        inbox = Inbox()
        await link.subscribe("test.failover", inbox)
        first.kill()
        await eventually(lambda: states == [False, True], timeout=20, what="the link to fail over")
        assert link.server is not None
        assert link.server.port != first.client_port
        other = await nats.connect([s.url for s in cluster.servers[1:]])

        async def delivered() -> bool:
            await other.publish("test.failover", b"still here")
            await asyncio.sleep(0.05)
            return bool(inbox.messages)

        await eventually(delivered, timeout=20, what="delivery after the failover")
        await link.close()
        await other.close()
    finally:
        cluster.stop()


async def test_a_server_that_stops_answering_is_dropped_and_found_again(tmp_path: Path) -> None:
    server = start_nats(tmp_path)
    link = await NatsLink.connect(options(server.url, ping_interval=0.2, reconnect_time_wait=0.2))
    try:
        os.kill(server.pid, signal.SIGSTOP)  # alive, its socket open, answering nothing
        await eventually(lambda: not link.connected, timeout=10, what="the stale connection to be dropped")
        os.kill(server.pid, signal.SIGCONT)
        await eventually(lambda: link.connected, timeout=20, what="the link to reconnect")
        await link.flush()
    finally:
        os.kill(server.pid, signal.SIGCONT)
        await link.close()
        server.stop()


async def test_the_server_s_pings_are_answered(tmp_path: Path) -> None:
    server = start_nats(tmp_path, 'ping_interval: "100ms"\nping_max: 1\n')
    try:
        lost: list[bool] = []

        async def on_state(connected: bool) -> None:
            lost.append(connected)

        link = await NatsLink.connect(options(server.url), on_state)
        await asyncio.sleep(1.0)  # ten of the server's PINGs, each answered or the server closes
        assert link.connected
        assert lost == []
        await link.flush()
        await link.close()
    finally:
        server.stop()


# -- limits and errors -----------------------------------------------------------------------------------


async def test_max_payload_is_refused_before_the_server_sees_it(tmp_path: Path) -> None:
    server = start_nats(tmp_path, "max_payload: 1024\n")
    try:
        link = await NatsLink.connect(options(server.url))
        assert link.max_payload == 1024
        with pytest.raises(PayloadTooLarge):
            await link.publish("test.big", b"x" * 2000)
        with pytest.raises(PayloadTooLarge):
            await link.publish_encoded("test.big", "", b"NATS/1.0\r\nK: v\r\n\r\n", b"x" * 1020)
        await link.publish("test.small", b"x" * 1000)
        await link.flush()
        assert link.connected
        await link.close()
    finally:
        server.stop()


async def test_a_permissions_violation_is_logged_and_the_connection_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = (
        "authorization { users = [ { user: gw, password: pw, "
        'permissions: { publish: { deny: ["forbidden.>"] } } } ] }\n'
    )
    server = start_nats(tmp_path, config)
    try:
        link = await NatsLink.connect(options(server.url, auth=NatsAuth(user="gw", password="pw")))
        await link.publish("forbidden.x", b"no")
        await link.flush()
        await eventually(
            lambda: any("Permissions Violation" in r.getMessage() for r in caplog.records),
            what="the server's -ERR in the log",
        )
        assert link.connected
        await link.flush()
        await link.close()
    finally:
        server.stop()


async def test_a_protocol_violation_drops_the_connection_and_reconnects(plain: NatsServer) -> None:
    link = await NatsLink.connect(options(plain.url, reconnect_time_wait=0.1))
    link.data_received(b"NONSENSE\r\n")  # as if the server had sent it
    await eventually(lambda: not link.connected, what="the broken connection to be dropped")
    await eventually(lambda: link.connected, timeout=10, what="a new connection")
    await link.flush()
    await link.close()


# -- the backlog signal and the end ----------------------------------------------------------------------


async def test_backlogged_while_the_kernel_holds_a_burst(plain: NatsServer) -> None:
    link = await NatsLink.connect(options(plain.url))
    seen: list[bool] = []

    def on_msg(subject: str, reply: str, payload: bytes, headers: Headers | None) -> None:
        if not seen:
            time.sleep(0.3)  # the loop stalls: the rest of the burst piles up in the kernel
        seen.append(link.backlogged())

    await link.subscribe("test.burst", on_msg)
    await link.flush()
    other = await nats.connect(plain.url)
    for _ in range(20_000):
        await other.publish("test.burst", b"x" * 100)
    await other.flush()
    await eventually(lambda: len(seen) == 20_000, timeout=20, what="the whole burst")
    assert any(seen), "no read of the burst left a backlog behind"
    assert not link.backlogged()
    await other.close()
    await link.close()


async def test_drain_lets_handlers_finish_then_closes(plain: NatsServer) -> None:
    link = await NatsLink.connect(options(plain.url))
    started = asyncio.Event()

    async def slow(reply: str) -> None:
        started.set()
        await asyncio.sleep(0.2)
        await link.publish(reply, b"answered while draining")

    def on_msg(subject: str, reply: str, payload: bytes, headers: Headers | None) -> Awaitable[None]:
        return slow(reply)

    await link.subscribe("test.slow", on_msg)
    await link.flush()
    other = await nats.connect(plain.url)
    request = asyncio.ensure_future(other.request("test.slow", b"?", timeout=5))
    await asyncio.wait_for(started.wait(), 5)
    await link.drain()
    assert (await request).data == b"answered while draining"
    assert link.is_closed
    with pytest.raises(BusUnavailable):
        await link.publish("test.x", b"closed")
    with pytest.raises(BusUnavailable):
        await link.flush()
    await other.close()


async def test_a_close_is_quiet_and_a_lost_server_is_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = start_nats(tmp_path)
    try:
        link = await NatsLink.connect(options(server.url))
        await link.close()
        link = await NatsLink.connect(options(server.url, reconnect_time_wait=5.0), label="delivery")
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
        server.kill()
        await eventually(lambda: not link.connected, what="the lost connection")
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1
        assert warnings[0].startswith("NATS disconnected (delivery)")
        await link.close()
    finally:
        server.stop()
