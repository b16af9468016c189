"""Fleet overview: what state the instruments are in and how much they are used.

The usage panels compute the API's startup-rate report over the dashboard's
time range (see ``usage_sql``), so the numbers here and in
``/api/v1/reports/startup-rate`` for the same instants are the same numbers.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

from dashboards.common import FILTER, HOURS, RATIO, dashboard
from dashboards.panels import pie_panel, stat_panel, table_panel, time_series_panel
from dashboards.query import Sql
from dashboards.usage_sql import local_buckets, ratio, usage

UID = "instrumetry-fleet"

CURRENT_STATE = f"""
SELECT count(*) FILTER (WHERE state = 'off') AS off,
       count(*) FILTER (WHERE state = 'standby') AS standby,
       count(*) FILTER (WHERE state = 'running') AS running,
       count(*) FILTER (WHERE state = 'unknown') AS unknown
FROM (
  SELECT CASE WHEN st.status = 'online' AND v.state IS NOT NULL THEN v.state::text
              ELSE 'unknown' END AS state
  FROM instruments i
  LEFT JOIN agent_status st ON st.instrument_id = i.id
  LEFT JOIN LATERAL (
    SELECT latest.state FROM (
      SELECT state, end_time FROM intervals
       WHERE instrument_id = i.id ORDER BY start_time DESC LIMIT 1) AS latest
     WHERE latest.end_time IS NULL
  ) AS v ON true
  WHERE {FILTER}
) AS current
"""
"""The state of each instrument's open interval, or unknown while its agent is not online.

The open interval is the instrument's latest: one probe of the primary key
each. Looked for by ``end_time IS NULL``, which no index holds, it read every
interval ever derived at each refresh."""

AGENT_STATUS = f"""
SELECT count(*) FILTER (WHERE st.status = 'online') AS online,
       count(*) FILTER (WHERE st.status = 'offline') AS offline,
       count(*) FILTER (WHERE st.status IS NULL) AS never_seen
FROM instruments i LEFT JOIN agent_status st ON st.instrument_id = i.id
WHERE {FILTER}
"""

FLEET_TOTALS = f"""
WITH {usage()}
SELECT {ratio("sum(on_scheduled_h)", "sum(scheduled_h)")} AS startup_rate,
       {ratio("sum(running_scheduled_h)", "sum(scheduled_h)")} AS utilisation,
       sum(effective_h) AS effective_h,
       1 - {ratio("sum(unknown_h)", "sum(period_h)")} AS coverage
FROM usage
"""

BY_INSTITUTION = f"""
WITH {usage()}
SELECT sel.institution, count(*) AS instruments, sum(u.scheduled_h) AS scheduled_h,
       {ratio("sum(u.on_scheduled_h)", "sum(u.scheduled_h)")} AS startup_rate,
       {ratio("sum(u.running_scheduled_h)", "sum(u.scheduled_h)")} AS utilisation,
       sum(u.effective_h) AS effective_h,
       1 - {ratio("sum(u.unknown_h)", "sum(u.period_h)")} AS coverage
FROM usage u JOIN selected sel ON sel.instrument_id = u.instrument_id
GROUP BY sel.institution ORDER BY sel.institution
"""

BY_INSTRUMENT = f"""
WITH {usage()}
SELECT u.instrument_id AS instrument, sel.name, sel.institution, u.scheduled_h,
       u.on_scheduled_h, {ratio("u.on_scheduled_h", "u.scheduled_h")} AS startup_rate,
       u.working_days, u.days_on, {ratio("u.days_on", "u.working_days")}::float8 AS days_on_share,
       {ratio("u.running_scheduled_h", "u.scheduled_h")} AS utilisation, u.effective_h,
       u.unknown_h, 1 - {ratio("u.unknown_h", "u.period_h")} AS coverage
FROM usage u JOIN selected sel ON sel.instrument_id = u.instrument_id
ORDER BY u.instrument_id
"""
"""The API's startup-rate report, one row per instrument, same names and definitions."""

RANKED = """
WITH {usage}
SELECT u.instrument_id AS instrument, sel.name, sel.institution,
       {startup} AS startup_rate, {utilisation} AS utilisation,
       1 - {unknown} AS coverage
FROM usage u JOIN selected sel ON sel.instrument_id = u.instrument_id
WHERE u.scheduled_h > 0
ORDER BY startup_rate {direction} NULLS LAST, u.instrument_id
LIMIT 10
"""

