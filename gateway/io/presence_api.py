"""Presence queries over NATS request/reply, answered by any node from the KV bucket.

Every node subscribes ``presence.>`` in the queue group ``prism-presence``, so each query is answered
once, by whichever node NATS picks. Answers come from server-side filtered watches
(:mod:`shared.presence`), never from a scan of the bucket, and not from the answering node's memory: a
query sees the whole cluster.

    presence.user.<user>   -> {"user","online","connections":[{"conn","node","connected_at"}]}
    presence.room.<room>   -> {"room","count","users":[...],"members":[{"conn","node","user","joined_at"}]}
    presence.online        {"users":[...]} -> {"online":{"<user>":true|false}}
    presence.cluster       -> {"nodes":[{"node","started_at","connections","users","rooms"}],
                               "totals":{"nodes","connections"}}

A bad query gets ``{"error":"<code>","message":"..."}``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from nats.js.kv import KeyValue

from gateway.io.bus import Bus, Headers, SubscriptionHandle
from shared import presence
from shared.errors import InvalidName
from shared.subjects import MAX_ONLINE_QUERY_USERS, PRESENCE_QUEUE, Subjects, validate_user_id

log = logging.getLogger("prism.presence_api")


class QueryError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class PresenceApi:
    def __init__(self, bus: Bus, kv: KeyValue, subjects: Subjects) -> None:
        self.bus = bus
        self.kv = kv
        self.subjects = subjects
        self._offset = len(subjects.prefix) + len("presence.")
        self._sub: SubscriptionHandle | None = None

    async def start(self) -> None:
        self._sub = await self.bus.subscribe(
            self.subjects.presence_queries, self.on_query, queue=PRESENCE_QUEUE
        )

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def on_query(self, subject: str, reply: str, data: bytes, headers: Headers | None) -> None:
        if not reply:
            return  # a query nobody waits for
        try:
            answer = await self.answer(subject[self._offset :], data)
        except QueryError as exc:
            answer = {"error": exc.code, "message": exc.message}
        except InvalidName as exc:
            answer = {"error": "invalid_name", "message": str(exc)}
        except Exception as exc:  # the registry is unreachable: say so rather than time the caller out
            log.warning("presence query %s failed: %s", subject, exc)
            answer = {"error": "unavailable", "message": f"presence registry unavailable: {exc}"}
        await self.bus.publish(reply, orjson.dumps(answer))

    async def answer(self, query: str, data: bytes) -> dict[str, Any]:
        kind, _, name = query.partition(".")
        if kind == "user" and name:
            conns = await presence.user_connections(self.kv, name)
            listed = sorted(conns.values(), key=lambda c: (c.get("connected_at", ""), c.get("conn", "")))
            return {"user": name, "online": bool(conns), "connections": listed}
        if kind == "room" and name:
            members = await presence.room_members(self.kv, name)
            listed = sorted(members.values(), key=lambda m: m.get("conn", ""))
            users = sorted({m["user"] for m in listed if isinstance(m.get("user"), str)})
            return {"room": name, "count": len(listed), "users": users, "members": listed}
        if kind == "online" and not name:
            users = _users_of(data)
            found = await asyncio.gather(*(presence.user_online(self.kv, user) for user in users))
            return {"online": dict(zip(users, found, strict=True))}
        if kind == "cluster" and not name:
            nodes = sorted((await presence.cluster_nodes(self.kv)).values(), key=lambda n: n.get("node", ""))
            connections = sum(int(n.get("connections", 0)) for n in nodes)
            return {"nodes": nodes, "totals": {"nodes": len(nodes), "connections": connections}}
        raise QueryError(
            "unknown_query",
            f"unknown presence query {query!r}; expected user.<id>, room.<name>, online or cluster",
        )


def _users_of(data: bytes) -> list[str]:
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise QueryError("invalid_json", f"query body is not JSON: {exc}") from None
    users = body.get("users") if isinstance(body, dict) else None
    if not isinstance(users, list):
        raise QueryError("invalid_query", 'expected {"users": ["<id>", ...]}')
    if len(users) > MAX_ONLINE_QUERY_USERS:
        raise QueryError("too_many_users", f"at most {MAX_ONLINE_QUERY_USERS} users per query")
    return list(dict.fromkeys(validate_user_id(u) for u in users))
