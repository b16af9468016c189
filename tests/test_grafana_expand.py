"""The test expander reproduces Grafana's macros and variable formats (pure, no services).

Expected strings are the examples of Grafana's PostgreSQL macro engine and
templating documentation, so a panel that passes here is sent to the
database as Grafana would send it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.grafana import (
    MacroError,
    TimeRange,
    Variable,
    expand,
    expand_promql,
    format_interval,
    rfc3339,
)

RANGE = TimeRange(
    datetime(2026, 3, 1, 16, 0, tzinfo=UTC),
    datetime(2026, 3, 31, 15, 59, 59, 999_000, tzinfo=UTC),
    timedelta(minutes=5),
)


def test_time_macros_are_rfc3339_utc() -> None:
    assert expand("$__timeFilter(e.device_time)", RANGE, {}) == (
        "e.device_time BETWEEN '2026-03-01T16:00:00Z' AND '2026-03-31T15:59:59.999Z'"
    )
    assert expand("$__timeFrom()::timestamptz", RANGE, {}) == "'2026-03-01T16:00:00Z'::timestamptz"
    assert expand("$__timeTo()", RANGE, {}) == "'2026-03-31T15:59:59.999Z'"


def test_time_group_is_time_bucket_on_timescaledb() -> None:
    assert expand("$__timeGroupAlias(received_at, $__interval)", RANGE, {}) == (
        "time_bucket('300.000s',received_at) AS \"time\""
    )
    assert expand("$__timeGroup(t, '1h')", RANGE, {}) == "time_bucket('3600.000s',t)"
    assert expand("SELECT $__timeGroup(t, 1h), v", RANGE, {}) == (
        "SELECT time_bucket('3600.000s',t) AS \"time\", v"
    )


def test_interval_and_epoch_macros() -> None:
    assert expand("$__interval $__interval_ms", RANGE, {}) == "5m 300000"
    assert expand("$__unixEpochFilter(ts)", RANGE, {}) == ("ts >= 1772380800 AND ts <= 1774972799")
    assert format_interval(timedelta(days=1)) == "1d"
    assert format_interval(timedelta(seconds=90)) == "1m"
    assert rfc3339(datetime(2026, 1, 1, 8, tzinfo=UTC) + timedelta(microseconds=500)) == (
        "2026-01-01T08:00:00.0005Z"
    )


def test_multi_value_variables_are_quoted_literals() -> None:
    ids = Variable(["nmr-1", "o'brien"])
    assert expand("IN ($instrument)", RANGE, {"instrument": ids}) == "IN ('nmr-1','o''brien')"
    assert expand("IN (${instrument})", RANGE, {"instrument": ids}) == "IN ('nmr-1','o''brien')"
    assert expand("IN ([[instrument]])", RANGE, {"instrument": ids}) == "IN ('nmr-1','o''brien')"


def test_single_value_variable_is_not_quoted() -> None:
    one = Variable(["it's"], multi=False, include_all=False)
    assert expand("= '$name'", RANGE, {"name": one}) == "= 'it''s'"


def test_explicit_formats() -> None:
    ids = Variable(["a", "b'c"])
    assert expand("${v:csv}", RANGE, {"v": ids}) == "a,b'c"
    assert expand("${v:sqlstring}", RANGE, {"v": ids}) == "'a','b''c'"
    assert expand("${v:singlequote}", RANGE, {"v": ids}) == "'a','b\\'c'"
    with pytest.raises(MacroError):
        expand("${v:lucene}", RANGE, {"v": ids})


def test_unknown_macros_are_errors_and_unknown_variables_stay() -> None:
    assert expand("$nothing", RANGE, {}) == "$nothing"
    with pytest.raises(MacroError):
        expand("$__nonsense(x)", RANGE, {})
    with pytest.raises(MacroError):
        expand("$__timeFilter()", RANGE, {})


def test_prometheus_intervals() -> None:
    """$__rate_interval = max($__interval + scrape, 4 × scrape); $__interval ≥ scrape."""
    scrape = timedelta(seconds=15)
    expr = "rate(x[$__rate_interval]) $__interval $__interval_ms $__range"
    assert expand_promql(expr, RANGE, scrape) == "rate(x[5m]) 5m 300000 2592000s"
    short = TimeRange(RANGE.start, RANGE.start + timedelta(hours=1), timedelta(seconds=2))
    assert expand_promql(expr, short, scrape) == "rate(x[1m]) 15s 15000 3600s"
