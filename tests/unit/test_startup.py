"""shared.startup: which failures a start-up step waits out, and that it says what it waits for."""

from __future__ import annotations

import asyncio

import nats.errors
import nats.js.errors
import pytest

from shared.backoff import Backoff
from shared.startup import StartupSteps, is_transient


@pytest.mark.parametrize(
    "exc",
    [
        nats.errors.TimeoutError(),
        nats.errors.NoRespondersError(),
        nats.js.errors.ServiceUnavailableError(code=503, err_code=10008, description="unavailable"),
        nats.js.errors.BadRequestError(
            code=400, err_code=10005, description="no suitable peers for placement"
        ),
        nats.js.errors.NotFoundError(code=404, err_code=10059, description="stream not found"),
        nats.js.errors.BucketNotFoundError(),
    ],
)
def test_what_a_cluster_still_forming_answers_is_transient(exc: Exception) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        nats.js.errors.BadRequestError(code=400, err_code=10058, description="stream name in use"),
        nats.errors.Error("nats: authorization violation"),
        ValueError("a bug"),
    ],
)
def test_what_is_wrong_is_not_waited_out(exc: Exception) -> None:
    assert not is_transient(exc)


async def test_a_step_is_retried_until_it_succeeds_and_reports_what_it_waits_for(
    caplog: pytest.LogCaptureFixture,
) -> None:
    steps = StartupSteps(Backoff(base=0.001, cap=0.002))
    seen: list[str] = []
    failures = [nats.errors.TimeoutError(), nats.js.errors.BucketNotFoundError()]

    async def step() -> str:
        seen.append(steps.waiting)
        if failures:
            raise failures.pop(0)
        return "done"

    assert await steps.run("JetStream to serve the buckets", step) == "done"
    assert seen == ["JetStream to serve the buckets"] * 3
    assert steps.waiting == ""
    waits = [r.getMessage() for r in caplog.records if r.name == "prism.startup"]
    assert len(waits) == 2
    assert waits[0].startswith("waiting for JetStream to serve the buckets (timeout); retrying in")


async def test_a_failure_that_is_not_transient_ends_the_start() -> None:
    async def step() -> None:
        raise nats.js.errors.BadRequestError(code=400, err_code=10058, description="stream name in use")

    with pytest.raises(nats.js.errors.BadRequestError):
        await StartupSteps().run("anything", step)


async def test_a_cancelled_start_stops_waiting() -> None:
    steps = StartupSteps(Backoff(base=10, cap=10))

    async def step() -> None:
        raise nats.errors.TimeoutError

    waiting = asyncio.ensure_future(steps.run("NATS", step))
    await asyncio.sleep(0)  # let it fail once and start its backoff
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
