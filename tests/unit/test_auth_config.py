"""The authentication settings of GatewayConfig: what turns auth on, and what is refused at load."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config import GatewayConfig
from shared.config import load
from shared.errors import ConfigError

SECRET = "s" * 32


def test_auth_is_off_by_default_and_any_key_turns_it_on() -> None:
    assert not GatewayConfig().auth_enabled
    assert GatewayConfig(jwt_secret=SECRET).auth_enabled
    assert GatewayConfig(jwt_public_key_file=("keys.pem",)).auth_enabled
    assert GatewayConfig(jwks_file="jwks.json").auth_enabled


def test_settings_come_from_the_environment() -> None:
    config = load(
        GatewayConfig,
        environ={
            "PRISM_JWT_SECRET": SECRET,
            "PRISM_JWT_PUBLIC_KEY_FILE": "a.pem, b.pem",
            "PRISM_JWT_AUDIENCE": "prism,chat",
            "PRISM_JWT_LEEWAY": "0",
            "PRISM_JWT_REQUIRE_EXP": "false",
            "PRISM_AUTHZ_SUBJECT": "authz.prism",
            "PRISM_AUTHZ_TIMEOUT": "0.25",
        },
    )
    assert config.jwt_public_key_file == ("a.pem", "b.pem")
    assert config.jwt_audience == ("prism", "chat")
    assert (config.jwt_leeway, config.jwt_require_exp, config.authz_timeout) == (0.0, False, 0.25)
    assert config.subjects.authz(config.authz_subject) == "authz.prism"
    assert GatewayConfig(subject_prefix="acme.").subjects.authz("authz.prism") == "acme.authz.prism"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"jwt_secret": "short"}, "HS256 needs at least 32"),
        ({"jwt_secret": SECRET, "jwt_leeway": -1.0}, "jwt_leeway"),
        ({"jwt_secret": SECRET, "authz_timeout": 0.0}, "authz_timeout"),
        ({"jwt_secret": SECRET, "jwt_user_claim": ""}, "jwt_user_claim"),
        ({"authz_subject": "authz.prism"}, "needs authentication"),
        ({"jwt_secret": SECRET, "authz_subject": "authz.*"}, "dot-separated tokens"),
        ({"jwt_secret": SECRET, "authz_subject": "authz..prism"}, "dot-separated tokens"),
    ],
)
def test_unusable_auth_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(GatewayConfig, environ={}, **settings)
