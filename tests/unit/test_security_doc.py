"""docs/security.md shows exactly the NATS permissions that shared.nats_permissions renders (and that
tests/integration/test_nats_auth.py runs the gateway under)."""

from __future__ import annotations

from pathlib import Path

from shared.nats_permissions import ROLES, render_users

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"


def test_the_permissions_block_in_the_doc_is_the_rendered_one() -> None:
    rendered = render_users({role: f"<{role} password>" for role in ROLES})
    assert rendered in DOC.read_text(encoding="utf-8")
