"""The notification service's decisions, without NATS: parsing, ttl, what receipts mean, retries, dead
letters, connect events, the stream configurations, the config object and the health endpoint."""

from __future__ import annotations

import math

import orjson
import pytest
from prometheus_client import CollectorRegistry

from notification_service import core
from notification_service.config import NotifyConfig
from notification_service.core import DeliveryResult, Kind, Outcome, Problem, Step, Target
from notification_service.metrics import NAMES, NotifyMetrics
from notification_service.publisher import encode
from notification_service.streams import changes, consumer_config, stream_configs
from shared.config import load
from shared.errors import ConfigError
from shared.health_http import HealthServer
from shared.subjects import Subjects

S = Subjects()
NOW = 1_700_000_000.0


def parse(subject: str, body: object, sent_at: float = NOW) -> core.Notification | core.Malformed:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return core.parse(subject, data, sent_at, S)


# -- subjects ------------------------------------------------------------------------------------------
def test_notify_subjects_follow_the_prefix() -> None:
    acme = Subjects("acme.")
    assert acme.notify_user("alice") == "acme.notify.user.alice"
    assert acme.notify_room("lobby") == "acme.notify.room.lobby"
    assert acme.notify_broadcast == "acme.notify.broadcast"
    assert acme.notify_inputs == ("acme.notify.user.*", "acme.notify.room.*", "acme.notify.broadcast")
    assert acme.notify_inbox("alice") == "acme.notify.inbox.alice"
    assert acme.notify_inboxes == "acme.notify.inbox.*"
    assert acme.notify_dead("acme.notify.user.a@b") == "acme.notify.dead.user.a@b"
    assert acme.notify_dead_letters == "acme.notify.dead.>"
    with pytest.raises(ValueError, match="user id"):
        acme.notify_user("a.b")


# -- parsing -------------------------------------------------------------------------------------------
def test_a_user_notification() -> None:
    parsed = parse("notify.user.alice", {"id": "n1", "payload": {"a": [1, 2]}, "ttl": 60, "extra": "ignored"})
    assert parsed == core.Notification("n1", {"a": [1, 2]}, Target(Kind.USER, "alice"), NOW, NOW + 60)
    assert orjson.loads(parsed.frame()) == {
        "type": "notification",
        "id": "n1",
        "payload": {"a": [1, 2]},
        "sent_at": "2023-11-14T22:13:20.000Z",
    }


def test_room_broadcast_and_prefixed_subjects() -> None:
    room = core.parse("acme.notify.room.lobby", b'{"id":"r","payload":null}', NOW, Subjects("acme."))
    assert isinstance(room, core.Notification)
    assert room.target == Target(Kind.ROOM, "lobby")
    assert room.expires_at is None
    assert orjson.loads(room.frame())["room"] == "lobby"
    assert room.target.delivery_subject(Subjects("acme.")) == "acme.room.lobby"
    broadcast = parse("notify.broadcast", {"id": "b", "payload": 1.5})
    assert isinstance(broadcast, core.Notification)
    assert broadcast.target.delivery_subject(S) == "broadcast"
    assert Target(Kind.USER, "u").delivery_subject(S) == "user.u"


