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
        """Return once every given change (and any made meanwhile) is reflected in NATS subscriptions."""
        for change in changes:
            self._dirty.add((change.scope, change.name))
        if not self._dirty:
            return
        async with self._lock:
            while self._dirty:
                key = self._dirty.pop()
                await self._reconcile(key)

    async def _reconcile(self, key: Key) -> None:
        scope, name = key
        want, have = self._wants(scope, name), key in self._subs
        if want and not have:
            subject = self._subject_of(scope, name)
            self._subs[key] = await self._bus.subscribe(subject, self._handler_of(scope))
        elif have and not want:
            sub = self._subs.pop(key)
            try:
                await sub.unsubscribe()
            except Exception as exc:  # the connection may be closing; the server forgets it anyway
                log.debug("unsubscribe %s failed: %s", key, exc)
