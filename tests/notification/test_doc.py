"""docs/notifications.md names every setting, metric, header and dead-letter reason the code has."""

from __future__ import annotations

from pathlib import Path

from notification_service import core
from notification_service.config import NotifyConfig
from notification_service.metrics import NAMES
from shared.config import describe

DOC = (Path(__file__).resolve().parents[2] / "docs" / "notifications.md").read_text(encoding="utf-8")


def test_every_setting_is_documented() -> None:
    missing = [env for env, *_ in describe(NotifyConfig) if f"`{env}`" not in DOC]
    assert missing == []


def test_every_metric_is_documented() -> None:
    assert [name for name in NAMES.values() if f"`{name}`" not in DOC] == []


def test_every_header_and_reason_is_documented() -> None:
    headers = [core.H_ID, core.H_EXPIRES, core.H_REASON, core.H_ERROR, core.H_SUBJECT, core.H_DELIVERIES]
    headers += [core.H_SEQUENCE, core.MSG_ID, core.MSG_TTL]
    assert [h for h in headers if f"`{h}`" not in DOC] == []
    assert [p.value for p in core.Problem if f"`{p.value}`" not in DOC] == []