@pytest.mark.parametrize(
    ("subject", "body", "problem", "kind"),
    [
        ("notify.user.bob", b"{not json", Problem.INVALID_JSON, "user"),
        ("notify.user.bob", b"[1]", Problem.NOT_AN_OBJECT, "user"),
        ("notify.user.bob", b'"text"', Problem.NOT_AN_OBJECT, "user"),
        ("notify.user.bob", b'{"payload":1}', Problem.INVALID_ID, "user"),
        ("notify.user.bob", b'{"id":7,"payload":1}', Problem.INVALID_ID, "user"),
        ("notify.user.bob", b'{"id":"","payload":1}', Problem.INVALID_ID, "user"),
        ("notify.user.bob", b'{"id":"a b","payload":1}', Problem.INVALID_ID, "user"),
        ("notify.user.bob", b'{"id":"caf\\u00e9","payload":1}', Problem.INVALID_ID, "user"),
        ("notify.user.bob", orjson.dumps({"id": "x" * 129, "payload": 1}), Problem.INVALID_ID, "user"),
        ("notify.user.bob", b'{"id":"a"}', Problem.MISSING_PAYLOAD, "user"),
        ("notify.user.bob", b'{"id":"a","payload":1,"ttl":0}', Problem.INVALID_TTL, "user"),
        ("notify.user.bob", b'{"id":"a","payload":1,"ttl":-1}', Problem.INVALID_TTL, "user"),
        ("notify.user.bob", b'{"id":"a","payload":1,"ttl":true}', Problem.INVALID_TTL, "user"),
        ("notify.user.bob", b'{"id":"a","payload":1,"ttl":"60"}', Problem.INVALID_TTL, "user"),
        ("notify.user.bob", b'{"id":"a","payload":1,"ttl":1e999}', Problem.INVALID_JSON, "user"),
        ("notify.user.b@b", b'{"id":"a","payload":1}', Problem.INVALID_USER, "user"),
        ("notify.user." + "u" * 129, b'{"id":"a","payload":1}', Problem.INVALID_USER, "user"),
        ("notify.room.l!", b'{"id":"a","payload":1}', Problem.INVALID_ROOM, "room"),
        ("notify.other.x", b'{"id":"a","payload":1}', Problem.INVALID_SUBJECT, "invalid"),
        ("notify.broadcast.x", b'{"id":"a","payload":1}', Problem.INVALID_SUBJECT, "invalid"),
    ],
)
def test_malformed_notifications_say_what_is_wrong(
    subject: str, body: bytes, problem: Problem, kind: str
) -> None:
    parsed = parse(subject, body)
    assert isinstance(parsed, core.Malformed)
    assert (parsed.problem, parsed.kind) == (problem, kind)
    assert parsed.reason


def test_ids_may_be_any_printable_ascii_up_to_128() -> None:
    for good in ("n1", "order-42:shipped", "01HZX3K9", "a" * 128, "{}[]!~"):
        assert core.id_problem(good) is None
    assert core.id_problem(None) == 'no "id"'


def test_payload_may_be_any_json_value() -> None:
    for payload in (None, 0, "s", [1, {"x": None}], {"deep": {"er": True}}):
        parsed = parse("notify.user.u", {"id": "i", "payload": payload})
        assert isinstance(parsed, core.Notification)
        assert orjson.loads(parsed.frame())["payload"] == payload


# -- ttl -------------------------------------------------------------------------------------------------
def test_expiry() -> None:
    assert not core.is_expired(None, NOW)
    assert not core.is_expired(NOW + 0.001, NOW)
    assert core.is_expired(NOW, NOW)
    assert core.inbox_ttl(None, NOW) is None
    assert core.inbox_ttl(NOW + 30, NOW) == "30s"
    assert core.inbox_ttl(NOW + 0.2, NOW) == "1s"
    assert core.inbox_ttl(NOW - 5, NOW) == "1s"
    assert core.inbox_msg_id("alice", "n1") == "alice:n1"
    assert core.expires_header({core.H_EXPIRES: "12.5"}) == 12.5
    assert core.expires_header({core.H_EXPIRES: "soon"}) is None
    assert core.expires_header(None) is None


