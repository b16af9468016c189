"""Institution and annual view: effective and external hours against the quota, by month.

Months are local months of each institution. External service hours are the
effective hours inside the windows of external service orders (imported from
the sharing platform), and the sharing rate is their share of the effective
hours: the two figures a subsidy for opened instruments is paid on.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

from dashboards.common import HOURS, RATIO, dashboard
from dashboards.panels import table_panel, time_series_panel
from dashboards.query import Sql
from dashboards.usage_sql import local_buckets, prorated_quota, ratio, usage

UID = "instrumetry-institution"

_QUOTA = prorated_quota("u.p0", "u.p1")
_SHARING = ratio("sum(u.external_h)", "sum(u.effective_h)")

SUMMARY = f"""
WITH {usage()}
SELECT sel.institution, count(*) AS instruments, sum(u.effective_h) AS effective_h,
       sum({_QUOTA}) AS quota_h, {ratio("sum(u.effective_h)", f"sum({_QUOTA})")} AS of_quota,
       sum(u.external_h) AS external_h, {_SHARING} AS sharing_rate,
       sum(u.effective_h) / count(*) AS effective_per_instrument_h,
       {ratio("sum(u.on_scheduled_h)", "sum(u.scheduled_h)")} AS startup_rate,
       {ratio("sum(u.running_scheduled_h)", "sum(u.scheduled_h)")} AS utilisation,
       1 - {ratio("sum(u.unknown_h)", "sum(u.period_h)")} AS coverage
FROM usage u JOIN selected sel ON sel.instrument_id = u.instrument_id
GROUP BY sel.institution ORDER BY sel.institution
"""

MONTHLY_TOTAL = f"""
WITH {usage(local_buckets("month"))}
SELECT u.bucket AS time, sum(u.effective_h) AS effective_h, sum(u.external_h) AS external_h,
       sum({_QUOTA}) AS quota_h
FROM usage u JOIN selected sel ON sel.instrument_id = u.instrument_id
GROUP BY 1 ORDER BY 1
"""

MONTHLY_BY_INSTITUTION = f"""
WITH {usage(local_buckets("month"))}
SELECT u.bucket AS time, sel.institution AS metric, sum(u.effective_h) AS effective_h
FROM usage u JOIN selected sel ON sel.instrument_id = u.instrument_id
GROUP BY 1, 2 ORDER BY 1, 2
"""

MONTHLY_SHARING = f"""
WITH {usage(local_buckets("month"))}
SELECT u.bucket AS time, sel.institution AS metric, {_SHARING} AS sharing_rate
FROM usage u JOIN selected sel ON sel.instrument_id = u.instrument_id
GROUP BY 1, 2 ORDER BY 1, 2
"""
"""Sharing rate per institution and local month; no point where it had no effective hours."""

MONTHLY_TABLE = f"""
WITH {usage(local_buckets("month"))}
SELECT u.bucket AS month, sel.institution, count(*) AS instruments,
       sum(u.effective_h) AS effective_h, sum({_QUOTA}) AS quota_h,
       sum(u.external_h) AS external_h, {_SHARING} AS sharing_rate,
       {ratio("sum(u.on_scheduled_h)", "sum(u.scheduled_h)")} AS startup_rate,
       {ratio("sum(u.running_scheduled_h)", "sum(u.scheduled_h)")} AS utilisation,
       1 - {ratio("sum(u.unknown_h)", "sum(u.period_h)")} AS coverage
FROM usage u JOIN selected sel ON sel.instrument_id = u.instrument_id
GROUP BY 1, 2 ORDER BY 1, 2
"""

_UNITS = {
    "effective_h": HOURS,
    "quota_h": HOURS,
    "external_h": HOURS,
    "sharing_rate": RATIO,
    "effective_per_instrument_h": HOURS,
    "of_quota": RATIO,
    "startup_rate": RATIO,
    "utilisation": RATIO,
    "coverage": RATIO,
}


def build() -> dash.Dashboard:
    return (
        dashboard(
            UID,
            "Instrumetry · Institutions, annual view",
            "Effective working hours (running time plus up to 30 min of powered-on "
            "preparation and post-processing around each run) against the annual quota "
            "(the instrument's own, else 1,400 h general and 800 h specialised, pro-rated), "
            "and external service hours (effective hours inside external orders' windows) "
            "with the sharing rate (external / effective), per institution and local month.",
            "now/y",
            "now/y",
        )
        .with_panel(
            table_panel(
                "Effective hours against the quota, by institution",
                "Over the time range; of_quota = effective / pro-rated quota. The national "
                "reference for 2025 is 1,599 effective hours per instrument.",
                Sql(SUMMARY).columns(
                    "institution",
                    "instruments",
                    "effective_h",
                    "quota_h",
                    "of_quota",
                    "external_h",
                    "sharing_rate",
                    "effective_per_instrument_h",
                    "startup_rate",
                    "utilisation",
                    "coverage",
                ),
                _UNITS,
                height=8,
            )
        )
        .with_panel(
            time_series_panel(
                "Effective and external hours and quota, month by month",
                "Summed over the selected instruments.",
                [
                    Sql(MONTHLY_TOTAL)
                    .columns("time", "effective_h", "external_h", "quota_h")
                    .time_series()
                ],
                HOURS,
                bars=True,
                lines=("quota_h",),
            )
        )
        .with_panel(
            time_series_panel(
                "Effective hours by institution, month by month",
                "Each institution's months are its own local months.",
                [
                    Sql(MONTHLY_BY_INSTITUTION)
                    .columns("time", "metric", "effective_h")
                    .time_series()
                ],
                HOURS,
                bars=True,
            )
        )
        .with_panel(
            time_series_panel(
                "Sharing rate by institution, month by month",
                "External service hours / effective hours (对外服务机时 / 有效工作机时); "
                "the national reference for 2025 is 273 of 1,599 hours, about 17%.",
                [Sql(MONTHLY_SHARING).columns("time", "metric", "sharing_rate").time_series()],
                RATIO,
                width=24,
            )
        )
        .with_panel(
            table_panel(
                "Month by month",
                "Per institution and local month.",
                Sql(MONTHLY_TABLE).columns(
                    "month",
                    "institution",
                    "instruments",
                    "effective_h",
                    "quota_h",
                    "external_h",
                    "sharing_rate",
                    "startup_rate",
                    "utilisation",
                    "coverage",
                ),
                _UNITS,
                height=10,
            )
        )
    )
