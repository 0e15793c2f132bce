"""The HTTP API and HTTP backend settings of GatewayConfig: what is refused at start, in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import GatewayConfig
from shared.config import load
from shared.errors import ConfigError

KEY = "k" * 32


def test_the_api_is_off_by_default_and_keys_stay_out_of_repr() -> None:
    config = load(GatewayConfig, None, environ={})
    assert config.api_port == 0
    assert config.http_backends() == ()
    keyed = load(
        GatewayConfig, None, environ={"PRISM_API_PORT": "8180", "PRISM_API_KEYS": f"{KEY},{'x' * 40}"}
    )
    assert keyed.api_keys == (KEY, "x" * 40)
    assert KEY not in repr(keyed)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"PRISM_API_PORT": "8180"}, "api_port needs credentials"),
        ({"PRISM_API_PORT": "8080", "PRISM_API_KEYS": KEY}, "api_port must differ"),
        ({"PRISM_API_PORT": "70000", "PRISM_API_KEYS": KEY}, "api_port must be a port number"),
        ({"PRISM_API_KEYS": "short"}, "at least 32 characters"),
        ({"PRISM_API_JWT_AUDIENCE": "prism-api"}, "needs a JWT key"),
        (
            {"PRISM_API_JWT_AUDIENCE": "web", "PRISM_JWT_AUDIENCE": "web", "PRISM_JWT_SECRET": "s" * 32},
            "client tokens would be API keys",
        ),
    ],
)
def test_unusable_api_settings_are_refused(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load(GatewayConfig, None, environ=env)


def test_the_routes_file_is_read_at_load_with_secrets_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    routes = tmp_path / "routes.toml"
    routes.write_text(
        '[[backend]]\nname = "app"\nconnect_url = "http://127.0.0.1:9000/c"\nsecret_env = "APP_SECRET"\n'
    )
    env = {"PRISM_HTTP_BACKENDS_FILE": str(routes)}
    with pytest.raises(ConfigError, match="APP_SECRET, which is not set"):
        load(GatewayConfig, None, environ=env)
    monkeypatch.setenv("APP_SECRET", "s" * 32)
    (backend,) = load(GatewayConfig, None, environ=env).http_backends()
    assert backend.secrets == (b"s" * 32,)
    routes.write_text("[[backend]\n")
    with pytest.raises(ConfigError, match=r"http_backends_file .*routes.toml: "):
        load(GatewayConfig, None, environ=env)