DAILY_COVERAGE = f"""
WITH {usage(local_buckets("day"))}
SELECT u.bucket AS time, sel.institution AS metric,
       1 - {ratio("sum(u.unknown_h)", "sum(u.period_h)")} AS coverage
FROM usage u JOIN selected sel ON sel.instrument_id = u.instrument_id
GROUP BY 1, 2 ORDER BY 1, 2
"""

_USAGE_UNITS = {
    "scheduled_h": HOURS,
    "on_scheduled_h": HOURS,
    "effective_h": HOURS,
    "unknown_h": HOURS,
    "startup_rate": RATIO,
    "days_on_share": RATIO,
    "utilisation": RATIO,
    "coverage": RATIO,
}


def _ranked(direction: str) -> str:
    return RANKED.format(
        usage=usage(),
        startup=ratio("u.on_scheduled_h", "u.scheduled_h"),
        utilisation=ratio("u.running_scheduled_h", "u.scheduled_h"),
        unknown=ratio("u.unknown_h", "u.period_h"),
        direction=direction,
    )


def build() -> dash.Dashboard:
    ranked_columns = ("instrument", "name", "institution", "startup_rate", "utilisation")
    return (
        dashboard(
            UID,
            "Instrumetry · Fleet overview",
            "Current state of every instrument and its agent; measured usage over the time "
            "range. Working hours and days are each institution's own, in its time zone. "
            "Unknown time (no data) is never counted as off: see coverage.",
            "now-7d",
            "now",
        )
        .with_panel(
            stat_panel(
                "Fleet usage in this period",
                "Pooled over the selected instruments: startup rate = ON ∩ W / W, "
                "utilisation = RUN ∩ W / W, effective hours, coverage = 1 − unknown / period.",
                Sql(FLEET_TOTALS).columns("startup_rate", "utilisation", "effective_h", "coverage"),
                {
                    "startup_rate": RATIO,
                    "utilisation": RATIO,
                    "effective_h": HOURS,
                    "coverage": RATIO,
                },
                width=12,
            )
        )
        .with_panel(
            pie_panel(
                "Instruments by current state",
                "The state of each instrument's latest interval; unknown while its agent is "
                "offline or has never reported.",
                Sql(CURRENT_STATE).columns("off", "standby", "running", "unknown"),
            )
        )
        .with_panel(
            pie_panel(
                "Agents by status",
                "The status each agent last announced (offline is its MQTT last will).",
                Sql(AGENT_STATUS).columns("online", "offline", "never_seen"),
            )
        )
        .with_panel(
            table_panel(
                "Usage by institution",
                "Startup rate and utilisation pooled over each institution's selected instruments.",
                Sql(BY_INSTITUTION).columns(
                    "institution",
                    "instruments",
                    "scheduled_h",
                    "startup_rate",
                    "utilisation",
                    "effective_h",
                    "coverage",
                ),
                _USAGE_UNITS,
                width=12,
                height=8,
            )
        )
        .with_panel(
            time_series_panel(
                "Coverage by institution, per local day",
                "Share of each day with data; a dip is missing data, not an idle instrument.",
                [Sql(DAILY_COVERAGE).columns("time", "metric", "coverage").time_series()],
                RATIO,
            )
        )
        .with_panel(
            table_panel(
                "Lowest startup rates",
                "The ten instruments with working hours in the period that were on the least.",
                Sql(_ranked("ASC")).columns(*ranked_columns, "coverage"),
                _USAGE_UNITS,
                width=12,
                height=8,
            )
        )
        .with_panel(
            table_panel(
                "Highest startup rates",
                "The ten instruments with working hours in the period that were on the most.",
                Sql(_ranked("DESC")).columns(*ranked_columns, "coverage"),
                _USAGE_UNITS,
                width=12,
                height=8,
            )
        )
        .with_panel(
            table_panel(
                "Usage by instrument",
                "The API's startup-rate report for this time range: the same definitions "
                "and the same numbers as /api/v1/reports/startup-rate.",
                Sql(BY_INSTRUMENT).columns(
                    "instrument",
                    "name",
                    "institution",
                    "scheduled_h",
                    "on_scheduled_h",
                    "startup_rate",
                    "working_days",
                    "days_on",
                    "days_on_share",
                    "utilisation",
                    "effective_h",
                    "unknown_h",
                    "coverage",
                ),
                _USAGE_UNITS,
                height=12,
            )
        )
    )
