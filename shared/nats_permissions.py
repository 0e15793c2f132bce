"""Least-privilege NATS permissions for each part of a Prism deployment, as data and as server config.

``docs/security.md`` shows :func:`render_users` for the default prefix and bucket, a unit test keeps the
two identical, and an integration test runs a gateway node and a backend under exactly these
permissions. ``python -m shared.nats_permissions [PREFIX] [BUCKET]`` prints the block for a deployment.

Roles:

- ``gateway``: a gateway node. Subscribes to deliveries, control and presence queries; publishes client
  traffic and lifecycle events; beats, pings and announces sweeps on ``node.>``; writes the presence
  buckets (the entry bucket and every shard), purges a dead node's keys from them, and manages its own
  watches on them; answers requests (receipts, control replies, presence answers, pings) through
  ``allow_responses``.
  For recovery it creates and reads the history streams (``PRISM_RECOVER_STREAM``, default
  ``RECOVERY``), writes their anchors and subscribes to their republish (``recovery.>``); unused while
  recovery is off.
- ``backend``: a service that reaches clients. Publishes deliveries, control and presence queries, and
  notifications (``notify.user.*``, ``notify.room.*``, ``notify.broadcast``); subscribes to client traffic
  and lifecycle events; may read the presence buckets (filtered watches, direct gets) but never write them.

The presence registry is one entry bucket and ``shards`` shard buckets (:mod:`shared.presence_keys`);
stream names cannot be matched by part of a token, so each bucket is listed.
- ``notification``: the notification service. Creates and updates its three streams, pulls from its
  durable consumer and acks, publishes deliveries (with receipts), inbox copies and dead letters, reads
  and deletes inbox messages, and takes ``client.connect`` events. Nothing else: it does not read the
  presence bucket, answer requests or publish control messages. With ``client_requests=True``
  (``PRISM_NOTIFY_CLIENT_REQUESTS=true``) it also answers ``client.event.notify.self`` requests and
  publishes on ``notify.user.*``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from shared.presence_keys import DEFAULT_SHARDS, Layout

INBOX = "_INBOX.>"


@dataclass(frozen=True, slots=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    allow_responses: bool = True

    def as_config(self) -> dict[str, object]:
        return {
            "publish": {"allow": list(self.publish)},
            "subscribe": {"allow": list(self.subscribe)},
            "allow_responses": self.allow_responses,
        }


def _deliveries(prefix: str) -> tuple[str, ...]:
    """The delivery subjects: backends publish them, nodes subscribe them (docs/protocol.md section 4)."""
    return (f"{prefix}conn.*.*", f"{prefix}user.*", f"{prefix}room.*", f"{prefix}broadcast")


def _kv_read(bucket: str) -> tuple[str, ...]:
    """JetStream API subjects a client publishes to read a KV bucket: bind, watch (ordered consumers),
    get."""
    stream = f"KV_{bucket}"
    return (
        "$JS.API.INFO",
        f"$JS.API.STREAM.INFO.{stream}",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.>",
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
    )


def _history(prefix: str, history: str) -> tuple[str, ...]:
    """What a node publishes for recovery: the history streams' management and direct gets (both
    scopes), and the anchors it writes (docs/protocol.md, "Recovery")."""
    streams = (f"{history}_ROOMS", f"{history}_USERS")
    return (
        *(f"$JS.API.STREAM.{op}.{name}" for name in streams for op in ("INFO", "CREATE", "UPDATE")),
        *(f"$JS.API.DIRECT.GET.{name}" for name in streams),
        f"{prefix}recovery-anchor.*",
    )


def _buckets(bucket: str, shards: int) -> tuple[str, ...]:
    return (bucket, *Layout(bucket, shards).shard_buckets)


def _kv_write(bucket: str) -> tuple[str, ...]:
    """What a gateway publishes to write a presence bucket: keys, the stream's creation and update, and
    filtered purges (a dead node's keys, at once)."""
    stream = f"KV_{bucket}"
    return (
        f"$KV.{bucket}.>",
        f"$JS.API.STREAM.CREATE.{stream}",
        f"$JS.API.STREAM.UPDATE.{stream}",
        f"$JS.API.STREAM.PURGE.{stream}",
    )


def gateway(
    prefix: str = "", bucket: str = "presence", shards: int = DEFAULT_SHARDS, history: str = "RECOVERY"
) -> Permissions:
    buckets = _buckets(bucket, shards)
    return Permissions(
        publish=(
            f"{prefix}client.>",
            f"{prefix}node.>",
            *(s for b in buckets for s in _kv_write(b)),
            *(s for b in buckets for s in _kv_read(b) if s != "$JS.API.INFO"),
            "$JS.API.INFO",
            *_history(prefix, history),
        ),
        subscribe=(
            *_deliveries(prefix),
            f"{prefix}control.conn.*.*.*",
            f"{prefix}control.user.*.*",
            f"{prefix}presence.>",
            f"{prefix}node.>",
            f"{prefix}recovery.>",
            INBOX,
        ),
    )


def backend(prefix: str = "", bucket: str = "presence", shards: int = DEFAULT_SHARDS) -> Permissions:
    buckets = _buckets(bucket, shards)
    return Permissions(
        publish=(
            *_deliveries(prefix),
            f"{prefix}control.>",
            f"{prefix}presence.>",
            f"{prefix}notify.user.*",
            f"{prefix}notify.room.*",
            f"{prefix}notify.broadcast",
            *(s for b in buckets for s in _kv_read(b) if s != "$JS.API.INFO"),
            "$JS.API.INFO",
        ),
        subscribe=(f"{prefix}client.>", INBOX),
    )


def notification(
    prefix: str = "",
    bucket: str = "presence",
    stream: str = "NOTIFICATIONS",
    consumer: str = "prism-notify",
    client_requests: bool = False,
) -> Permissions:
    """The notification service (``prism notify``) with ``PRISM_STREAM`` and ``PRISM_CONSUMER``.

    ``client_requests=True`` is for ``PRISM_NOTIFY_CLIENT_REQUESTS=true``: it also takes the clients'
    ``client.event.notify.self`` requests, publishes them into its own stream on ``notify.user.*`` and
    answers them."""
    streams = (stream, f"{stream}_INBOX", f"{stream}_DEAD")
    if client_requests:
        base = notification(prefix, bucket, stream, consumer)
        return Permissions(
            publish=(*base.publish, f"{prefix}notify.user.*"),
            subscribe=(*base.subscribe, f"{prefix}client.event.notify.self"),
            allow_responses=True,
        )
    return Permissions(
        publish=(
            *_deliveries(prefix),
            f"{prefix}notify.inbox.*",
            f"{prefix}notify.dead.>",
            *(f"$JS.API.STREAM.{op}.{name}" for name in streams for op in ("INFO", "CREATE", "UPDATE")),
            f"$JS.API.CONSUMER.CREATE.{stream}.{consumer}",
            f"$JS.API.CONSUMER.INFO.{stream}.{consumer}",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
            f"$JS.ACK.{stream}.{consumer}.>",
            f"$JS.API.DIRECT.GET.{stream}_INBOX",
            f"$JS.API.STREAM.MSG.DELETE.{stream}_INBOX",
        ),
        subscribe=(f"{prefix}client.connect", INBOX),
        allow_responses=False,
    )


ROLES = {"gateway": gateway, "backend": backend, "notification": notification}
ROLES_WITH_PRESENCE = {"gateway": gateway, "backend": backend}


def render_users(
    passwords: dict[str, str], prefix: str = "", bucket: str = "presence", shards: int = DEFAULT_SHARDS
) -> str:
    """A nats-server ``authorization`` block with one user per role (user name = role name)."""
    lines = ["authorization {", "  users = ["]
    for role in ROLES:
        made = (
            notification(prefix, bucket)
            if role == "notification"
            else ROLES_WITH_PRESENCE[role](prefix, bucket, shards)
        )
        permissions = json.dumps(made.as_config(), indent=2)
        body = permissions.replace("\n", "\n    ")
        lines.append(f'    {{user: "{role}", password: "{passwords[role]}", permissions: {body}}}')
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    args = sys.argv[1:]
    placeholder = {role: f"<{role} password>" for role in ROLES}
    prefix = args[0] if args else ""
    bucket = args[1] if len(args) > 1 else "presence"
    shards = int(args[2]) if len(args) > 2 else DEFAULT_SHARDS
    print(render_users(placeholder, prefix, bucket, shards), end="")
