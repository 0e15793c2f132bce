"""Clients' ``notify.self`` requests (PRISM_NOTIFY_CLIENT_REQUESTS): the pure decisions, then the real path
through a gateway node, the service and the NOTIFICATIONS stream."""

from __future__ import annotations

import orjson
import pytest
from nats.aio.client import Client as NatsClient

from notification_service import core
from notification_service.config import NotifyConfig
from shared.client import PrismClient
from shared.errors import ConfigError, RequestFailed
from shared.nats_permissions import notification
from tests.conftest import NodeFactory, ws_url
from tests.helpers import eventually
from tests.notification.conftest import ServiceFactory
from tests.notification.support import holds, metric, next_notification

ON = {"notify_client_requests": True}


# -- pure decisions ----------------------------------------------------------------------------------
def test_a_request_is_for_the_user_in_the_header_only() -> None:
    request = core.parse_self_request("alice", b'{"payload":{"title":"hi"},"user":"bob"}', 4096)
    assert request == core.SelfRequest("alice", {"title": "hi"}, None)
    body = orjson.loads(core.self_notification(request, "self-1"))
    assert body == {"id": "self-1", "payload": {"title": "hi"}}
    assert core.parse_self_request("alice", b"null", 4096) == core.SelfRequest("alice", None, None)
    assert core.parse_self_request("alice", b'{"ttl":60}', 4096) == core.SelfRequest("alice", None, 60.0)


@pytest.mark.parametrize(
    ("user", "data", "error"),
    [
        (None, b"{}", core.SelfRefusal.ANONYMOUS),
        ("a.b", b"{}", core.SelfRefusal.ANONYMOUS),
        ("alice", b'{"payload":"' + b"x" * 100 + b'"}', core.SelfRefusal.TOO_LARGE),
        ("alice", b"[1]", core.SelfRefusal.INVALID_REQUEST),
        ("alice", b"{", core.SelfRefusal.INVALID_REQUEST),
        ("alice", b'{"ttl":-1}', core.SelfRefusal.INVALID_REQUEST),
        ("alice", b'{"ttl":true}', core.SelfRefusal.INVALID_REQUEST),
    ],
)
def test_refusals(user: str | None, data: bytes, error: core.SelfRefusal) -> None:
    refused = core.parse_self_request(user, data, 64)
    assert isinstance(refused, core.Refused)
    assert refused.error is error
    reply = orjson.loads(refused.reply())
    assert reply["error"] == error.value
    assert reply["message"]


def test_the_limiter_is_per_user_and_refills() -> None:
    limiter = core.SelfLimiter(per_minute=6, burst=2)  # one every 10 s
    assert [limiter.take("alice", 0.0) for _ in range(2)] == [0.0, 0.0]
    assert limiter.take("alice", 0.0) == pytest.approx(10.0)
    assert limiter.take("bob", 0.0) == 0.0
    assert limiter.take("alice", 5.0) == pytest.approx(5.0)
    assert limiter.take("alice", 10.0) == 0.0


def test_the_limiter_forgets_idle_users_first_and_stays_bounded() -> None:
    limiter = core.SelfLimiter(per_minute=60, burst=1, max_users=3)  # one a second
    for user, now in (("a", 0.0), ("b", 1.5), ("c", 1.8)):
        assert limiter.take(user, now) == 0.0
    limiter.take("d", 2.0)  # "a" has refilled by now: forgotten; "b" and "c" have not
    assert len(limiter) == 3
    assert limiter.take("b", 2.0) == pytest.approx(0.5)  # kept, with its state
    for user in ("e", "f", "g", "h"):
        limiter.take(user, 2.0)
    assert len(limiter) == 3


def test_settings_are_checked() -> None:
    assert NotifyConfig().notify_client_requests is False
    with pytest.raises(ConfigError):
        NotifyConfig(notify_client_rate=0).validate()
    with pytest.raises(ConfigError):
        NotifyConfig(notify_client_max_bytes=0).validate()


def test_the_permissions_grow_only_when_asked() -> None:
    default, on = notification(), notification(client_requests=True)
    assert "client.event.notify.self" not in default.subscribe
    assert not default.allow_responses
    assert "client.event.notify.self" in on.subscribe
    assert "notify.user.*" in on.publish
    assert on.allow_responses


# -- through a gateway and the stream ------------------------------------------------------------------
async def test_a_request_notifies_the_requesting_user_only(
    make_node: NodeFactory, make_service: ServiceFactory, nc: NatsClient
) -> None:
    node1, node2 = await make_node(), await make_node()
    service = await make_service(**ON)
    alice = await PrismClient.connect(ws_url(node1), user="alice")
    alice_phone = await PrismClient.connect(ws_url(node2), user="alice")
    bob = await PrismClient.connect(ws_url(node2), user="bob")
    reply = await alice.request("notify.self", {"payload": {"title": "hello me"}, "user": "bob"})
    assert set(reply) == {"id"}
    assert reply["id"].startswith("self-")
    for client in (alice, alice_phone):
        frame = await next_notification(client)
        assert (frame["id"], frame["payload"]) == (reply["id"], {"title": "hello me"})
    await bob.request("notify.self", {"payload": "bob's own"})
    assert (await next_notification(bob))["payload"] == "bob's own"  # not alice's before it
    await eventually(lambda: metric(service, "prism_notify_delivered_total", kind="user") == 2)
    assert metric(service, "prism_notify_client_requests_total", outcome="accepted") == 2
    await eventually(lambda: holds(nc.jetstream(), "NOTIFICATIONS", 0), what="the work queue emptied")
    for client in (alice, alice_phone, bob):
        await client.close()


async def test_an_anonymous_connection_is_refused(
    make_node: NodeFactory, make_service: ServiceFactory
) -> None:
    node = await make_node()
    service = await make_service(**ON)
    anonymous = await PrismClient.connect(ws_url(node))
    reply = await anonymous.request("notify.self", {"payload": "x"})
    assert reply["error"] == "anonymous"
    assert metric(service, "prism_notify_client_requests_total", outcome="anonymous") == 1
    assert metric(service, "prism_notify_received_total", kind="user") == 0
    await anonymous.close()


async def test_oversized_and_over_rate_requests_are_refused(
    make_node: NodeFactory, make_service: ServiceFactory
) -> None:
    node = await make_node()
    service = await make_service(
        **ON, notify_client_max_bytes=200, notify_client_rate=1, notify_client_burst=2
    )
    alice = await PrismClient.connect(ws_url(node), user="alice")
    big = await alice.request("notify.self", {"payload": "x" * 300})
    assert big["error"] == "too_large"
    assert "200" in big["message"]
    ids = [(await alice.request("notify.self", {"payload": i}))["id"] for i in range(2)]
    over = await alice.request("notify.self", {"payload": 3})
    assert over["error"] == "rate_limited"
    assert 0 < over["retry_after"] <= 60
    got = [(await next_notification(alice))["id"] for _ in ids]
    assert sorted(got) == sorted(ids)
    assert metric(service, "prism_notify_client_requests_total", outcome="rate_limited") == 1
    assert metric(service, "prism_notify_client_requests_total", outcome="too_large") == 1
    await alice.close()


async def test_off_by_default(make_node: NodeFactory, make_service: ServiceFactory) -> None:
    node = await make_node()
    service = await make_service()
    alice = await PrismClient.connect(ws_url(node), user="alice")
    with pytest.raises(RequestFailed) as failed:
        await alice.request("notify.self", {"payload": "x"})
    assert failed.value.code == "no_responders"
    assert metric(service, "prism_notify_received_total", kind="user") == 0
    await alice.close()
