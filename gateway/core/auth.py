"""Who a client is and what it may do, decided from its token: no files, no sockets, no event loop.

    token_from_request(...)      the bearer token of an upgrade request (header, query or subprotocol)
    verify_token(token, keys)    the claims of a token signed by one of ``keys``, or :class:`AuthError`
    identity_from_claims(...)    claims -> :class:`Identity` (encoded user id, expiry, permissions)
    Permissions.may_join/_send   the ``rooms`` / ``events`` claim patterns, ``{user}`` substituted

Every key carries the algorithms it may verify, fixed by its type when it is loaded: an HMAC secret only
``HS*``, an RSA key only ``RS*``/``PS*``, an EC key only the ``ES*`` of its curve. A token's ``alg`` header
only picks among those, so ``alg: none`` and an ``HS256`` token "signed" with an RSA public key as the
secret never verify.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from cryptography.x509 import load_pem_x509_certificate
from jwt.types import Options
from websockets.typing import Subprotocol

from gateway.core.permissions import Grants, Permissions
from shared.errors import FrameError, InvalidName, PrismError
from shared.frames import ErrorCode, Ref
from shared.subjects import encode_user_id

HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
SUPPORTED_ALGORITHMS = frozenset(HMAC_ALGORITHMS + RSA_ALGORITHMS + (*EC_ALGORITHMS.values(), "EdDSA"))

# Browsers cannot set headers on a WebSocket: they offer the token as a subprotocol next to "prism".
PRISM_SUBPROTOCOL = "prism"
BEARER_SUBPROTOCOL_PREFIX = "prism.bearer."

# Why a handshake or refresh was refused: also the ``reason`` label of ``prism_rejections_total``.
MISSING = "token_missing"
INVALID = "token_invalid"
EXPIRED = "token_expired"
FORBIDDEN = "token_forbidden"
# ``reason`` labels of prism_rejections_total for refusals after the handshake.
SESSION_EXPIRED = "session_expired"
REFRESH_REFUSED = "refresh_refused"
JOIN_FORBIDDEN = "join_forbidden"
EVENT_FORBIDDEN = "event_forbidden"
AUTH_REJECTIONS = (
    MISSING,
    INVALID,
    EXPIRED,
    FORBIDDEN,
    SESSION_EXPIRED,
    REFRESH_REFUSED,
    JOIN_FORBIDDEN,
    EVENT_FORBIDDEN,
)

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)
_MAX_SAFE_INT = 2**53


class AuthError(PrismError):
    """A token was refused. ``status`` is the HTTP status of a refused handshake (401: no valid token,
    403: a valid token that does not allow this), ``kind`` one of the reason constants above."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message

    @property
    def error_code(self) -> ErrorCode:
        """The error-frame code of the same refusal, for a token refresh."""
        return ErrorCode.FORBIDDEN if self.status == 403 else ErrorCode.INVALID_TOKEN


def _invalid(message: str) -> AuthError:
    return AuthError(401, INVALID, f"invalid token: {message}")


# -- keys --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class VerifyKey:
    """A key that may verify tokens with ``algorithms``; ``kid`` set for keys from a JWKS."""

    key: Any  # bytes (HMAC) or a cryptography public key
    algorithms: frozenset[str]
    kid: str | None = None
    source: str = ""


def _fitting(key: Any, algorithms: Iterable[str]) -> frozenset[str]:
    """The ``algorithms`` whose minimum key length ``key`` meets (PyJWT's own checks, RFC 7518)."""
    fit = set()
    for name in algorithms:
        algorithm = jwt.get_algorithm_by_name(name)
        try:
            if algorithm.check_key_length(algorithm.prepare_key(key)) is None:
                fit.add(name)
        except jwt.InvalidKeyError:  # e.g. a secret that is a PEM public key: never an HMAC key
            continue
    return frozenset(fit)


def algorithms_for(key: Any) -> frozenset[str]:
    """The algorithms a key may verify, by its type (and size): never both HMAC and public-key ones."""
    if isinstance(key, bytes):
        return _fitting(key, HMAC_ALGORITHMS)
    if isinstance(key, rsa.RSAPublicKey):
        return _fitting(key, RSA_ALGORITHMS)
    if isinstance(key, ec.EllipticCurvePublicKey):
        name = EC_ALGORITHMS.get(key.curve.name)
        return frozenset({name} if name else ())
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return frozenset({"EdDSA"})
    return frozenset()


def secret_key(secret: str, source: str = "secret") -> VerifyKey:
    """The HMAC key of a shared secret; :class:`ValueError` if it is too short for even HS256 (32 bytes)."""
    key = secret.encode()
    algorithms = algorithms_for(key)
    if not algorithms:
        raise ValueError(f"{source} is {len(key)} bytes; HS256 needs at least 32")
    return VerifyKey(key, algorithms, None, source)


