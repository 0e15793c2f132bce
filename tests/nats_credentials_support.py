"""Credentials for NATS servers in tests: a private CA with server and client certificates, NKey seeds, and
a decentralised-auth setup (operator, account and user JWTs, and the user's credentials file) made with
nkeys alone, so no ``nsc`` is needed."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from nacl.signing import SigningKey

# -- TLS ---------------------------------------------------------------------------------------------------


def certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None, ca_key: Any, ca: bool
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256())


def write_pair(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    cert_path, key_path = path.with_suffix(".crt"), path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_path), str(key_path)


@dataclass(frozen=True)
class Pki:
    """A private CA, a server certificate for 127.0.0.1/localhost and a client certificate."""

    ca_file: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str

    @classmethod
    def make(cls, directory: Path) -> Pki:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = certificate("prism-test-ca", ca_key, None, ca_key, ca=True)
        ca_file = directory / "ca.crt"
        ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        server_key, client_key = (
            ec.generate_private_key(ec.SECP256R1()),
            ec.generate_private_key(ec.SECP256R1()),
        )
        server = write_pair(
            directory / "server", certificate("localhost", server_key, ca, ca_key, False), server_key
        )
        client = write_pair(
            directory / "client", certificate("gateway", client_key, ca, ca_key, False), client_key
        )
        return cls(str(ca_file), *server, *client)

    def server_config(self, verify: bool = True) -> str:
        """The nats-server ``tls`` block: its certificate, and (``verify``) a client certificate required."""
        return (
            f'tls {{ cert_file: "{self.server_cert}", key_file: "{self.server_key}", '
            f'ca_file: "{self.ca_file}", verify: {str(verify).lower()}, timeout: 5 }}\n'
        )


# -- NKeys and JWTs ----------------------------------------------------------------------------------------


def new_seed(prefix: int) -> bytes:
    return bytes(nkeys.encode_seed(bytes(SigningKey.generate()), prefix))


def public_key(seed: bytes) -> str:
    return str(nkeys.from_seed(bytearray(seed)).public_key.decode())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(issuer_seed: bytes, subject: str, name: str, nats: dict[str, Any]) -> str:
    """A NATS JWT (``ed25519-nkey``) for ``subject``, signed by ``issuer_seed``."""
    claims = {
        "jti": base64.b32encode(secrets.token_bytes(20)).decode().rstrip("="),
        "iat": int(time.time()),
        "iss": public_key(issuer_seed),
        "name": name,
        "sub": subject,
        "nats": {**nats, "version": 2},
    }
    signing_input = _b64(b'{"typ":"JWT","alg":"ed25519-nkey"}') + "." + _b64(json.dumps(claims).encode())
    signature = nkeys.from_seed(bytearray(issuer_seed)).sign(signing_input.encode())
    return signing_input + "." + _b64(signature)


_UNLIMITED = {"subs": -1, "data": -1, "payload": -1}


@dataclass(frozen=True)
class Decentralised:
    """An operator with one account (JetStream on) and one user: the server's config, and the user's
    credentials file as ``nsc generate creds`` writes it."""

    server_config: str
    creds_file: str

    @classmethod
    def make(cls, directory: Path) -> Decentralised:
        operator = new_seed(nkeys.PREFIX_BYTE_OPERATOR)
        account = new_seed(nkeys.PREFIX_BYTE_ACCOUNT)
        user = new_seed(nkeys.PREFIX_BYTE_USER)
        operator_jwt = jwt(operator, public_key(operator), "test-operator", {"type": "operator"})
        limits = {
            **_UNLIMITED,
            "imports": -1,
            "exports": -1,
            "wildcards": True,
            "conn": -1,
            "leaf": -1,
            "mem_storage": -1,
            "disk_storage": -1,
            "streams": -1,
            "consumer": -1,
        }
        account_jwt = jwt(operator, public_key(account), "prism", {"type": "account", "limits": limits})
        system = new_seed(nkeys.PREFIX_BYTE_ACCOUNT)  # JetStream needs a system account to start
        system_jwt = jwt(operator, public_key(system), "SYS", {"type": "account", "limits": {"conn": -1}})
        user_jwt = jwt(
            account, public_key(user), "gateway", {"type": "user", "pub": {}, "sub": {}, **_UNLIMITED}
        )
        creds = directory / "gateway.creds"
        creds.write_text(
            "-----BEGIN NATS USER JWT-----\n"
            f"{user_jwt}\n"
            "------END NATS USER JWT------\n\n"
            "************************* IMPORTANT *************************\n"
            "NKEY Seed printed below can be used to sign and prove identity.\n\n"
            "-----BEGIN USER NKEY SEED-----\n"
            f"{user.decode()}\n"
            "------END USER NKEY SEED------\n"
        )
        preload = f"{public_key(account)}: {account_jwt}, {public_key(system)}: {system_jwt}"
        config = (
            f"operator: {operator_jwt}\n"
            f"system_account: {public_key(system)}\n"
            "resolver: MEMORY\n"
            f"resolver_preload: {{ {preload} }}\n"
        )
        return cls(config, str(creds))
