"""The client's reconnect policy: which failures are worth another attempt, which URL comes next, and how
long to wait before it (:class:`shared.backoff.Backoff`, exponential with full jitter).

Retried: a close that allows reconnecting (:func:`shared.close_codes.should_reconnect`) and a failed
attempt that may go away on its own (refused TCP, timeout, HTTP 408/429/5xx). Everything else is terminal.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence

from websockets.exceptions import InvalidMessage, InvalidStatus

from shared.backoff import Backoff, BackoffSchedule
from shared.client.link import Link
from shared.client.state import ConnState, StateChange
from shared.close_codes import CloseCode, should_reconnect
from shared.errors import ConnectFailed, ConnectionLost

log = logging.getLogger("prism.client")

# HTTP answers to the upgrade that may go away on their own (a draining or overloaded node answers 503).
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Refused handshakes reported with the close code of the same meaning.
_STATUS_CLOSE_CODES = {401: CloseCode.UNAUTHORIZED, 403: CloseCode.FORBIDDEN}


def retryable(error: BaseException) -> bool:
    """Whether a failed connection attempt may succeed when tried again.

    Retry: refused or failed TCP connects and timeouts (``OSError``), handshakes cut off
    (``InvalidMessage``), HTTP 408/429/500/502/503/504, and a connection closed before its welcome
    with a code that allows reconnecting. Everything else is terminal: other HTTP statuses (400 bad
    user, 401/403 auth, 404 unknown route), a bad URI, a peer that is not a Prism node.
    """
    if isinstance(error, InvalidStatus):
        return error.response.status_code in RETRY_STATUSES
    if isinstance(error, ConnectionLost):
        return should_reconnect(error.code)
    return isinstance(error, (OSError, InvalidMessage))  # TimeoutError is an OSError


def terminal_failure(error: BaseException, attempts: int) -> ConnectFailed:
    """The :class:`ConnectFailed` reported when ``error`` stops a reconnecting client."""
    if isinstance(error, InvalidStatus):
        status = error.response.status_code
        body = error.response.body.decode(errors="replace").strip() if error.response.body else ""
        reason = f"handshake refused with HTTP {status}" + (f": {body:.200}" if body else "")
        return ConnectFailed(_STATUS_CLOSE_CODES.get(status), reason, status=status, attempts=attempts)
    if isinstance(error, ConnectionLost):
        return ConnectFailed(error.code, error.reason, attempts=attempts)
    return ConnectFailed(None, f"{type(error).__name__}: {error}", attempts=attempts)


class Reconnect:
    """One client's attempts: the URL to try next and, with a ``backoff``, the delay before it.

    Without a backoff each URL is tried once, in turn, and the last error is raised as is; with one,
    attempts go on (moving to the next URL each time) until one succeeds, a failure is terminal
    (:class:`ConnectFailed`) or the policy's ``max_attempts`` runs out."""

    def __init__(self, urls: Sequence[str], backoff: Backoff | None, randomize: bool) -> None:
        self.urls = tuple(urls)
        self.backoff = backoff
        self._schedule: BackoffSchedule | None = backoff.schedule() if backoff is not None else None
        self.next_url = random.randrange(len(self.urls)) if randomize and len(self.urls) > 1 else 0

    def after(self, lost: ConnectionLost) -> bool:
        """Whether a connection that ended with ``lost`` is to be replaced by a new one."""
        return self._schedule is not None and should_reconnect(lost.code)

    def moved_on_from(self, link: Link) -> None:
        """The next attempt goes to the URL after ``link``'s."""
        self.next_url = (link.index + 1) % len(self.urls)

    def _advance(self) -> None:
        self.next_url = (self.next_url + 1) % len(self.urls)

    async def establish(
        self,
        open_link: Callable[[int], Awaitable[Link]],
        emit: Callable[[StateChange], None],
        cause: ConnectionLost | None,
        closing: Callable[[], ConnectionLost | None],
    ) -> Link:
        """``open_link(index)`` of the next URL until one succeeds, reporting each attempt to ``emit``.
        ``cause``: the close that started this outage (None for the first connection). ``closing``: what
        the caller's ``close()`` asked for, if it did (it stops the attempts)."""
        schedule = self._schedule
        state = ConnState.CONNECTING if cause is None else ConnState.RECONNECTING
        code, reason = (cause.code, cause.reason) if cause is not None else (None, "")
        if schedule is None:  # one attempt per URL, raw errors
            for attempt in range(1, len(self.urls) + 1):
                index = self.next_url
                emit(StateChange(state, url=self.urls[index], attempt=attempt, delay=0.0))
                try:
                    return await open_link(index)
                except Exception as exc:
                    if attempt == len(self.urls) or not retryable(exc):
                        raise
                    self._advance()
            raise AssertionError("unreachable")
        error: BaseException | None = None
        while True:
            if (closed := closing()) is not None:
                raise closed
            delay = schedule.next_delay()
            if delay is None:
                raise ConnectFailed(
                    code, f"gave up after {schedule.attempt} attempts: {error!r}", attempts=schedule.attempt
                ) from error
            if cause is None and schedule.attempt == 1:
                delay = 0.0  # the very first connection is tried at once
            index = self.next_url
            emit(StateChange(state, self.urls[index], schedule.attempt, delay, code, reason, error))
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                link = await open_link(index)
            except Exception as exc:
                if not retryable(exc):
                    raise terminal_failure(exc, schedule.attempt) from exc
                log.debug("attempt %d on %s failed: %r", schedule.attempt, self.urls[index], exc)
                error = exc
                self._advance()
                continue
            schedule.reset()
            return link
