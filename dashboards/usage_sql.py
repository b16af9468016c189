"""The usage metrics of DESIGN.md in SQL, for panels that Grafana runs on the database.

The API computes the metrics in Python (``instrumetry.domain.metrics``);
Grafana can only run SQL, so this module writes the same definitions as
PostgreSQL multirange arithmetic, and the tests hold both to the same numbers
on the same simulated fleet. Per instrument and period P:

- known time: stored intervals other than ``unknown``, the open one ending at
  the instrument's ``last_seen`` (a gap is unknown, never off);
- W: working windows, built day by day in the institution's own time zone
  from its calendar (weekdays, hours, holidays, swapped working days);
- scheduled = |W ∩ P|, startup rate = |ON ∩ W ∩ P| / |W ∩ P|,
  utilisation = |RUN ∩ W ∩ P| / |W ∩ P|, days on = working days with ON,
  effective = |ON ∩ ⋃ [a − prep, b + post] ∩ P|, coverage = |known ∩ P| / |P|;
- external = |E ∩ P ∩ ⋃ windows of the instrument's external service orders|.

Periods are rows ``(instrument_id, bucket, p0, p1)`` so one query serves a
whole dashboard range, each local day or each local month alike.
"""

from __future__ import annotations

from instrumetry.domain.metrics import Allowances
from instrumetry.domain.registry import Category

ALLOWANCES = Allowances()
"""The API's allowances (DESIGN.md defaults): the panels must count effective hours alike."""

FROM = "$__timeFrom()::timestamptz"
TO = "$__timeTo()::timestamptz"

SELECTED = """selected AS (
  SELECT i.id AS instrument_id, i.name, i.category, i.annual_quota_h, i.last_seen,
         s.id AS institution_id, s.name AS institution, s.tz, s.workdays,
         s.day_start, s.day_end, s.holidays, s.extra_workdays
  FROM instruments i JOIN institutions s ON s.id = i.institution_id
  WHERE i.institution_id IN ($institution) AND i.id IN ($instrument)
)"""
"""The instruments the dashboard's variables select, with their institution's calendar."""

WHOLE_RANGE = f"SELECT instrument_id, {FROM} AS bucket, {FROM} AS p0, {TO} AS p1 FROM selected"
"""One period per instrument: the dashboard's time range."""


def local_buckets(unit: str) -> str:
    """Periods of one local ``day`` or ``month`` of each instrument's institution.

    Each bucket starts at local midnight in the institution's time zone (so a
    Shanghai day starts at 16:00 UTC) and is cut to the dashboard's range.
    """
    step = f"interval '1 {unit}'"
    return f"""SELECT sel.instrument_id, b.local AT TIME ZONE sel.tz AS bucket,
         greatest(b.local AT TIME ZONE sel.tz, {FROM}) AS p0,
         least((b.local + {step}) AT TIME ZONE sel.tz, {TO}) AS p1
  FROM selected sel CROSS JOIN LATERAL generate_series(
         date_trunc('{unit}', {FROM} AT TIME ZONE sel.tz),
         {TO} AT TIME ZONE sel.tz, {step}) AS b (local)
  WHERE b.local AT TIME ZONE sel.tz < {TO}"""


def hours(multirange: str) -> str:
    """The total length of a multirange, in hours."""
    return (
        "(SELECT coalesce(sum(extract(epoch FROM upper(r) - lower(r))), 0) / 3600"
        f" FROM unnest({multirange}) AS r)"
    )


