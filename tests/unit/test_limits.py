"""Tests for gateway.core.limits: token buckets, inbound guards, connection counts, origins, JSON nesting.

Pure tests: time is a number the test passes in, so nothing sleeps.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import GatewayConfig
from gateway.core.limits import (
    ConnectionCounts,
    InboundGuard,
    OriginPolicy,
    RatePolicy,
    Reason,
    TokenBucket,
    Verdict,
    effective_max_connections,
    nesting_depth,
    nesting_exceeds,
    origin_pattern_error,
    retry_after,
)
from shared.config import add_arguments, load
from shared.errors import ConfigError

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None)

# Non-decreasing instants, as a monotonic clock gives them: gaps from 0 to 2 s.
_gaps = st.lists(st.floats(min_value=0, max_value=2, allow_nan=False), max_size=200)


def instants(gaps: list[float], start: float = 100.0) -> list[float]:
    now, out = start, []
    for gap in gaps:
        now += gap
        out.append(now)
    return out


# -- token bucket ----------------------------------------------------------------------------------------


def test_a_bucket_gives_its_burst_at_once_then_refuses() -> None:
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]


def test_a_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = TokenBucket(rate=10, burst=3, now=0.0)
    for _ in range(3):
        assert bucket.take(0.0)
    assert not bucket.take(0.05)  # half a token
    assert bucket.take(0.1)
    assert not bucket.take(0.1)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]  # capped at the burst


def test_wait_says_when_the_next_token_comes() -> None:
    bucket = TokenBucket(rate=4, burst=1, now=0.0)
    assert bucket.wait(0.0) == 0.0
    assert bucket.take(0.0)
    assert bucket.wait(0.0) == pytest.approx(0.25)
    assert bucket.wait(0.2) == pytest.approx(0.05)


def test_a_clock_going_backwards_refills_nothing() -> None:
    bucket = TokenBucket(rate=100, burst=1, now=10.0)
    assert bucket.take(10.0)
    assert not bucket.take(5.0)
    assert not bucket.take(10.0)
    assert bucket.take(10.02)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 5), (1, 0), (math.nan, 1)])
def test_a_bucket_needs_a_positive_rate_and_a_burst_of_one(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="token bucket"):
        TokenBucket(rate, burst, 0.0)


@PROPERTY_SETTINGS
@given(
    st.floats(min_value=0.01, max_value=1e4, allow_nan=False),
    st.integers(min_value=1, max_value=1000),
    _gaps,
)
def test_a_bucket_never_gives_more_than_its_burst_plus_its_rate(
    rate: float, burst: int, gaps: list[float]
) -> None:
    bucket = TokenBucket(rate, burst, 100.0)
    times = instants(gaps)
    taken = sum(bucket.take(now) for now in times)
    elapsed = (times[-1] - 100.0) if times else 0.0
    assert taken <= burst + rate * elapsed + 1e-6
    assert 0 <= bucket.tokens <= burst


# -- inbound guard ---------------------------------------------------------------------------------------

POLICY = RatePolicy(rate=10, burst=5, max_violations=3, window=10.0)


def test_a_guard_passes_the_burst_then_drops_then_closes() -> None:
    guard = InboundGuard(POLICY, 0.0)
    verdicts = [guard.admit(POLICY, 0.0) for _ in range(8)]
    assert verdicts == [Verdict.PASS] * 5 + [Verdict.DROP, Verdict.DROP, Verdict.CLOSE]


def test_a_guard_forgives_violations_after_the_window() -> None:
    guard = InboundGuard(POLICY, 0.0)
    for _ in range(5):
        guard.admit(POLICY, 0.0)
    assert guard.admit(POLICY, 0.0) is Verdict.DROP
    assert guard.admit(POLICY, 0.01) is Verdict.DROP
    # 20 s later the bucket is full again and the old violations no longer count.
    for _ in range(5):
        assert guard.admit(POLICY, 20.0) is Verdict.PASS
    assert guard.admit(POLICY, 20.0) is Verdict.DROP
    assert guard.admit(POLICY, 20.0) is Verdict.DROP
    assert guard.admit(POLICY, 20.0) is Verdict.CLOSE


def test_a_guard_at_the_rate_is_never_dropped() -> None:
    guard = InboundGuard(POLICY, 0.0)
    assert all(guard.admit(POLICY, i * 0.1) is Verdict.PASS for i in range(1000))


def test_a_guard_without_a_rate_passes_everything_and_still_tracks_idleness() -> None:
    off = RatePolicy(rate=0, burst=1, max_violations=1, window=1.0)
    assert not off.enabled
    guard = InboundGuard(off, 0.0)
    assert all(guard.admit(off, 5.0) is Verdict.PASS for _ in range(10_000))
    assert guard.idle_for(5.0) == 0.0
    assert guard.idle_for(12.5) == 7.5
    assert guard.idle_for(1.0) == 0.0  # never negative


@PROPERTY_SETTINGS
@given(
    st.floats(min_value=0.1, max_value=1000, allow_nan=False),
    st.integers(min_value=1, max_value=50),
    st.integers(min_value=1, max_value=20),
    st.floats(min_value=0.1, max_value=30, allow_nan=False),
    _gaps,
)
def test_a_guard_passes_at_most_burst_plus_rate_and_closes_only_after_enough_drops(
    rate: float, burst: int, max_violations: int, window: float, gaps: list[float]
) -> None:
    policy = RatePolicy(rate, burst, max_violations, window)
    guard = InboundGuard(policy, 100.0)
    times = instants(gaps)
    verdicts = [guard.admit(policy, now) for now in times]
    elapsed = (times[-1] - 100.0) if times else 0.0
    assert verdicts.count(Verdict.PASS) <= burst + rate * elapsed + 1e-6
    for i, verdict in enumerate(verdicts):
        if verdict is Verdict.CLOSE:
            recent = [
                v for t, v in zip(times[: i + 1], verdicts[: i + 1], strict=True) if t >= times[i] - window
            ]
            assert sum(v is not Verdict.PASS for v in recent) >= max_violations
    assert 0 <= guard.tokens <= burst


# -- connection counts -----------------------------------------------------------------------------------


def test_counts_refuse_over_the_node_limit_first_then_over_the_address_limit() -> None:
    counts = ConnectionCounts(max_total=3, max_per_ip=2)
    counts.acquire("a")
    counts.acquire("a")
    assert counts.refusal("a") is Reason.MAX_CONNECTIONS_PER_IP
    assert counts.refusal("b") is None
    counts.acquire("b")
    assert counts.refusal("b") is Reason.MAX_CONNECTIONS
    counts.release("a")
    assert counts.refusal("a") is None
    assert counts.total == 2
    assert counts.per_ip == {"a": 1, "b": 1}


def test_zero_means_no_limit_and_no_per_address_table() -> None:
    counts = ConnectionCounts(max_total=0, max_per_ip=0)
    for _ in range(10_000):
        assert counts.refusal("a") is None
        counts.acquire("a")
    assert counts.total == 10_000
    assert counts.per_ip == {}


def test_releasing_more_than_was_acquired_never_goes_negative() -> None:
    counts = ConnectionCounts(max_total=2, max_per_ip=1)
    counts.release("a")
    assert counts.total == 0
    assert counts.per_ip == {}


@PROPERTY_SETTINGS
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(["a", "b", "c"])), max_size=300))
def test_counts_follow_acquires_and_releases_exactly(ops: list[tuple[bool, str]]) -> None:
    counts = ConnectionCounts(max_total=5, max_per_ip=2)
    held: dict[str, int] = {}
    for acquire, ip in ops:
        if acquire:
            if counts.refusal(ip) is None:
                counts.acquire(ip)
                held[ip] = held.get(ip, 0) + 1
        elif held.get(ip):
            counts.release(ip)
            held[ip] -= 1
        assert counts.total == sum(held.values()) <= 5
        assert counts.per_ip == {ip: n for ip, n in held.items() if n}
        assert all(n <= 2 for n in counts.per_ip.values())


@pytest.mark.parametrize(
    ("configured", "files", "expected"),
    [(100, 20_000, 100), (0, 20_000, 18_000), (0, 1024, 921), (0, None, 0), (0, 1, 1), (7, None, 7)],
)
def test_the_node_cap_defaults_to_most_of_the_open_files_limit(
    configured: int, files: int | None, expected: int
) -> None:
    assert effective_max_connections(configured, files) == expected


# -- origins ---------------------------------------------------------------------------------------------


def test_no_patterns_allow_any_origin() -> None:
    policy = OriginPolicy([])
    assert policy.allows(["https://evil.example"])
    assert policy.allows([])
    assert policy.allows(["a", "b"])


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.com", True),
        ("HTTPS://APP.EXAMPLE.COM", True),
        ("https://app.example.com:443", False),
        ("http://app.example.com", False),
        ("https://eu.example.com", True),
        ("https://a.b.example.com", True),
        ("https://example.com", False),
        ("https://evilexample.com", False),
        ("https://example.com.evil.net", False),
        ("https://evil.net/x.example.com", False),
        ("https://evil.net?.example.com", False),
        ("http://localhost:3000", True),
        ("http://localhost", False),
        ("http://localhost.evil.net:3000", False),
        ("null", False),
        ("", False),
    ],
)
def test_origins_match_exactly_or_by_pattern(origin: str, allowed: bool) -> None:
    policy = OriginPolicy(["https://app.example.com", "https://*.example.com", "http://localhost:*"])
    assert policy.allows([origin]) is allowed


def test_requests_without_origin_pass_and_with_two_origins_are_refused() -> None:
    policy = OriginPolicy(["https://app.example.com"])
    assert policy.allows([])
    assert not policy.allows(["https://app.example.com", "https://app.example.com"])


def test_null_origin_passes_only_when_listed() -> None:
    assert OriginPolicy(["null"]).allows(["null"])
    assert not OriginPolicy(["https://a.example"]).allows(["null"])


@pytest.mark.parametrize(
    "pattern", ["https://app.example.com", "http://*:8080", "https://[::1]:8443", "NULL", "*"]
)
def test_good_origin_patterns(pattern: str) -> None:
    assert origin_pattern_error(pattern) is None


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        ("http://localhost:8080", "localhost:8080", True),
        ("http://LOCALHOST:8080", "localhost:8080", True),
        ("https://chat.example.com", "chat.example.com", True),  # TLS ended by a proxy: port 443 both
        ("https://chat.example.com", "chat.example.com:443", True),
        ("http://chat.example.com", "chat.example.com:80", True),
        ("http://[::1]:8080", "[::1]:8080", True),
        ("http://localhost:8081", "localhost:8080", False),  # another port is another origin
        ("http://localhost", "localhost:8080", False),
        ("https://chat.example.com", "chat.example.com:80", False),
        ("https://evil.example", "chat.example.com", False),
        ("https://chat.example.com.evil.net", "chat.example.com", False),
        ("null", "localhost:8080", False),
        ("file://", "localhost:8080", False),
        ("http://localhost:8080/x", "localhost:8080", False),
        ("http://user@localhost:8080", "localhost:8080", False),
        ("http://localhost:99999", "localhost:99999", False),
        ("http://localhost:x", "localhost:x", False),
        ("http://localhost:8080", "", False),
    ],
)
def test_with_same_origin_default_only_the_requests_own_origin_passes(
    origin: str, host: str, allowed: bool
) -> None:
    policy = OriginPolicy([], same_origin_default=True)
    assert policy.allows([origin], [host]) is allowed
    assert policy.allows([], [host])  # not a browser
    assert not policy.allows([origin], [])  # no Host: nothing to be the same as
    assert not policy.allows([origin], [host, host])
    assert not policy.allows([origin, origin], [host])


def test_a_star_allows_any_origin_and_a_list_replaces_the_same_origin_default() -> None:
    assert OriginPolicy(["*"], same_origin_default=True).allows(["https://evil.example"], ["a:1"])
    assert OriginPolicy(["https://x.example", "*"]).allows(["null"])
    listed = OriginPolicy(["https://app.example.com"], same_origin_default=True)
    assert listed.allows(["https://app.example.com"], ["gw.example.com"])
    assert not listed.allows(["https://gw.example.com"], ["gw.example.com"])  # only the list counts


@pytest.mark.parametrize("pattern", ["example.com", "**", "https://", "https://a/b", "https://a b", "//x"])
def test_bad_origin_patterns_say_what_an_origin_looks_like(pattern: str) -> None:
    problem = origin_pattern_error(pattern)
    assert problem is not None
    assert "scheme://host[:port]" in problem
    with pytest.raises(ValueError, match="allowed origin"):
        OriginPolicy([pattern])


@PROPERTY_SETTINGS
@given(st.lists(st.text(max_size=40), max_size=3))
def test_any_origin_header_values_get_an_answer(origins: list[str]) -> None:
    policy = OriginPolicy(["https://*.example.com", "https://app.example.org"])
    answer = policy.allows(origins)
    assert isinstance(answer, bool)
    if answer and origins:
        assert len(origins) == 1
        origin = origins[0].strip().lower()
        assert origin == "https://app.example.org" or (
            origin.startswith("https://") and origin.endswith(".example.com") and "/" not in origin[8:]
        )


# -- JSON nesting ----------------------------------------------------------------------------------------


def reference_depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((reference_depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((reference_depth(v) for v in value.values()), default=0)
    return 0


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("1", 0),
        ('"[[[["', 0),
        ("[]", 1),
        ('{"a":[1,{"b":[]}]}', 4),
        ('{"a":"]]]]}}}","b":[["\\"[["]]}', 3),
        ('["\\\\",[["\\\\\\"]"]]]', 3),
        ("[" * 5000, 5000),
        ("]]]][[", 0),
        ('["unterminated [[[', 4),
    ],
)
def test_nesting_counts_brackets_outside_strings(text: str, depth: int) -> None:
    assert nesting_depth(text) == depth


def test_the_fast_path_skips_texts_with_few_brackets() -> None:
    assert not nesting_exceeds('{"a":[[[["x"]]]]}', 5)
    assert nesting_exceeds('{"a":[[[[["x"]]]]]}', 5)
    assert not nesting_exceeds('{"a":"' + "[" * 100 + '"}', 5)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=40,
)


@PROPERTY_SETTINGS
@given(_json, st.integers(min_value=0, max_value=12))
def test_nesting_of_json_matches_its_parsed_depth(value: Any, limit: int) -> None:
    text = json.dumps(value)
    assert nesting_depth(text) == reference_depth(value)
    assert nesting_exceeds(text, limit) is (reference_depth(value) > limit)


@PROPERTY_SETTINGS
@given(st.text(), st.integers(min_value=0, max_value=50))
def test_nesting_of_any_text_is_a_number_and_never_raises(text: str, limit: int) -> None:
    depth = nesting_depth(text)
    assert 0 <= depth <= text.count("[") + text.count("{")
    assert nesting_exceeds(text, limit) is (depth > limit)


@pytest.mark.parametrize(("seconds", "header"), [(0.0, "1"), (0.01, "1"), (1.0, "1"), (1.2, "2"), (7.0, "7")])
def test_retry_after_is_whole_seconds_at_least_one(seconds: float, header: str) -> None:
    assert retry_after(seconds) == header


# -- settings --------------------------------------------------------------------------------------------


def test_limit_settings_are_read_from_the_environment() -> None:
    config = load(
        GatewayConfig,
        None,
        environ={
            "PRISM_ALLOWED_ORIGINS": "https://app.example.com, http://localhost:*",
            "PRISM_HANDSHAKE_TIMEOUT": "2.5",
            "PRISM_MAX_CONNECTIONS": "10000",
            "PRISM_MAX_CONNECTIONS_PER_IP": "50",
            "PRISM_ACCEPT_RATE": "200",
            "PRISM_ACCEPT_BURST": "400",
            "PRISM_MESSAGE_RATE": "0",
            "PRISM_MESSAGE_BURST": "5",
            "PRISM_RATE_VIOLATIONS": "3",
            "PRISM_RATE_WINDOW": "1",
            "PRISM_IDLE_TIMEOUT": "300",
            "PRISM_MAX_JSON_DEPTH": "8",
        },
    )
    assert config.allowed_origins == ("https://app.example.com", "http://localhost:*")
    assert (config.handshake_timeout, config.max_connections, config.max_connections_per_ip) == (
        2.5,
        10000,
        50,
    )
    assert (config.accept_rate, config.accept_burst) == (200.0, 400)
    assert (config.message_rate, config.message_burst, config.rate_violations, config.rate_window) == (
        0,
        5,
        3,
        1,
    )
    assert (config.idle_timeout, config.max_json_depth) == (300.0, 8)


def test_the_defaults_are_on_but_generous() -> None:
    config = GatewayConfig()
    assert config.allowed_origins == ()  # any origin: the dev default
    assert config.handshake_timeout == 10.0
    assert (config.max_connections, config.max_connections_per_ip) == (0, 0)
    assert (config.accept_rate, config.accept_burst) == (1000.0, 5000)
    assert (config.message_rate, config.message_burst) == (500.0, 1000)
    assert (config.rate_violations, config.rate_window) == (100, 10.0)
    assert config.idle_timeout == 0.0
    assert config.max_json_depth == 32


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("allowed_origins", ("example.com",), "allowed origin 'example.com' must look like"),
        ("handshake_timeout", 0.0, "handshake_timeout must be positive"),
        ("handshake_timeout", math.inf, "handshake_timeout must be positive"),
        ("max_connections", -1, "max_connections must be zero or positive"),
        ("max_connections_per_ip", -5, "max_connections_per_ip must be zero or positive"),
        ("accept_rate", -1.0, "accept_rate must be zero or a positive number"),
        ("message_rate", math.nan, "message_rate must be zero or a positive number"),
        ("idle_timeout", -0.5, "idle_timeout must be zero or a positive number"),
        ("accept_burst", 0, "accept_burst must be at least 1"),
        ("message_burst", 0, "message_burst must be at least 1"),
        ("rate_violations", 0, "rate_violations must be at least 1"),
        ("max_json_depth", 0, "max_json_depth must be at least 1"),
        ("rate_window", 0.0, "rate_window must be positive"),
    ],
)
def test_unusable_limit_settings_are_refused(setting: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load(GatewayConfig, None, environ={}, **{setting: value})


def test_every_setting_renders_in_the_help_of_prism_gateway() -> None:
    parser = argparse.ArgumentParser(prog="prism gateway")
    add_arguments(parser, GatewayConfig)
    text = parser.format_help()  # argparse %-formats help strings: a bare '%' would break --help
    for name in ("--allowed-origins", "--handshake-timeout", "--max-connections", "--max-json-depth"):
        assert name in text
