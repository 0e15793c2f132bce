"""docs/protocol.md stays complete: every close code, error code, header and subject kind is documented.

Pure tests: they read the Markdown file and the contracts in ``shared/`` and compare them, no network.
"""

from __future__ import annotations

import dataclasses
import re
from functools import cache
from pathlib import Path

import pytest

from gateway.config import GatewayConfig
from notification_service.config import NotifyConfig
from shared import headers
from shared.close_codes import BACKEND_CLOSE_CODES, CloseCode
from shared.config import env_name
from shared.frames import ErrorCode
from shared.presence_keys import BUCKET, Layout, conn_key, fnv1a32, room_key, user_key
from shared.subjects import CONTROL_ACTIONS, Subjects

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"

_CLOSE_ROW = re.compile(r"^\| (\d{4}) \| `([A-Z_]+)` \| (yes|no) \|", re.MULTILINE)
_ERROR_ROW = re.compile(r"^\| `([a-z_]+)` \|", re.MULTILINE)
_SETTING_ROW = re.compile(r"^\| `(PRISM_[A-Z_]+)` \| `([^`]*)` \|", re.MULTILINE)
_PRISM_VAR = re.compile(r"\bPRISM_[A-Z][A-Z_]*[A-Z]\b")


@cache
def doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _section(title_start: str) -> str:
    """The text of the ``## `` section whose title starts with ``title_start``."""
    parts = re.split(r"^## ", doc(), flags=re.MULTILINE)
    for part in parts:
        if part.startswith(title_start):
            return part
    raise AssertionError(f"docs/protocol.md has no section starting with {title_start!r}")


def _header_constants() -> dict[str, str]:
    return {
        name: value
        for name, value in vars(headers).items()
        if name.isupper() and isinstance(value, str) and not name.startswith("FRAME_")
    }


def _subject_kinds() -> dict[str, str]:
    """Each kind of subject Subjects builds, mapped to one subject built with it (no prefix)."""
    s = Subjects()
    return {
        "conn.": s.conn("node1.Xk3v9Qm2TbLw"),
        "user.": s.user("alice"),
        "room.": s.room("lobby"),
        "broadcast": s.broadcast,
        "client.event.": s.client_event("chat.send"),
        "client.message": s.client_message,
        "client.connect": s.client_connect,
        "client.disconnect": s.client_disconnect,
        "control.conn.": s.control_conn("node1.Xk3v9Qm2TbLw", "close"),
        "control.user.": s.control_user("alice", "close"),
        "presence.user.": s.presence_user("alice"),
        "presence.room.": s.presence_room("lobby"),
        "presence.online": s.presence_online,
        "presence.cluster": s.presence_cluster,
    }


def test_the_document_exists_and_is_not_trivial() -> None:
    assert DOC.is_file()
    assert len(doc()) > 5_000


@pytest.mark.parametrize("code", list(CloseCode), ids=lambda c: c.name)
def test_every_close_code_is_documented_with_its_name_and_value(code: CloseCode) -> None:
    assert str(code.value) in doc()
    assert code.name in doc()


def test_close_code_table_has_one_row_per_code_with_the_right_reconnect_policy() -> None:
    rows = _CLOSE_ROW.findall(_section("11. Close codes"))
    documented = {int(value): (name, policy) for value, name, policy in rows}
    assert len(rows) == len(documented), "a close code appears twice in the table"
    assert set(documented) == {c.value for c in CloseCode}
    for code in CloseCode:
        name, policy = documented[code.value]
        assert name == code.name
        assert policy == ("yes" if code.reconnect else "no"), f"{code.name}: reconnect is {code.reconnect}"


@pytest.mark.parametrize("code", list(CloseCode), ids=lambda c: c.name)
def test_close_code_meanings_are_the_enum_meanings(code: CloseCode) -> None:
    assert code.meaning in _section("11. Close codes")


def test_the_close_codes_a_backend_may_request_are_listed() -> None:
    standard = sorted(c for c in BACKEND_CLOSE_CODES if c < 4000)
    listed = ", ".join(f"`{c}`" for c in standard)
    assert listed in _section("8. Control subjects")
    assert "`4000`-`4999`" in _section("8. Control subjects")
    assert all(4000 <= c <= 4999 for c in BACKEND_CLOSE_CODES if c >= 4000)


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.name)
def test_every_error_code_is_documented(code: ErrorCode) -> None:
    assert f"`{code.value}`" in doc()


def test_error_code_table_matches_the_enum_exactly() -> None:
    rows = _ERROR_ROW.findall(_section("12. Error codes"))
    assert sorted(rows) == sorted(c.value for c in ErrorCode)


