"""The service's three JetStream streams and its durable consumer: what they look like (pure builders) and
making NATS match (create if absent, update the settings the service manages if they changed).

- ``NOTIFICATIONS`` over ``notify.user.*``, ``notify.room.*``, ``notify.broadcast``: work-queue retention,
  so it holds exactly the notifications not yet settled; full means publishes fail (discard new), never
  that a notification is dropped in silence.
- ``NOTIFICATIONS_INBOX`` over ``notify.inbox.<user>``: offline users' notifications, at most
  ``inbox_max_per_user`` per user (the oldest go first) for at most ``inbox_max_age``; direct gets and
  per-message TTLs on.
- ``NOTIFICATIONS_DEAD`` over ``notify.dead.>``: dead letters, kept ``dead_max_age``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import nats.js.errors
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from notification_service.config import NotifyConfig
from shared.errors import ConfigError

log = logging.getLogger("prism.notify.streams")

# Settings the service owns on an existing stream: a restart with a new value updates the stream.
MANAGED = (
    "subjects",
    "max_age",
    "max_msgs",
    "max_bytes",
    "max_msgs_per_subject",
    "duplicate_window",
    "num_replicas",
    "discard",
    "allow_direct",
    "allow_msg_ttl",
)


def stream_configs(config: NotifyConfig) -> list[StreamConfig]:
    s = config.subjects
    storage = StorageType.MEMORY if config.stream_storage == "memory" else StorageType.FILE
    common: dict[str, Any] = {"num_replicas": config.stream_replicas, "storage": storage}
    return [
        StreamConfig(
            name=config.stream,
            description="Prism notifications waiting for the notification service",
            subjects=list(s.notify_inputs),
            retention=RetentionPolicy.WORK_QUEUE,
            discard=DiscardPolicy.NEW,
            max_age=config.stream_max_age,
            max_msgs=config.stream_max_msgs,
            max_bytes=config.stream_max_bytes,
            duplicate_window=_window(config.duplicate_window, config.stream_max_age),
            allow_direct=False,
            allow_msg_ttl=False,
            **common,
        ),
        StreamConfig(
            name=config.inbox_stream,
            description="Prism notifications for offline users, replayed when they connect",
            subjects=[s.notify_inboxes],
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            max_age=config.inbox_max_age,
            max_msgs=-1,
            max_bytes=-1,
            max_msgs_per_subject=config.inbox_max_per_user,
            duplicate_window=_window(config.duplicate_window, config.inbox_max_age),
            allow_direct=True,
            allow_msg_ttl=True,
            **common,
        ),
        StreamConfig(
            name=config.dead_stream,
            description="Prism notifications that could not be delivered, with the reason in headers",
            subjects=[s.notify_dead_letters],
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            max_age=config.dead_max_age,
            max_msgs=-1,
            max_bytes=-1,
            duplicate_window=_window(config.duplicate_window, config.dead_max_age),
            allow_direct=False,
            allow_msg_ttl=False,
            **common,
        ),
    ]


def _window(window: float, max_age: float) -> float:
    return min(window, max_age) if max_age > 0 else window


def consumer_config(config: NotifyConfig) -> ConsumerConfig:
    return ConsumerConfig(
        name=config.consumer,
        durable_name=config.consumer,
        description="Prism notification service instances (pull)",
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=config.ack_wait,
        max_deliver=-1,  # the service counts tries itself and dead-letters; the server never gives up
        max_ack_pending=max(1000, 4 * config.concurrency),
    )


def changes(current: StreamConfig, wanted: StreamConfig) -> dict[str, Any]:
    """The managed settings of ``wanted`` that ``current`` does not have."""
    diff: dict[str, Any] = {}
    for name in MANAGED:
        have, want = getattr(current, name), getattr(wanted, name)
        if name == "allow_direct" or name == "allow_msg_ttl":
            have, want = bool(have), bool(want)
        if name == "max_age" or name == "duplicate_window":
            have, want = float(have or 0), float(want or 0)
        if have != want:
            diff[name] = getattr(wanted, name)
    return diff


async def ensure_streams(js: Any, config: NotifyConfig) -> None:
    """Raises :class:`ConfigError` when JetStream refuses a setting (e.g. 3 replicas on one server)."""
    for wanted in stream_configs(config):
        try:
            await _ensure_stream(js, wanted)
        except nats.js.errors.ServiceUnavailableError:
            raise
        except nats.js.errors.APIError as exc:
            raise ConfigError(f"JetStream refused stream {wanted.name}: {exc.description}") from None
    try:
        await js.add_consumer(config.stream, consumer_config(config))  # creates, or updates ack_wait & co.
    except nats.js.errors.ServiceUnavailableError:
        raise
    except nats.js.errors.APIError as exc:
        raise ConfigError(f"JetStream refused consumer {config.consumer}: {exc.description}") from None


async def _ensure_stream(js: Any, wanted: StreamConfig) -> None:
    assert wanted.name is not None
    try:
        info = await js.stream_info(wanted.name)
    except nats.js.errors.NotFoundError:
        try:
            await js.add_stream(wanted)
            log.info("created stream %s over %s", wanted.name, ", ".join(wanted.subjects or []))
            return
        except nats.js.errors.BadRequestError:  # another instance created it first, differently
            info = await js.stream_info(wanted.name)
    current: StreamConfig = info.config
    if current.retention != wanted.retention:
        raise ConfigError(
            f"stream {wanted.name} exists with retention {current.retention}; the notification service "
            f"needs {wanted.retention}: delete it or choose another PRISM_STREAM"
        )
    if current.storage != wanted.storage:
        log.warning("stream %s keeps its %s storage (it cannot change)", wanted.name, current.storage)
    diff = changes(current, wanted)
    if diff:
        log.info("updating stream %s: %s", wanted.name, diff)
        await js.update_stream(dataclasses.replace(current, **diff))
