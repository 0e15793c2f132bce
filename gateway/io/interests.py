"""Keep the node's NATS subscriptions for rooms and users equal to what the hub wants.

The hub says when interest starts or ends (:class:`gateway.core.hub.Interest`); this applies the change.
Changes are reconciled one at a time against the hub's current wish, so a join racing a leave of the
same room can never leave a subscription behind or miss one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

from gateway.core.hub import Interest, Scope
from gateway.io.bus import Bus, Handler, SubscriptionHandle

log = logging.getLogger("prism.interests")

Key = tuple[Scope, str]
FLUSH_TIMEOUT = 2.0  # seconds a subscription waits for the server's word before going on without it


class InterestSync:
    def __init__(
        self,
        bus: Bus,
        wants: Callable[[Scope, str], bool],
        subject_of: Callable[[Scope, str], str],
        handler_of: Callable[[Scope], Handler],
    ) -> None:
        self._bus = bus
        self._wants = wants
        self._subject_of = subject_of
        self._handler_of = handler_of
        self._subs: dict[Key, SubscriptionHandle] = {}
        self._dirty: set[Key] = set()
        self._lock = asyncio.Lock()

    async def apply(self, changes: Iterable[Interest]) -> None:
        """Return once every given change (and any made meanwhile) is reflected in NATS subscriptions: a
        new subscription is in the server's hands (a flush), so what is published after this returns
        reaches it, whichever connection publishes it (the welcome and a join's ``ok`` promise that)."""
        for change in changes:
            self._dirty.add((change.scope, change.name))
        if not self._dirty:
            return
        subscribed = False
        async with self._lock:
            while self._dirty:
                key = self._dirty.pop()
                subscribed |= await self._reconcile(key)
        if subscribed and self._bus.connected:
            try:
                await self._bus.flush(FLUSH_TIMEOUT)
            except Exception as exc:  # NATS going away: the subscription is re-sent on reconnect
                log.debug("flush after subscribing failed: %r", exc)

    async def _reconcile(self, key: Key) -> bool:
        """Subscribe or unsubscribe ``key`` as the hub wants; True if it subscribed."""
        scope, name = key
        want, have = self._wants(scope, name), key in self._subs
        if want and not have:
            subject = self._subject_of(scope, name)
            self._subs[key] = await self._bus.subscribe(subject, self._handler_of(scope))
            return True
        if have and not want:
            sub = self._subs.pop(key)
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection may be closing; the server forgets it anyway
                log.debug("unsubscribe %s failed: %s", key, exc)
        return False
