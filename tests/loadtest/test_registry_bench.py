"""The registry benchmark's arithmetic and its command line (the measurements themselves run in
docs/benchmarks.md, not here)."""

from __future__ import annotations

import pytest

from loadtest.registry_bench import main, projection


def test_the_projection_spreads_a_deploys_writes_over_the_shards() -> None:
    # 10,000 reconnects/s at 6 writes each, over 16 leaders that each take 30,000 writes/s.
    load = projection(ceiling=30_000, writes_per_reconnect=6, shards=16)
    assert load == {"writes_per_s": 60_000, "per_leader": 3_750, "headroom": 8.0}
    assert projection(30_000, 6, 1)["headroom"] == 0.5


def test_an_unknown_phase_is_refused_with_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--phases", "sweeps,warp"])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "unknown phase(s) warp; choose from writes, ceiling, storms, sweeps, room" in error
