"""The static site's pure parts: which files it takes, ETag matching, the console config."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from gateway.config import GatewayConfig
from gateway.io.static import Asset, StaticSite, console_config, etag_matches
from shared.config import load
from shared.errors import ConfigError


def web_dir(tmp_path: Path) -> Path:
    (tmp_path / "prism.js").write_text("export const x = 1;\n")
    (tmp_path / "prism.d.ts").write_text("export declare const x: 1;\n")
    console = tmp_path / "console"
    (console / "sub").mkdir(parents=True)
    (console / "index.html").write_text("<!doctype html><title>c</title>")
    (console / "app.js").write_text("1")
    (console / ".secret.js").write_text("dotfiles are not served")
    (console / "notes.txt").write_text("unknown types are not served")
    (console / "sub" / "deep.js").write_text("subdirectories are not served")
    (tmp_path / "outside.js").write_text("not in console/")
    return tmp_path


def test_only_plain_known_files_of_the_console_directory_are_routes(tmp_path: Path) -> None:
    site = StaticSite.load(console=True, web_dir=web_dir(tmp_path))
    assert sorted(site.routes) == [
        "/",
        "/console/app.js",
        "/console/config.json",
        "/console/index.html",
        "/prism.d.ts",
        "/prism.js",
    ]
    assert site.routes["/"] == site.routes["/console/index.html"]


def test_without_the_console_only_the_sdk_is_served(tmp_path: Path) -> None:
    assert sorted(StaticSite.load(web_dir=web_dir(tmp_path)).routes) == ["/prism.d.ts", "/prism.js"]


def test_etags_are_strong_and_follow_the_content() -> None:
    a, b = Asset.of(b"one", "text/plain"), Asset.of(b"two", "text/plain")
    assert a.etag != b.etag
    assert a.etag == Asset.of(b"one", "text/css").etag
    assert a.etag.startswith('"')
    assert not a.etag.startswith('W/"')


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (None, False),
        ("", False),
        ('"abc"', True),
        ('W/"abc"', True),
        ('"x", "abc"', True),
        ('"x" ,W/"abc" ', True),
        ("*", True),
        ('"abcd"', False),
        ("abc", False),
    ],
)
def test_if_none_match(header: str | None, matches: bool) -> None:
    assert etag_matches(header, '"abc"') is matches


def test_console_config_json() -> None:
    assert orjson.loads(console_config(("ws://a/ws",), True)) == {"nodes": ["ws://a/ws"], "notify": True}


def test_console_settings_load_and_validate() -> None:
    env = {
        "PRISM_CONSOLE": "true",
        "PRISM_CONSOLE_NODES": "ws://a:1/ws, wss://b/ws",
        "PRISM_CONSOLE_NOTIFY": "1",
    }
    config = load(GatewayConfig, environ=env)
    assert (config.console, config.console_nodes, config.console_notify) == (
        True,
        ("ws://a:1/ws", "wss://b/ws"),
        True,
    )
    default = GatewayConfig()
    assert (default.console, default.console_nodes, default.console_notify) == (False, (), False)
    with pytest.raises(ConfigError, match="console_nodes"):
        GatewayConfig(console_nodes=("http://a/ws",)).validate()