# -- after a delivery ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "result", "step", "problem"),
    [
        (Kind.USER, DeliveryResult(Outcome.RECEIPTS, 2), Step.DELIVERED, None),
        (Kind.USER, DeliveryResult(Outcome.RECEIPTS, 0), Step.STORE, None),
        (Kind.USER, DeliveryResult(Outcome.NO_RESPONDERS), Step.STORE, None),
        (Kind.USER, DeliveryResult(Outcome.TIMEOUT), Step.FAIL, Problem.NO_RECEIPT),
        (Kind.USER, DeliveryResult(Outcome.ERROR, error="closed"), Step.FAIL, Problem.NATS_ERROR),
        (Kind.ROOM, DeliveryResult(Outcome.RECEIPTS, 1), Step.DELIVERED, None),
        (Kind.ROOM, DeliveryResult(Outcome.RECEIPTS, 0), Step.NO_RECIPIENTS, None),
        (Kind.ROOM, DeliveryResult(Outcome.NO_RESPONDERS), Step.NO_RECIPIENTS, None),
        (Kind.ROOM, DeliveryResult(Outcome.TIMEOUT), Step.FAIL, Problem.NO_RECEIPT),
        (Kind.BROADCAST, DeliveryResult(Outcome.RECEIPTS, 5), Step.DELIVERED, None),
        (Kind.BROADCAST, DeliveryResult(Outcome.TIMEOUT), Step.NO_RECIPIENTS, None),  # empty nodes are silent
        (Kind.BROADCAST, DeliveryResult(Outcome.ERROR), Step.FAIL, Problem.NATS_ERROR),
    ],
)
def test_what_receipts_mean(kind: Kind, result: DeliveryResult, step: Step, problem: Problem | None) -> None:
    assert core.after_delivery(kind, result) == (step, problem)


def test_retries_double_up_to_a_cap_then_dead_letter() -> None:
    policy = core.RetryPolicy(max_deliveries=4, base_delay=0.5, max_delay=1.5)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 1.5, 1.5]
    assert policy.on_failure(Problem.NO_RECEIPT, "x", 1) == core.Retry(0.5)
    assert policy.on_failure(Problem.NO_RECEIPT, "x", 3) == core.Retry(1.5)
    dead = policy.on_failure(Problem.NO_RECEIPT, "no delivery receipt within 2s", 4)
    assert dead == core.DeadLetter(
        Problem.NO_RECEIPT, "no delivery receipt within 2s (gave up after 4 deliveries)"
    )
    assert policy.on_arrival(4) is None
    too_many = policy.on_arrival(5)
    assert too_many is not None
    assert too_many.problem is Problem.TOO_MANY_DELIVERIES


def test_a_cap_below_the_first_delay_is_every_delay() -> None:
    # PRISM_RETRY_MAX_DELAY under PRISM_RETRY_DELAY is allowed: the cap wins from the first retry on.
    policy = core.RetryPolicy(max_deliveries=4, base_delay=2.0, max_delay=0.5)
    assert [policy.delay(n) for n in (1, 2, 3)] == [0.5, 0.5, 0.5]


def test_failure_details_and_dead_letter_headers() -> None:
    assert core.failure_detail(Problem.NO_RECEIPT, DeliveryResult(Outcome.TIMEOUT), 2.0) == (
        "no delivery receipt within 2s"
    )
    error = DeliveryResult(Outcome.ERROR, error="connection closed")
    assert core.failure_detail(Problem.NATS_ERROR, error, 2.0) == "NATS error: connection closed"
    headers = core.dead_letter_headers(Problem.INVALID_JSON, "bad\r\njson", "notify.user.a", 1, 42, "N")
    assert headers == {
        core.H_ERROR: "invalid_json",
        core.H_REASON: "bad json",
        core.H_SUBJECT: "notify.user.a",
        core.H_DELIVERIES: "1",
        core.H_SEQUENCE: "42",
        core.MSG_ID: "dead:N:42",
    }


# -- connect events ------------------------------------------------------------------------------------
def test_connect_events() -> None:
    event = {"conn": "node1.Xk3v9Qm2TbLw", "user": "alice", "node": "node1", "route": "/ws"}
    assert core.parse_connect_event(orjson.dumps(event)) == ("node1.Xk3v9Qm2TbLw", "alice")
    assert core.parse_connect_event(orjson.dumps(event | {"user": None})) is None  # anonymous: no inbox
    assert core.parse_connect_event(orjson.dumps(event | {"user": "a.b"})) is None
    assert core.parse_connect_event(orjson.dumps(event | {"conn": "nodot"})) is None
    assert core.parse_connect_event(b"[]") is None
    assert core.parse_connect_event(b"nope") is None


