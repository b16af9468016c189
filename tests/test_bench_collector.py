"""The collector benchmark runs end to end on a tiny load: its figures are not tested, its code is.

Benchmarks run by hand for minutes; without this, one broken by a change of
the code it drives would only be found when someone needs its figures.
"""

from __future__ import annotations

import pytest

from bench import collector


def test_every_part_runs_and_counts_each_event_once(capsys: pytest.CaptureFixture[str]) -> None:
    collector.main(
        [
            "--events", "200",
            "--instruments", "4",
            "--repeat", "1",
            "--naive-events", "50",
            "--latency-rate", "100",
            "--latency-seconds", "1",
            "--latency-batch-ms", "50",
            "--heartbeats", "40",
            "--heartbeat-instruments", "8",
        ]
    )  # fmt: skip

    out = capsys.readouterr().out
    assert "LOSS" not in out
    assert "over all 2 drains: 0 events lost, 0 duplicated" in out
    assert "- while the collector drained, medians: CPU per event (us): collector " in out
    assert "collector, batch_ms 50 (batch_max 1000): **p50 " in out
    assert "### 4. Heartbeats: a backlog of 40 from 8 instruments (5 each" in out
    assert "heartbeats/s stored**, bare paho " in out
    assert "medians: CPU per heartbeat (us): collector " in out
