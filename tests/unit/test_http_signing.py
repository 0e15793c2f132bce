"""Request signatures for HTTP backends (shared/http_signing.py): pure, no sockets."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from shared import http_signing as sig

SECRET = b"s" * 32
OLD = b"o" * 32


def test_the_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET, b"1767225600.{}", hashlib.sha256).hexdigest()
    assert sig.sign([SECRET], 1767225600, b"{}") == f"t=1767225600,v1={expected}"


def test_a_signed_body_verifies_within_the_tolerance_and_not_after() -> None:
    header = sig.sign([SECRET], 1000, b'{"a":1}')
    assert sig.verify(header, b'{"a":1}', [SECRET], now=1000)
    assert sig.verify(header, b'{"a":1}', [SECRET], now=1300)
    assert not sig.verify(header, b'{"a":1}', [SECRET], now=1301)  # a replay, five minutes later
    assert not sig.verify(header, b'{"a":1}', [SECRET], now=699)


def test_a_changed_body_or_timestamp_or_secret_does_not_verify() -> None:
    header = sig.sign([SECRET], 1000, b'{"a":1}')
    assert not sig.verify(header, b'{"a":2}', [SECRET], now=1000)
    assert not sig.verify(header.replace("t=1000", "t=1001"), b'{"a":1}', [SECRET], now=1000)
    assert not sig.verify(header, b'{"a":1}', [OLD], now=1000)


def test_rotation_signs_with_every_secret_and_either_one_verifies() -> None:
    header = sig.sign([SECRET, OLD], 1000, b"x")
    assert header.count("v1=") == 2
    assert sig.verify(header, b"x", [OLD], now=1000)
    assert sig.verify(header, b"x", [SECRET], now=1000)


def test_missing_or_malformed_headers_do_not_verify() -> None:
    for header in (None, "", "t=1000", "v1=abc", "t=x,v1=abc", "garbage", "t=-5,v1=ab"):
        assert not sig.verify(header, b"x", [SECRET], now=1000)


@given(st.text(max_size=200))
def test_no_header_value_crashes_the_parser(header: str) -> None:
    sig.verify(header, b"body", [SECRET], now=1000)