# -- streams, config, publisher, http --------------------------------------------------------------------
def test_stream_configurations_follow_the_settings() -> None:
    config = NotifyConfig(
        subject_prefix="acme.", stream="N", inbox_max_per_user=7, inbox_max_age=60, stream_replicas=3
    )
    work, inbox, dead = stream_configs(config)
    assert (work.name, inbox.name, dead.name) == ("N", "N_INBOX", "N_DEAD")
    assert work.subjects == ["acme.notify.user.*", "acme.notify.room.*", "acme.notify.broadcast"]
    assert work.retention == "workqueue"
    assert work.discard == "new"  # full: publishers get an error, nothing is dropped in silence
    assert inbox.subjects == ["acme.notify.inbox.*"]
    assert (inbox.max_msgs_per_subject, inbox.max_age, inbox.duplicate_window) == (7, 60, 60)
    assert inbox.allow_direct
    assert inbox.allow_msg_ttl
    assert dead.subjects == ["acme.notify.dead.>"]
    assert {s.num_replicas for s in (work, inbox, dead)} == {3}
    consumer = consumer_config(config)
    assert (consumer.durable_name, consumer.ack_wait, consumer.max_deliver) == ("prism-notify", 30.0, -1)
    assert changes(inbox, inbox) == {}
    smaller = stream_configs(NotifyConfig(subject_prefix="acme.", stream="N", inbox_max_per_user=3))[1]
    assert changes(inbox, smaller) == {
        "max_age": smaller.max_age,
        "duplicate_window": 120.0,
        "max_msgs_per_subject": 3,
        "num_replicas": 1,
    }


def test_config_from_the_environment_and_its_checks() -> None:
    config = load(
        NotifyConfig, None, environ={"PRISM_NATS_URL": "nats://a:1,nats://b:2", "PRISM_MAX_DELIVERIES": "9"}
    )
    assert config.nats_servers == ["nats://a:1", "nats://b:2"]
    assert config.max_deliveries == 9
    assert (config.inbox_stream, config.dead_stream) == ("NOTIFICATIONS_INBOX", "NOTIFICATIONS_DEAD")
    for bad in (
        {"subject_prefix": "acme"},
        {"stream": "a.b"},
        {"consumer": ""},
        {"stream_storage": "tape"},
        {"max_deliveries": 0},
        {"stream_max_msgs": 0},
        {"receipt_timeout": math.nan},
        {"ack_wait": 2.0},
        {"metrics_port": 70000},
        {"nats_user": "u"},
    ):
        with pytest.raises(ConfigError):
            NotifyConfig(**bad).validate()
    assert "password" not in repr(NotifyConfig(nats_password="secret")).replace("nats_password", "")


def test_the_publisher_encodes_what_the_service_accepts() -> None:
    body = encode("n1", {"x": 1}, ttl=30)
    parsed = core.parse("notify.user.u", body, NOW, S)
    assert isinstance(parsed, core.Notification)
    assert parsed.expires_at == NOW + 30
    with pytest.raises(ValueError, match="printable"):
        encode("no spaces please", None)


def test_health_endpoint_answers() -> None:
    registry = CollectorRegistry()
    NotifyMetrics(registry)
    ready = [False]
    server = HealthServer(registry, lambda: ready[0], lambda: "starting")
    assert server.answer("GET", "/healthz")[0] == 200
    assert server.answer("GET", "/readyz") == (503, "text/plain", b"not ready: starting\n")
    ready[0] = True
    assert server.answer("GET", "/readyz")[0] == 200
    status, _, body = server.answer("GET", "/metrics?x=1")
    assert status == 200
    assert all(name.encode() in body for name in NAMES.values() if not name.endswith("_total"))
    assert server.answer("POST", "/metrics")[0] == 405
    assert server.answer("GET", "/nope")[0] == 404
