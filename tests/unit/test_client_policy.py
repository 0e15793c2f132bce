"""Tests for the client SDK's pure decisions: which failed connection attempts are retried, and what a
terminal one is reported as."""

from __future__ import annotations

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import InvalidHeader, InvalidMessage, InvalidStatus, InvalidURI
from websockets.http11 import Response

from shared.client import retryable, terminal_failure, with_user
from shared.errors import ClientError, ConnectFailed, ConnectionLost


def refused(status: int, body: bytes = b"") -> InvalidStatus:
    return InvalidStatus(Response(status, "", Headers(), body))


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_http_statuses_are_retried(status: int) -> None:
    assert retryable(refused(status))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 426])
def test_other_http_statuses_are_terminal(status: int) -> None:
    assert not retryable(refused(status))


@pytest.mark.parametrize(
    "error",
    [ConnectionRefusedError(111, "refused"), TimeoutError(), OSError("unreachable"), InvalidMessage("cut")],
)
def test_network_failures_are_retried(error: Exception) -> None:
    assert retryable(error)


@pytest.mark.parametrize(
    ("code", "retry"),
    [(1012, True), (1013, True), (1006, True), (None, True), (4001, True), (1008, False), (4500, False)],
)
def test_a_close_before_the_welcome_follows_the_close_code_policy(code: int | None, retry: bool) -> None:
    assert retryable(ConnectionLost(code, "")) is retry


@pytest.mark.parametrize(
    "error", [InvalidURI("x", "bad"), InvalidHeader("Upgrade"), ClientError("no welcome"), ValueError("?")]
)
def test_anything_else_is_terminal(error: Exception) -> None:
    assert not retryable(error)


@pytest.mark.parametrize(("status", "code"), [(401, 4501), (403, 4503), (400, None), (404, None)])
def test_a_refused_handshake_is_reported_with_its_status(status: int, code: int | None) -> None:
    failure = terminal_failure(refused(status, b"invalid user: nope\n"), attempts=2)
    assert isinstance(failure, ConnectFailed)
    assert isinstance(failure, ConnectionLost)
    assert (failure.status, failure.code, failure.attempts) == (status, code, 2)
    assert failure.reason == f"handshake refused with HTTP {status}: invalid user: nope"


def test_a_terminal_close_before_the_welcome_keeps_its_code() -> None:
    failure = terminal_failure(ConnectionLost(4500, "kicked"), attempts=1)
    assert (failure.code, failure.reason, failure.status) == (4500, "kicked", None)
    assert "could not connect" in str(failure)


def test_user_is_appended_to_the_query() -> None:
    assert with_user("ws://h/ws", "alice") == "ws://h/ws?user=alice"
    assert with_user("ws://h/ws?x=1", "a b") == "ws://h/ws?x=1&user=a+b"
