"""Tests for shared.close_codes: which closes mean reconnect, which are terminal, and what each means."""

from __future__ import annotations

import pytest

from shared.close_codes import BACKEND_CLOSE_CODES, MEANINGS, RECONNECT_CODES, CloseCode, should_reconnect

TERMINAL_CODES = frozenset(CloseCode) - RECONNECT_CODES


def test_every_code_has_a_meaning() -> None:
    assert set(MEANINGS) == set(CloseCode)
    for code in CloseCode:
        assert code.meaning == MEANINGS[code]
        assert code.meaning.strip()


def test_meanings_are_distinct() -> None:
    assert len(set(MEANINGS.values())) == len(MEANINGS)


@pytest.mark.parametrize(
    "code",
    [
        CloseCode.GOING_AWAY,
        CloseCode.INTERNAL_ERROR,
        CloseCode.SERVICE_RESTART,
        CloseCode.TRY_AGAIN_LATER,
        CloseCode.SLOW_CONSUMER,
        CloseCode.BACKEND_RECONNECT,
    ],
)
def test_going_away_restart_and_overload_codes_reconnect(code: CloseCode) -> None:
    assert code.reconnect
    assert should_reconnect(int(code))


@pytest.mark.parametrize(
    "code",
    [
        CloseCode.NORMAL,
        CloseCode.PROTOCOL_ERROR,
        CloseCode.INVALID_DATA,
        CloseCode.POLICY_VIOLATION,
        CloseCode.MESSAGE_TOO_BIG,
        CloseCode.CLOSED_BY_BACKEND,
        CloseCode.UNAUTHORIZED,
        CloseCode.FORBIDDEN,
    ],
)
def test_policy_auth_and_normal_codes_are_terminal(code: CloseCode) -> None:
    assert not code.reconnect
    assert not should_reconnect(int(code))


def test_reconnect_and_terminal_sets_partition_every_code() -> None:
    assert set(CloseCode) >= RECONNECT_CODES
    assert set(CloseCode) == RECONNECT_CODES | TERMINAL_CODES
    assert not RECONNECT_CODES & TERMINAL_CODES
    assert RECONNECT_CODES
    assert TERMINAL_CODES


def test_prism_codes_follow_the_documented_ranges() -> None:
    for code in CloseCode:
        if 4000 <= code < 4500:
            assert code.reconnect, code
        elif 4500 <= code < 5000:
            assert not code.reconnect, code


def test_slow_consumer_is_a_prism_code() -> None:
    assert CloseCode.SLOW_CONSUMER.value == 4001
    assert "slow" in CloseCode.SLOW_CONSUMER.meaning


def test_service_restart_is_1012() -> None:
    assert CloseCode.SERVICE_RESTART.value == 1012


@pytest.mark.parametrize("code", [None, 1006])
def test_abnormal_closure_reconnects(code: int | None) -> None:
    assert should_reconnect(code)


@pytest.mark.parametrize("code", [4000, 4003, 4100, 4499])
def test_unknown_codes_in_the_reconnect_range_reconnect(code: int) -> None:
    assert should_reconnect(code)


@pytest.mark.parametrize("code", [4500, 4502, 4600, 4999])
def test_unknown_codes_in_the_terminal_range_do_not_reconnect(code: int) -> None:
    assert not should_reconnect(code)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1010, 1015, 2000, 3000, 3999, 5000, 65535, -1])
def test_unknown_codes_outside_prism_ranges_do_not_reconnect(code: int) -> None:
    assert not should_reconnect(code)


def test_backend_close_codes_exclude_gateway_only_codes() -> None:
    assert CloseCode.NORMAL in BACKEND_CLOSE_CODES
    assert CloseCode.SERVICE_RESTART in BACKEND_CLOSE_CODES
    assert CloseCode.CLOSED_BY_BACKEND in BACKEND_CLOSE_CODES
    assert CloseCode.PROTOCOL_ERROR not in BACKEND_CLOSE_CODES
    assert CloseCode.INVALID_DATA not in BACKEND_CLOSE_CODES
    assert CloseCode.MESSAGE_TOO_BIG not in BACKEND_CLOSE_CODES
    assert 1006 not in BACKEND_CLOSE_CODES
    assert set(range(4000, 5000)) <= BACKEND_CLOSE_CODES
