"""Starting while NATS or JetStream is not ready yet: wait for each step, say what it waits for, retry.

A whole cluster often starts at once (a ``helm install``): nats-servers still electing JetStream's meta
leader, streams being created by another node in the same instant, a stream leader being elected. None
of that is an error for a Prism process. Each start-up step that needs JetStream runs through
:class:`StartupSteps`, which retries it with exponential backoff and full jitter while the failure is a
transient one, logs one line per attempt saying what it waits for and why, and keeps the reason where
``/readyz`` reports it (503 ``starting: waiting for ...``). A signal cancels the wait at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
import nats.js.errors

from shared.backoff import Backoff

log = logging.getLogger("prism.startup")

T = TypeVar("T")

# Failures that mean "not yet": no meta leader or stream leader (503, timeouts, no responders), a stream
# that another process is creating or that is moving to a new leader.
TRANSIENT: tuple[type[BaseException], ...] = (
    nats.errors.TimeoutError,
    TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.ServerError,
    nats.js.errors.NoStreamResponseError,
)
# JetStream API errors that a cluster still forming gives: 10005 "no suitable peers for placement" (the
# meta leader does not know enough servers yet for the replicas asked for), 10008 "JetStream system
# temporarily unavailable", 10059 "stream not found" (another process's create is not done).
TRANSIENT_API_ERRORS = frozenset({10005, 10008, 10059})


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` says JetStream (or NATS) is not ready yet, rather than that something is wrong."""
    if isinstance(exc, (*TRANSIENT, nats.js.errors.BucketNotFoundError)):
        return True
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code in TRANSIENT_API_ERRORS


def describe(exc: BaseException) -> str:
    """A short reason for a log line: the error's text, or its type when it has none."""
    text = str(exc).removeprefix("nats: ").strip()
    return text or type(exc).__name__


class StartupSteps:
    """Runs start-up steps, each until it succeeds; :attr:`waiting` names the one under way."""

    def __init__(self, backoff: Backoff | None = None) -> None:
        self.backoff = backoff or Backoff(base=0.5, cap=5.0)
        self.waiting = ""

    async def run(self, what: str, step: Callable[[], Awaitable[T]]) -> T:
        """``await step()``, again after a transient failure, until it succeeds. ``what`` completes the
        sentence "waiting for ..." in the log and in ``/readyz``."""
        self.waiting = what
        schedule = self.backoff.schedule()
        while True:
            try:
                result = await step()
            except Exception as exc:  # only the transient ones are waited out; the rest end the start
                if not is_transient(exc):
                    raise
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # nats-py turns a cancelled wait into a timeout
                    raise asyncio.CancelledError from None
                delay = schedule.next_delay() or self.backoff.cap
                log.warning("waiting for %s (%s); retrying in %.1fs", what, describe(exc), delay)
                await asyncio.sleep(delay)
                continue
            self.waiting = ""
            return result
