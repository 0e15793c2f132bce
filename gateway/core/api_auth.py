"""Who may use the HTTP API: API keys compared in constant time, or JWTs for the API's audience.

    Authorization: Bearer <api key>       one of PRISM_API_KEYS
    Authorization: Bearer <jwt>           verified with the node's PRISM_JWT_* keys; its aud must name
                                          PRISM_API_JWT_AUDIENCE, and it must not have expired

Keys are compared as SHA-256 digests with :func:`hmac.compare_digest`, every configured key each time,
so neither the time taken nor the length of a guess says anything about a key. A client token (for
WebSocket routes) is never an API credential: the API's audience may not be one of PRISM_JWT_AUDIENCE.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.core.auth import AuthError, TokenPolicy, VerifyKey, verify_token


class ApiAuthError(Exception):
    """No usable credentials; ``str()`` is the reason given in the 401."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made an API request, for logs: ``key #2`` or ``jwt sub=deployer``."""

    name: str


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


class ApiCredentials:
    def __init__(self, keys: Sequence[str], jwt_audience: str = "", leeway: float = 0.0) -> None:
        self._digests = [_digest(key) for key in keys]
        self._policy = TokenPolicy(audience=(jwt_audience,), leeway=leeway) if jwt_audience else None

    @property
    def accepts_jwt(self) -> bool:
        return self._policy is not None

    def check(self, authorization: Sequence[str], jwt_keys: Sequence[VerifyKey] = ()) -> Principal:
        """The principal of a request with these ``Authorization`` header values; :class:`ApiAuthError`."""
        if not authorization:
            raise ApiAuthError("missing credentials: send 'Authorization: Bearer <api key or token>'")
        if len(authorization) > 1:
            raise ApiAuthError("Authorization may be given once")
        scheme, _, credential = authorization[0].strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise ApiAuthError("expected 'Authorization: Bearer <api key or token>'")
        given = _digest(credential)
        matched = -1
        for index, digest in enumerate(self._digests):  # every key, every time: constant time
            if hmac.compare_digest(given, digest):
                matched = index
        if matched >= 0:
            return Principal(f"key #{matched + 1}")
        if self._policy is not None and credential.count(".") == 2:
            try:
                claims = verify_token(credential, jwt_keys, self._policy)
            except AuthError as exc:
                raise ApiAuthError(exc.message) from None
            return Principal(f"jwt sub={claims.get('sub')!s:.64}")
        raise ApiAuthError("invalid credentials")
