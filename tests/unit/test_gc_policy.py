"""The collector settings a Prism process takes once started (in a child, so this process keeps its own)."""

from __future__ import annotations

import subprocess
import sys

from shared.gc_policy import THRESHOLDS


def test_settle_freezes_start_up_objects_and_raises_thresholds() -> None:
    code = (
        "import gc; from shared import gc_policy; gc_policy.settle(); "
        "print(gc.get_threshold(), gc.get_freeze_count() > 1000, gc.isenabled())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == f"{THRESHOLDS} True True"