def keys_from_pem(data: bytes, source: str) -> list[VerifyKey]:
    """Every public key (or certificate's key) in PEM ``data``; :class:`ValueError` if there is none or a
    block cannot be used."""
    keys = []
    for index, block in enumerate(_PEM_BLOCK.finditer(data), 1):
        try:
            if block[1] == b"CERTIFICATE":
                public_key: Any = load_pem_x509_certificate(block[0]).public_key()
            else:
                public_key = load_pem_public_key(block[0])
        except ValueError as exc:
            raise ValueError(
                f"{source}: PEM block {index} is not a public key or certificate: {exc}"
            ) from None
        algorithms = algorithms_for(public_key)
        if not algorithms:
            raise ValueError(f"{source}: PEM block {index} is a key type or size Prism cannot use")
        keys.append(VerifyKey(public_key, algorithms, None, f"{source}#{index}"))
    if not keys:
        raise ValueError(f"{source} holds no PEM public key")
    return keys


def keys_from_jwks(data: bytes, source: str) -> list[VerifyKey]:
    """The signing keys of a JWKS document (``{"keys":[...]}``). Keys that are not for signatures, or of a
    type Prism cannot use, are skipped; :class:`ValueError` if none is left."""
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{source} is not JSON: {exc}") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f'{source} must be a JSON object with a "keys" list')
    keys = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            jwk = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue
        algorithms = algorithms_for(jwk.key)
        if "alg" in entry:  # a JWK that names its algorithm may verify that one only
            algorithms &= {entry["alg"]}
        kid = entry.get("kid")
        if algorithms:
            keys.append(VerifyKey(jwk.key, algorithms, kid if isinstance(kid, str) else None, source))
    if not keys:
        raise ValueError(f"{source} holds no usable signing key")
    return keys


# -- tokens ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TokenPolicy:
    """What a valid token must be, and which claims say who it is and what it may do."""

    audience: tuple[str, ...] = ()
    issuer: str = ""
    leeway: float = 0.0
    require_exp: bool = True
    user_claim: str = "sub"
    rooms_claim: str = "rooms"
    events_claim: str = "events"
    routes_claim: str = "routes"


def token_from_request(
    authorization: Sequence[str], query: Mapping[str, Sequence[str]], protocols: Sequence[str]
) -> str | None:
    """The token of an upgrade request: ``Authorization: Bearer <t>``, else ``?token=<t>``, else a
    ``Sec-WebSocket-Protocol`` entry ``prism.bearer.<t>``. ``protocols`` are the header values as sent
    (comma-separated lists). :class:`AuthError` if one place holds more than one token."""
    bearers = [
        value.split(None, 1)[1].strip()
        for value in authorization
        if value[:7].lower() == "bearer " and value[7:].strip()
    ]
    if len(bearers) > 1:
        raise _invalid("Authorization may hold one bearer token")
    if bearers:
        return bearers[0]
    tokens = query.get("token", [])
    if len(tokens) > 1:
        raise _invalid("token may be given once")
    if tokens:
        return tokens[0] or None
    offered = [
        p.strip()[len(BEARER_SUBPROTOCOL_PREFIX) :]
        for value in protocols
        for p in value.split(",")
        if p.strip().startswith(BEARER_SUBPROTOCOL_PREFIX)
    ]
    if len(offered) > 1:
        raise _invalid("offer one prism.bearer.<token> subprotocol")
    return offered[0] or None if offered else None


def choose_subprotocol(offered: Sequence[str]) -> Subprotocol | None:
    """The subprotocol to answer: ``prism`` if offered; else the ``prism.bearer.`` entry a browser sent
    alone (it fails the handshake unless the answer names one of its offers); else none."""
    if PRISM_SUBPROTOCOL in offered:
        return Subprotocol(PRISM_SUBPROTOCOL)
    for protocol in offered:
        if protocol.startswith(BEARER_SUBPROTOCOL_PREFIX):
            return Subprotocol(protocol)
    return None


