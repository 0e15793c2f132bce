"""How a Prism process (gateway node, notification service) proves who it is to NATS, and over what.

One small value, built from the process's own config object (``PRISM_NATS_*`` settings), turned into
the keyword arguments ``nats.connect`` takes. Every mechanism nats-server offers to a client is here:
user and password, token, NKey seed, a JWT credentials file (decentralised auth), and TLS with a private
CA and an optional client certificate (mutual TLS).
"""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.config import setting
from shared.errors import ConfigError


@dataclass(frozen=True, slots=True)
class NatsSettings:
    """The ``nats_*`` settings (``PRISM_NATS_*``) of every process's config object, which inherits them,
    so the gateway and the notification service read one environment the same way."""

    nats_url: str = setting("nats://127.0.0.1:4222", "NATS server URL(s), comma-separated")
    nats_user: str = setting("", "NATS user name (with nats_password)")
    nats_password: str = field(  # not in repr(), so a logged config does not show it
        default="", repr=False, metadata={"help": "NATS password (set it in the environment, not as a flag)"}
    )
    nats_token: str = field(default="", repr=False, metadata={"help": "NATS authentication token"})
    nats_nkey_seed_file: str = setting("", "file holding this process's NATS NKey seed")
    nats_creds_file: str = setting("", "NATS credentials file (user JWT and seed, decentralised auth)")
    nats_tls_ca_file: str = setting("", "CA bundle of the NATS servers' certificates (turns TLS on)")
    nats_tls_cert_file: str = setting("", "client certificate for NATS mutual TLS (with nats_tls_key_file)")
    nats_tls_key_file: str = setting("", "private key of nats_tls_cert_file")

    @property
    def nats_auth(self) -> NatsAuth:
        return NatsAuth.of(self)

    @property
    def nats_servers(self) -> list[str]:
        return servers_of(self)


def servers_of(config: NatsSettings) -> list[str]:
    """The comma-separated ``nats_url`` as a list of URLs."""
    return [url.strip() for url in config.nats_url.split(",") if url.strip()]


@dataclass(frozen=True, slots=True)
class NatsAuth:
    user: str = ""
    password: str = ""
    token: str = ""
    nkey_seed_file: str = ""
    creds_file: str = ""
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""

    @classmethod
    def of(cls, config: NatsSettings) -> NatsAuth:
        return cls(
            config.nats_user,
            config.nats_password,
            config.nats_token,
            config.nats_nkey_seed_file,
            config.nats_creds_file,
            config.nats_tls_ca_file,
            config.nats_tls_cert_file,
            config.nats_tls_key_file,
        )

    def validate(self) -> None:
        chosen = [
            name
            for name, on in (
                ("user/password", bool(self.user or self.password)),
                ("token", bool(self.token)),
                ("nkey seed", bool(self.nkey_seed_file)),
                ("credentials file", bool(self.creds_file)),
            )
            if on
        ]
        if len(chosen) > 1:
            raise ConfigError(f"NATS authentication: choose one of {', '.join(chosen)}")
        if bool(self.user) != bool(self.password):
            raise ConfigError("NATS authentication: set both nats_user and nats_password")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError(
                "NATS TLS: a client certificate needs both nats_tls_cert_file and nats_tls_key_file"
            )
        for name in ("nkey_seed_file", "creds_file", "tls_ca_file", "tls_cert_file", "tls_key_file"):
            path = getattr(self, name)
            if path and not Path(path).is_file():
                raise ConfigError(f"nats_{name}: no such file: {path}")

    @property
    def uses_tls(self) -> bool:
        return bool(self.tls_ca_file or self.tls_cert_file)

    def tls_context(self) -> ssl.SSLContext | None:
        """A client TLS context trusting ``tls_ca_file`` (else the system CAs), with the client certificate
        if one is set. None when no TLS setting is given: a ``tls://`` URL then uses nats-py's default."""
        if not self.uses_tls:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.tls_ca_file or None)
        if self.tls_cert_file:
            context.load_cert_chain(self.tls_cert_file, self.tls_key_file)
        return context

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect`` (secrets are read here, never logged)."""
        kwargs: dict[str, Any] = {}
        if self.user:
            kwargs.update(user=self.user, password=self.password)
        if self.token:
            kwargs["token"] = self.token
        if self.nkey_seed_file:
            kwargs["nkeys_seed"] = self.nkey_seed_file
        if self.creds_file:
            kwargs["user_credentials"] = self.creds_file
        if (context := self.tls_context()) is not None:
            kwargs["tls"] = context
        return kwargs

    def connect_fields(self, nonce: str | None, url_user: str = "", url_password: str = "") -> dict[str, Any]:
        """The credentials of a ``CONNECT`` that Prism writes itself (``gateway.io.nats_link``), chosen as
        nats-py chooses them from :meth:`connect_kwargs`: an NKey or a credentials file signs the server's
        ``nonce``; else user and password, else a token, else credentials in the server's URL."""
        fields: dict[str, Any] = {}
        if self.creds_file or self.nkey_seed_file:
            if nonce is not None:
                if self.creds_file:
                    jwt, seed = read_creds(self.creds_file)
                    fields["jwt"] = jwt
                else:
                    seed = Path(self.nkey_seed_file).read_bytes().strip()
                fields["sig"], public = sign_nonce(seed, nonce)
                if not self.creds_file:
                    fields["nkey"] = public
        elif self.user:
            fields.update(user=self.user, **{"pass": self.password})
        elif self.token:
            fields["auth_token"] = self.token
        elif url_user and url_password:
            fields.update(user=url_user, **{"pass": url_password})
        elif url_user:
            fields["auth_token"] = url_user
        return fields


def read_creds(path: str) -> tuple[str, bytes]:
    """The user JWT and the NKey seed of a NATS credentials file (``nsc generate creds``): each is the
    line after its ``-----BEGIN ...-----`` marker."""
    lines = Path(path).read_bytes().splitlines()
    jwt = seed = b""
    for i, line in enumerate(lines[:-1]):
        if b"BEGIN NATS USER JWT" in line:
            jwt = lines[i + 1].strip()
        elif b"BEGIN USER NKEY SEED" in line:
            seed = lines[i + 1].strip()
    if not jwt or not seed:
        raise ConfigError(f"nats_creds_file: {path} holds no user JWT and seed")
    return jwt.decode(), seed


def sign_nonce(seed: bytes, nonce: str) -> tuple[str, str]:
    """The server's nonce signed with the NKey ``seed`` (base64, as nats-py sends it), and the public key."""
    import nkeys  # only processes that authenticate with NKeys pay for it

    try:
        key = nkeys.from_seed(bytearray(seed))
    except Exception as exc:  # nkeys raises its own errors for a malformed seed
        raise ConfigError(f"NATS NKey seed is not valid: {exc}") from None
    try:
        return base64.b64encode(key.sign(nonce.encode())).decode(), key.public_key.decode()
    finally:
        key.wipe()
