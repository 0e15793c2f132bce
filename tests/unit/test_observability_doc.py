"""docs/observability.md and docs/notifications.md list every label value whose series start at 0."""

from __future__ import annotations

import re
from pathlib import Path

from gateway import metrics as gm
from notification_service import metrics as nm
from notification_service.core import Kind, Problem, SelfRefusal

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _row(text: str, starts: str) -> str:
    rows = [line for line in text.splitlines() if line.startswith(starts)]
    assert len(rows) == 1, f"expected one table row starting with {starts!r}, found {len(rows)}"
    return rows[0]


def _listed(row: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", row))


def test_the_gateways_label_values_are_listed() -> None:
    doc = (DOCS / "observability.md").read_text(encoding="utf-8")
    outcomes = {o for values in gm.DELIVERY_OUTCOMES.values() for o in values}
    for starts, values in [
        ("| `code` (`prism_disconnects_total`)", set(gm.DISCONNECT_CODES)),
        ("| `kind` (`prism_frames_in_total`)", set(gm.FRAME_KINDS)),
        ("| `target` (", set(gm.DELIVERY_TARGETS)),
        ("| `outcome` (`prism_deliveries_total`)", outcomes | set(gm.DELIVERY_TARGETS)),
        ("| `code` (`prism_client_errors_total`)", set(gm.CLIENT_ERROR_CODES)),
        ("| `reason` (`prism_rejections_total`)", set(gm.REJECTION_REASONS)),
        ("| `op` (`prism_presence_op_seconds`)", set(gm.PRESENCE_OPS)),
        ("| `op` (`prism_presence_errors_total`)", set(gm.PRESENCE_ERROR_OPS)),
        ("| `scope` (the `prism_recovery*` metrics)", set(gm.RECOVERY_SCOPES)),
        ("| `outcome` (`prism_recoveries_total`)", set(gm.RECOVERY_OUTCOMES)),
        ("| `prism_recovery_errors_total{op}`", set(gm.RECOVERY_ERROR_OPS)),
        ("| `kind` (`prism_http_backend_calls_total`", set(gm.HTTP_BACKEND_KINDS)),
        ("| `outcome` (`prism_http_backend_calls_total`)", set(gm.HTTP_BACKEND_OUTCOMES)),
    ]:
        row = _row(doc, starts)
        assert values <= _listed(row), f"{starts}: missing {sorted(values - _listed(row))}"


def test_the_notification_services_label_values_are_listed() -> None:
    doc = (DOCS / "notifications.md").read_text(encoding="utf-8")
    for metric, values in [
        ("received", set(nm.RECEIVED_KINDS)),
        ("delivered", {k.value for k in Kind}),
        ("no_recipients", {k.value for k in Kind}),
        ("retries", set(nm.RETRY_REASONS)),
        ("expired", set(nm.EXPIRED_WHERE)),
        ("processing", set(nm.PROCESSING_OUTCOMES)),
        ("client_requests", {"accepted", *(r.value for r in SelfRefusal)}),
    ]:
        row = _row(doc, f"| `{nm.NAMES[metric]}` |")
        words = set(re.findall(r"[a-z_]+", row.split("|")[3]))
        assert values <= words, f"{metric}: missing {sorted(values - words)}"
    dead_letter_slugs = _listed("\n".join(line for line in doc.splitlines() if line.startswith("| `")))
    assert {p.value for p in Problem} <= dead_letter_slugs
