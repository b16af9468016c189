"""Instrument detail: one instrument's (or a few) states, power, daily hours, events, gaps."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

from dashboards.common import FILTER, HOURS, dashboard, state_code
from dashboards.panels import state_timeline_panel, table_panel, time_series_panel
from dashboards.query import Sql
from dashboards.usage_sql import FROM, TO, local_buckets, prorated_quota, usage

UID = "instrumetry-instrument"

KNOWN_UNTIL = "coalesce(v.end_time, greatest(i.last_seen, v.start_time))"
"""Where an interval's known time ends: its end, or for the open one the last message."""

STATES = f"""
WITH points AS (
  SELECT v.instrument_id, greatest(v.start_time, {FROM}) AS time,
         CASE WHEN {KNOWN_UNTIL} > v.start_time THEN v.state::text ELSE 'unknown' END AS state
  FROM intervals v JOIN instruments i ON i.id = v.instrument_id
  WHERE {FILTER} AND v.start_time < {TO} AND {KNOWN_UNTIL} > {FROM}
  UNION ALL
  SELECT v.instrument_id, {KNOWN_UNTIL}, 'unknown'
  FROM intervals v JOIN instruments i ON i.id = v.instrument_id
  WHERE {FILTER} AND {KNOWN_UNTIL} > v.start_time
    AND {KNOWN_UNTIL} BETWEEN {FROM} AND {TO}
    AND NOT EXISTS (SELECT 1 FROM intervals n
                    WHERE n.instrument_id = v.instrument_id AND n.start_time = {KNOWN_UNTIL})
)
SELECT time, instrument_id AS metric, {state_code("state")} AS state
FROM points ORDER BY time, metric
"""
"""A point where each interval starts, and an ``unknown`` one where known time stops."""

POWER = f"""
SELECT $__timeGroupAlias(p.hour, $__interval), p.instrument_id AS metric,
       sum(p.power_sum_w) / nullif(sum(p.samples), 0) AS power_w
FROM power_hours p JOIN instruments i ON i.id = p.instrument_id
WHERE $__timeFilter(p.hour) AND {FILTER}
GROUP BY 1, 2 ORDER BY 1, 2
"""
"""Mean power per hour (or per coarser interval), weighted by the meter's samples: from the
hourly statistics, which outlast the raw heartbeats."""

DAILY = f"""
WITH {usage(local_buckets("day"))}
SELECT u.bucket AS time, sum(u.on_h) AS on_h, sum(u.running_h) AS running_h,
       sum(u.effective_h) AS effective_h, sum({prorated_quota("u.p0", "u.p1")}) AS quota_h
FROM usage u JOIN selected sel ON sel.instrument_id = u.instrument_id
GROUP BY 1 ORDER BY 1
"""
"""Hours per local day of the instruments' institution, and their quotas pro-rated to the day."""

EVENTS = f"""
SELECT e.device_time AS time, e.instrument_id AS instrument, e.seq,
       e.from_state::text AS from_state, e.to_state::text AS to_state, e.power_w,
       e.received_at, extract(epoch FROM e.received_at - e.device_time)::float8 AS lag_s
FROM events e JOIN instruments i ON i.id = e.instrument_id
WHERE $__timeFilter(e.device_time) AND {FILTER}
ORDER BY e.device_time DESC, e.instrument_id
LIMIT 1000
"""

GAPS = f"""
WITH {usage()}
SELECT s.instrument_id AS instrument, lower(g) AS gap_start, upper(g) AS gap_end,
       extract(epoch FROM upper(g) - lower(g))::float8 / 3600 AS hours
FROM sets s CROSS JOIN LATERAL unnest(s.pm - s.known_m) AS g
ORDER BY s.instrument_id, gap_start
"""
"""Time in the range without data (agent offline, meter unreachable): unknown, not off."""


def build() -> dash.Dashboard:
    return (
        dashboard(
            UID,
            "Instrumetry · Instrument detail",
            "States, power, daily hours against the quota, events and gaps of the selected "
            "instruments. Days are local days of each instrument's institution.",
            "now-7d",
            "now",
        )
        .with_panel(
            state_timeline_panel(
                "State timeline",
                "Measured states; unknown where the agent was not heard from.",
                Sql(STATES).columns("time", "metric", "state").time_series(),
            )
        )
        .with_panel(
            time_series_panel(
                "Power (hourly mean)",
                "Mean power the meter reported, weighted by its samples, per hour or per "
                "coarser interval; kept for good, unlike the raw heartbeats.",
                [Sql(POWER).columns("time", "metric", "power_w").time_series()],
                "watt",
                width=24,
            )
        )
        .with_panel(
            time_series_panel(
                "Daily hours against the quota",
                "On (standby or running), running and effective hours per local day, summed "
                "over the selected instruments; quota_h is each instrument's annual quota (its "
                "own, else 1,400 h general and 800 h specialised) pro-rated to the day.",
                [
                    Sql(DAILY)
                    .columns("time", "on_h", "running_h", "effective_h", "quota_h")
                    .time_series()
                ],
                HOURS,
                width=24,
                bars=True,
                lines=("quota_h",),
            )
        )
        .with_panel(
            table_panel(
                "Events",
                "The latest 1,000 state transitions in the range, as the agents signed them; "
                "lag_s is the delay from the device's clock to the collector.",
                Sql(EVENTS).columns(
                    "time",
                    "instrument",
                    "seq",
                    "from_state",
                    "to_state",
                    "power_w",
                    "received_at",
                    "lag_s",
                ),
                {"power_w": "watt", "lag_s": "s"},
                width=14,
                height=10,
            )
        )
        .with_panel(
            table_panel(
                "Gaps (unknown time)",
                "Spans in the range with no data; reports count them as unknown, never off.",
                Sql(GAPS).columns("instrument", "gap_start", "gap_end", "hours"),
                {"hours": HOURS},
                width=10,
                height=10,
            )
        )
    )