def verify_token(token: str, keys: Sequence[VerifyKey], policy: TokenPolicy) -> dict[str, Any]:
    """The claims of ``token`` once its signature, ``exp``/``nbf``/``iat``, ``aud`` and ``iss`` are checked
    against ``keys`` and ``policy``; :class:`AuthError` (401) saying why not."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise _invalid("not a JWT") from None
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in SUPPORTED_ALGORITHMS:
        raise _invalid(f"algorithm {alg!r:.20} is not accepted")
    kid = header.get("kid")
    candidates = [k for k in keys if alg in k.algorithms and (k.kid is None or kid is None or k.kid == kid)]
    if not candidates:
        if isinstance(kid, str):
            raise _invalid(f"no {alg} key with kid {kid!r:.40}")
        raise _invalid(f"no {alg} key")
    # Keys with the token's kid first: the others (without kid) are tried only if those fail.
    candidates.sort(key=lambda k: k.kid is None)
    options: Options = {"require": ["exp"] if policy.require_exp else [], "enforce_minimum_key_length": True}
    for candidate in candidates:
        try:
            return jwt.decode(
                token,
                candidate.key,
                algorithms=[alg],
                options=options,
                audience=list(policy.audience) or None,
                issuer=policy.issuer or None,
                leeway=policy.leeway,
            )
        except (jwt.InvalidSignatureError, jwt.InvalidKeyError):
            continue
        except jwt.ExpiredSignatureError:
            raise AuthError(401, EXPIRED, "token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError(401, INVALID, "token not valid yet") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _invalid(f"no {exc.claim!r} claim") from None
        except jwt.InvalidAudienceError:
            raise _invalid("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise _invalid("wrong issuer") from None
        except jwt.PyJWTError as exc:
            raise _invalid(str(exc).rstrip(".")[:100]) from None
    raise _invalid("signature verification failed")


# -- identity and permissions ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Identity:
    """A verified client: ``user`` is the subject-safe id (``encode_user_id`` of ``subject``)."""

    user: str
    subject: str
    claims: Mapping[str, Any]
    expires_at: float | None  # the token's exp, seconds since the epoch
    permissions: Permissions


def identity_from_claims(claims: Mapping[str, Any], policy: TokenPolicy, route: str) -> Identity:
    """Who verified ``claims`` name and what they allow; :class:`AuthError` (401 for a malformed claim,
    403 for a user id that cannot be one or a route the token does not allow)."""
    subject = claims.get(policy.user_claim)
    if isinstance(subject, int) and not isinstance(subject, bool):
        subject = str(subject)
    if not isinstance(subject, str) or not subject:
        raise _invalid(f"no {policy.user_claim!r} claim holding a user id")
    try:
        user = encode_user_id(subject)
    except InvalidName as exc:
        raise AuthError(403, FORBIDDEN, f"user id not allowed: {exc}") from None
    routes = claims.get(policy.routes_claim)
    if routes is not None:  # absent: every route
        if isinstance(routes, str):
            routes = routes.split()
        if not isinstance(routes, list) or not all(isinstance(r, str) for r in routes):
            raise _invalid(f"claim {policy.routes_claim!r} must be a list of paths")
        if route not in routes:
            raise AuthError(403, FORBIDDEN, f"route {route!r:.60} not allowed by the token")
    exp = claims.get("exp")
    expires_at = float(exp) if isinstance(exp, int | float) and math.isfinite(exp) else None
    try:
        permissions = Permissions(
            Grants.parse(policy.rooms_claim, claims.get(policy.rooms_claim), user, dotted=False),
            Grants.parse(policy.events_claim, claims.get(policy.events_claim), user, dotted=True),
        )
    except ValueError as exc:
        raise _invalid(str(exc)) from None
    return Identity(user, subject, claims, expires_at, permissions)


def authenticate(token: str, keys: Sequence[VerifyKey], policy: TokenPolicy, route: str) -> Identity:
    """:func:`verify_token` then :func:`identity_from_claims`."""
    return identity_from_claims(verify_token(token, keys, policy), policy, route)


# -- the refresh command -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Refresh:
    """``{"prism":"refresh","token":"...","ref":1}``: replace the connection's token before it expires."""

    token: str
    ref: Ref


def parse_refresh(message: str | bytes) -> Refresh | None:
    """The refresh command ``message`` holds, or None if it is not one (then it is some other frame);
    :class:`FrameError` for a refresh without a token string."""
    if not isinstance(message, str) or '"refresh"' not in message:
        return None
    try:
        obj = orjson.loads(message)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or obj.get("prism") != "refresh":
        return None
    ref = obj.get("ref")
    if isinstance(ref, bool) or not isinstance(ref, int | str | None):
        raise FrameError(ErrorCode.INVALID_REF, "ref must be an integer or a string")
    if (isinstance(ref, int) and not -_MAX_SAFE_INT < ref < _MAX_SAFE_INT) or (
        isinstance(ref, str) and len(ref) > 64
    ):
        raise FrameError(
            ErrorCode.INVALID_REF, "ref must be a safe integer or a string of at most 64 characters"
        )
    token = obj.get("token")
    if not isinstance(token, str) or not token:
        raise FrameError(ErrorCode.INVALID_TOKEN, "refresh needs a non-empty 'token' string", ref)
    return Refresh(token, ref)