@pytest.mark.parametrize(("name", "value"), sorted(_header_constants().items()))
def test_every_header_is_documented(name: str, value: str) -> None:
    assert f"`{value}`" in doc(), f"headers.{name} = {value!r} is not in docs/protocol.md"


def test_header_values_for_prism_frame_are_documented() -> None:
    assert f"`{headers.FRAME}: {headers.FRAME_BINARY}`" in doc()
    assert f"`{headers.FRAME}: {headers.FRAME_TEXT}`" in doc()


@pytest.mark.parametrize(("kind", "subject"), sorted(_subject_kinds().items()))
def test_every_subject_kind_is_documented(kind: str, subject: str) -> None:
    assert subject.startswith(kind), f"Subjects builds {subject!r}, not a {kind!r} subject"
    assert f"`{kind}" in doc()
    assert subject in doc(), f"no example of {subject!r}"


def test_control_actions_are_documented_for_both_targets() -> None:
    s = Subjects()
    for action in CONTROL_ACTIONS:
        assert f"`control.conn.<conn_id>.{action}`" in doc()
        assert f"`control.user.<user_id>.{action}`" in doc()
        assert s.control_conn("node1.Xk3v9Qm2TbLw", action).startswith("control.conn.")


def test_a_prefixed_subject_is_shown_for_every_direction() -> None:
    s = Subjects("acme.")
    section = _section("2. Subject prefix")
    for subject in (s.room("lobby"), s.client_event("chat.send"), s.client_connect):
        assert subject in section
    assert "PRISM_SUBJECT_PREFIX" in section


def test_presence_keys_are_documented() -> None:
    section = _section("9. Presence registry")
    assert f"`{BUCKET}`" in section
    conn = "node1.Xk3v9Qm2TbLw"
    for key in (conn_key(conn), user_key("alice", conn), room_key("lobby", conn)):
        assert key in section
    for template in ("`conn.<conn_id>`", "`user.<user_id>.<conn_id>`", "`room.<room>.<conn_id>`"):
        assert template in section
    layout = Layout()
    assert f"nats kv watch {layout.bucket_of('alice')} 'user.alice.>'" in section
    assert f"nats kv watch {layout.bucket_of('lobby')} 'room.lobby.>'" in section
    assert f"nats kv get {layout.bucket_of(conn)} {conn_key(conn)}" in section
    flowing = " ".join(section.split())  # the shards the doc says its example names are in
    assert f"`alice` is in `{layout.bucket_of('alice')}`" in flowing
    assert f"`lobby` in `{layout.bucket_of('lobby')}`" in flowing
    assert f"`{conn}` in `{layout.bucket_of(conn)}`" in flowing
    for name, value in ((b"", 0x811C9DC5), (b"a", 0xE40C292C), (b"foobar", 0xBF9CF968)):
        assert fnv1a32(name.decode()) == value
        assert f'`h("{name.decode()}") = {value:#010x}`' in flowing


def test_http_endpoints_and_statuses_are_documented() -> None:
    section = _section("10. HTTP endpoints")
    for needle in ("/ws", "?user=", "/healthz", "/readyz", "/metrics", "`400`", "`404`", "`503`"):
        assert needle in section


def test_every_prism_setting_named_in_the_doc_exists() -> None:
    fields = [*dataclasses.fields(GatewayConfig), *dataclasses.fields(NotifyConfig)]
    known = {env_name(f.name) for f in fields}
    named = set(_PRISM_VAR.findall(doc()))
    assert named, "the doc names no PRISM_* setting"
    assert named <= known, f"unknown settings in docs/protocol.md: {sorted(named - known)}"


def test_limit_defaults_match_the_config() -> None:
    defaults = {env_name(f.name): f.default for f in dataclasses.fields(GatewayConfig)}
    rows = _SETTING_ROW.findall(_section("13. Limits"))
    assert len(rows) >= 5
    for name, shown in rows:
        assert shown == str(defaults[name]), f"{name}: doc says {shown}, config default is {defaults[name]!r}"


def test_http_endpoint_settings_defaults_match_the_config() -> None:
    """The settings tables of section 10 (the console, the metrics port) show the config's defaults."""
    defaults = {env_name(f.name): f.default for f in dataclasses.fields(GatewayConfig)}
    rows = _SETTING_ROW.findall(_section("10. HTTP endpoints"))
    assert {"PRISM_CONSOLE", "PRISM_METRICS_PORT"} <= {name for name, _ in rows}
    for name, shown in rows:
        default = defaults[name]
        expected = str(default).lower() if isinstance(default, bool) else str(default)
        assert shown == expected, f"{name}: doc says {shown}, config default is {default!r}"