def usage(periods: str = WHOLE_RANGE) -> str:
    """CTEs ending in ``usage``: every metric per instrument and period of ``periods``.

    ``usage`` has the columns ``instrument_id, bucket, p0, p1, period_h,
    scheduled_h, on_h, on_scheduled_h, running_h, running_scheduled_h,
    effective_h, external_h, unknown_h, working_days, days_on`` (floats and integers).
    Intervals are read over P widened by the allowances, as the API reads
    them, so a run just outside P counts its preparation inside P. External
    hours are the effective hours inside the windows of external orders
    (``service_orders.external``), as ``api.queries.external_windows`` reads them.
    """
    prep = f"interval '{int(ALLOWANCES.prep.total_seconds())} seconds'"
    post = f"interval '{int(ALLOWANCES.post.total_seconds())} seconds'"
    return f"""{SELECTED},
periods AS (
  {periods}
),
known AS (
  SELECT p.instrument_id, p.bucket, v.state,
         tstzrange(v.start_time, coalesce(v.end_time, greatest(sel.last_seen, v.start_time))) AS r
  FROM periods p
  JOIN selected sel ON sel.instrument_id = p.instrument_id
  CROSS JOIN LATERAL intervals_overlapping(p.instrument_id, p.p0 - {post}, p.p1 + {prep}) AS v
  WHERE v.state <> 'unknown'
),
sets AS (
  SELECT p.instrument_id, p.bucket, p.p0, p.p1,
         tstzmultirange(tstzrange(p.p0, p.p1)) AS pm,
         coalesce(range_agg(k.r) FILTER (WHERE k.state IN ('standby', 'running')), '{{}}')
           AS on_m,
         coalesce(range_agg(k.r) FILTER (WHERE k.state = 'running'), '{{}}') AS run_m,
         coalesce(range_agg(tstzrange(lower(k.r) - {prep}, upper(k.r) + {post}))
           FILTER (WHERE k.state = 'running' AND NOT isempty(k.r)), '{{}}') AS near_run_m,
         coalesce(range_agg(k.r), '{{}}') AS known_m
  FROM periods p
  LEFT JOIN known k ON k.instrument_id = p.instrument_id AND k.bucket = p.bucket
  GROUP BY p.instrument_id, p.bucket, p.p0, p.p1
),
days AS (
  SELECT p.instrument_id, p.bucket,
         tstzrange((d.day + sel.day_start) AT TIME ZONE sel.tz,
                   (d.day + sel.day_end) AT TIME ZONE sel.tz) AS working_window,
         tstzrange(d.day::timestamp AT TIME ZONE sel.tz,
                   (d.day + 1)::timestamp AT TIME ZONE sel.tz) AS whole_day
  FROM periods p
  JOIN selected sel ON sel.instrument_id = p.instrument_id
  CROSS JOIN LATERAL (
    SELECT (p.p0 AT TIME ZONE sel.tz)::date + n AS day
    FROM generate_series(0, ((p.p1 - interval '1 microsecond') AT TIME ZONE sel.tz)::date
                            - (p.p0 AT TIME ZONE sel.tz)::date) AS n
  ) d
  WHERE d.day = ANY (sel.extra_workdays)
     OR (extract(isodow FROM d.day)::int - 1 = ANY (sel.workdays)
         AND d.day <> ALL (sel.holidays))
),
external AS (
  SELECT p.instrument_id, p.bucket, range_agg(tstzrange(o.starts_at, o.ends_at)) AS windows_m
  FROM periods p JOIN service_orders o ON o.instrument_id = p.instrument_id AND o.external
   AND o.starts_at < p.p1 AND o.ends_at > p.p0
  GROUP BY p.instrument_id, p.bucket
),
work AS (
  SELECT instrument_id, bucket, range_agg(working_window) AS windows_m,
         count(*) AS working_days
  FROM days GROUP BY instrument_id, bucket
),
clipped AS (
  SELECT s.instrument_id, s.bucket, s.p0, s.p1, s.on_m * s.pm AS on_p, s.run_m * s.pm AS run_p,
         s.on_m * s.near_run_m * s.pm AS effective_p, s.known_m * s.pm AS known_p,
         coalesce(w.windows_m * s.pm, '{{}}') AS windows_p,
         coalesce(x.windows_m, '{{}}') AS external_m,
         coalesce(w.working_days, 0) AS working_days
  FROM sets s LEFT JOIN work w ON w.instrument_id = s.instrument_id AND w.bucket = s.bucket
  LEFT JOIN external x ON x.instrument_id = s.instrument_id AND x.bucket = s.bucket
),
usage AS (
  SELECT c.instrument_id, c.bucket, c.p0, c.p1,
         extract(epoch FROM c.p1 - c.p0)::float8 / 3600 AS period_h,
         {hours("c.windows_p")}::float8 AS scheduled_h,
         {hours("c.on_p")}::float8 AS on_h,
         {hours("c.on_p * c.windows_p")}::float8 AS on_scheduled_h,
         {hours("c.run_p")}::float8 AS running_h,
         {hours("c.run_p * c.windows_p")}::float8 AS running_scheduled_h,
         {hours("c.effective_p")}::float8 AS effective_h,
         {hours("c.effective_p * c.external_m")}::float8 AS external_h,
         (extract(epoch FROM c.p1 - c.p0)::float8 / 3600 - {hours("c.known_p")}::float8)
           AS unknown_h,
         c.working_days::int AS working_days,
         (SELECT count(*) FROM days d WHERE d.instrument_id = c.instrument_id
            AND d.bucket = c.bucket AND c.on_p && d.whole_day)::int AS days_on
  FROM clipped c
)"""


def ratio(numerator: str, denominator: str) -> str:
    """``numerator / denominator``, NULL when the denominator is zero (undefined, as in the API)."""
    return f"({numerator}) / nullif({denominator}, 0)"


QUOTA_H = (
    f"coalesce(sel.annual_quota_h, CASE sel.category WHEN '{Category.SPECIALISED.value}' "
    f"THEN {Category.SPECIALISED.annual_quota_h} ELSE {Category.GENERAL.annual_quota_h} END)"
)
"""The instrument's standard annual hours (定额机时): its own (registry, migration 0004), or
NULL for its category's, as the API's ``InstrumentRecord.quota_h``."""


def prorated_quota(p0: str, p1: str) -> str:
    """The annual quota pro-rated to ``[p0, p1)``: by the share of each local year it covers.

    As the API's ``quota_hours``: a whole local year gets exactly the annual
    hours, leap or not, and a period across New Year takes each year's part
    at that year's length.
    """
    start = "(y.local AT TIME ZONE sel.tz)"
    end = "((y.local + interval '1 year') AT TIME ZONE sel.tz)"
    part = f"least({p1}, {end}) - greatest({p0}, {start})"
    year = f"extract(epoch FROM {end} - {start})"
    return f"""(SELECT sum({QUOTA_H} * extract(epoch FROM {part}) / {year})
   FROM generate_series(date_trunc('year', {p0} AT TIME ZONE sel.tz),
                        ({p1} - interval '1 microsecond') AT TIME ZONE sel.tz,
                        interval '1 year') AS y (local))::float8"""
