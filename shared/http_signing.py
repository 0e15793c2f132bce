"""Signatures on the requests a node sends to HTTP backends: HMAC-SHA256 over timestamp and body.

    Prism-Signature: t=1767225600,v1=5f0c...e9

``t`` is the unix time in seconds when the node signed; each ``v1`` is the lower-case hex HMAC-SHA256 of
the bytes ``"<t>." + body`` under one secret. A backend given several secrets (rotation: the new one
first) gets one ``v1`` per secret and accepts the request if any of them verifies under a secret it
knows. The scheme is Stripe's: the timestamp is signed with the body, so a captured request cannot be
replayed later than the backend's tolerance (five minutes is usual).

Pure functions, no clock of their own: the caller passes the time. Backends in Python can import
:func:`verify`; docs/http-backends.md shows the same check in a few lines of other languages.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

SIGNATURE_HEADER = "Prism-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE = 300.0  # seconds a backend should accept between t and its own clock


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>." + body`` under ``secret``."""
    return hmac.new(secret, b"%d." % timestamp + body, hashlib.sha256).hexdigest()


def sign(secrets: Sequence[bytes], timestamp: int, body: bytes) -> str:
    """The ``Prism-Signature`` header value for ``body`` signed at ``timestamp`` with every secret."""
    return ",".join([f"t={timestamp}", *(f"{SCHEME}={signature(s, timestamp, body)}" for s in secrets)])


def parse(header: str) -> tuple[int, list[str]] | None:
    """``(t, [v1 signatures])`` of a header value, or None if it has no usable ``t`` or no ``v1``."""
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif key == SCHEME and value:
            signatures.append(value)
    if timestamp is None or not signatures:
        return None
    return timestamp, signatures


def verify(
    header: str | None,
    body: bytes,
    secrets: Sequence[bytes],
    now: float,
    tolerance: float = DEFAULT_TOLERANCE,
) -> bool:
    """Whether ``header`` (the request's ``Prism-Signature``) signs ``body`` under one of ``secrets``
    within ``tolerance`` seconds of ``now``. Compares in constant time."""
    parsed = parse(header) if header else None
    if parsed is None:
        return False
    timestamp, given = parsed
    if abs(now - timestamp) > tolerance:
        return False
    ok = False
    for secret in secrets:
        expected = signature(secret, timestamp, body)
        for candidate in given:  # no early exit: the time taken does not say which one matched
            ok |= hmac.compare_digest(expected, candidate)
    return ok
