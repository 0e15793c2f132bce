"""Honest and hostile JWTs for tests, with the keys and key files a node verifies them against.

    kit = TokenKit()
    await make_node(**kit.node_settings(tmp_path))      # HS256 secret + RSA and EC public keys (PEM)
    kit.hs256("alice", rooms=["lobby"])                  # a valid token
    for name, token in kit.hostile("alice").items():    # each must be refused with HTTP 401
        ...

The hostile tokens are built by hand where PyJWT would refuse to build them (``alg: none``, an HS256
token whose "secret" is the RSA public key PEM), so each one really is what its name says.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

SECRET = "test-secret-of-at-least-32-bytes-for-hs256!"
OTHER_SECRET = "another-secret-of-at-least-32-bytes-long!!"
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@cache
def rsa_key(name: str = "main") -> rsa.RSAPrivateKey:
    """A 2048-bit RSA key, generated once per test session for each ``name``."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def ec_key(name: str = "main") -> ec.EllipticCurvePrivateKey:
    """A P-256 key, generated once per test session for each ``name``."""
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def jwk(key: PrivateKey, kid: str) -> dict[str, Any]:
    """The public JWK of ``key`` with ``kid`` (and its ``alg``), as a JWKS file lists it."""
    if isinstance(key, rsa.RSAPrivateKey):
        data = orjson.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        alg = "RS256"
    else:
        data = orjson.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        alg = "ES256"
    assert isinstance(data, dict)
    return data | {"kid": kid, "use": "sig", "alg": alg}


def write_jwks(path: Path, keys: dict[str, PrivateKey]) -> Path:
    """Write the JWKS of ``{kid: private key}`` (public halves only) to ``path``."""
    path.write_bytes(orjson.dumps({"keys": [jwk(key, kid) for kid, key in keys.items()]}))
    return path


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A compact JWT with whatever header, claims and signature bytes are given."""
    return f"{_b64(orjson.dumps(header))}.{_b64(orjson.dumps(claims))}.{_b64(signature)}"


def hmac_signed(header: dict[str, Any], claims: dict[str, Any], secret: bytes) -> str:
    """An HS256 JWT signed with any bytes as the secret (PyJWT refuses a PEM key as an HMAC secret)."""
    signing_input = f"{_b64(orjson.dumps(header))}.{_b64(orjson.dumps(claims))}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


@dataclass
class TokenKit:
    """The keys of one test's node, and tokens signed (or not) with them."""

    secret: str = SECRET
    rsa_private: rsa.RSAPrivateKey = field(default_factory=rsa_key)
    ec_private: ec.EllipticCurvePrivateKey = field(default_factory=ec_key)

    def claims(self, sub: str, ttl: float = 300, **extra: Any) -> dict[str, Any]:
        now = int(time.time())
        return {"sub": sub, "iat": now, "exp": int(now + ttl)} | extra

    def hs256(self, sub: str = "alice", ttl: float = 300, **extra: Any) -> str:
        return jwt.encode(self.claims(sub, ttl, **extra), self.secret, algorithm="HS256")

    def rs256(self, sub: str = "alice", ttl: float = 300, kid: str | None = None, **extra: Any) -> str:
        headers = {"kid": kid} if kid else None
        return jwt.encode(
            self.claims(sub, ttl, **extra), self.rsa_private, algorithm="RS256", headers=headers
        )

    def es256(self, sub: str = "alice", ttl: float = 300, **extra: Any) -> str:
        return jwt.encode(self.claims(sub, ttl, **extra), self.ec_private, algorithm="ES256")

    def write_pem(self, directory: Path) -> list[Path]:
        """The RSA and EC public keys as two PEM files in ``directory``."""
        paths = [directory / "rsa.pem", directory / "ec.pem"]
        paths[0].write_bytes(public_pem(self.rsa_private))
        paths[1].write_bytes(public_pem(self.ec_private))
        return paths

    def node_settings(self, directory: Path) -> dict[str, Any]:
        """``make_node`` overrides: this kit's secret and public keys, no clock leeway."""
        pem = ",".join(str(p) for p in self.write_pem(directory))
        return {"jwt_secret": self.secret, "jwt_public_key_file": tuple(pem.split(",")), "jwt_leeway": 0.0}

    def hostile(self, sub: str = "alice") -> dict[str, str]:
        """Tokens a node with :meth:`node_settings` must refuse with 401, by what is wrong with them."""
        claims = self.claims(sub)
        return {
            "expired": self.hs256(sub, ttl=-60),
            "expired_rs256": self.rs256(sub, ttl=-60),
            "forged_secret": jwt.encode(claims, OTHER_SECRET, algorithm="HS256"),
            "wrong_rsa_key": jwt.encode(claims, rsa_key("intruder"), algorithm="RS256"),
            "wrong_ec_key": jwt.encode(claims, ec_key("intruder"), algorithm="ES256"),
            "alg_none": unsigned({"alg": "none", "typ": "JWT"}, claims),
            "alg_none_signed": unsigned({"alg": "none", "typ": "JWT"}, claims, b"sig"),
            "alg_None_spelling": unsigned({"alg": "None", "typ": "JWT"}, claims),
            "hs256_with_rsa_public_key": hmac_signed(
                {"alg": "HS256", "typ": "JWT"}, claims, public_pem(self.rsa_private)
            ),
            "hs256_with_ec_public_key": hmac_signed(
                {"alg": "HS256", "typ": "JWT"}, claims, public_pem(self.ec_private)
            ),
            "tampered_claims": self._tampered(sub),
            "no_exp": jwt.encode({"sub": sub}, self.secret, algorithm="HS256"),
            "not_yet_valid": jwt.encode(
                claims | {"nbf": int(time.time()) + 3600}, self.secret, algorithm="HS256"
            ),
            "not_a_jwt": "definitely-not-a-token",
            "empty_signature": self.hs256(sub).rsplit(".", 1)[0] + ".",
        }

    def _tampered(self, sub: str) -> str:
        """A valid token for ``sub`` whose claims were then edited to another user."""
        header, _, signature = self.hs256(sub).split(".")
        return f"{header}.{_b64(orjson.dumps(self.claims('admin')))}.{signature}"
