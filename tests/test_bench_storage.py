"""The storage benchmark stores through the collector and projects every table it measured."""

from __future__ import annotations

import pytest

from bench import storage


def test_a_small_run_measures_every_table_and_plans_both_fleets(
    capsys: pytest.CaptureFixture[str],
) -> None:
    storage.main(["--instruments", "3", "--days", "2", "--events-per-day", "4"])
    out = capsys.readouterr().out
    assert "stored 24 events and 8,640 heartbeats" in out
    measured = {line.split(" | ")[0].strip("| "): line for line in out.splitlines()}
    assert measured["heartbeats"].startswith("| heartbeats | 8,640 | 1440.00 |")
    # Each instrument's latest hour is still current: the other 47 are kept.
    assert measured["power_hourly"].startswith("| power_hourly | 141 | 23.50 |")
    assert measured["power_current"].startswith("| power_current | 3 | 0.50 |")
    assert measured["events"].startswith("| events | 24 | 4.00 |")
    # A year of hourly power is 8,760 rows an instrument; heartbeats, 30 days of 1,440.
    assert "| power_hourly (a year) | 17,520,000 |" in out
    assert "| heartbeats (the last 30 days) | 86,400,000 |" in out
    assert "heartbeats received a year (kept: the last 30 days): 1,051,200,000 for 2,000" in out
