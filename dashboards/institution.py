"""Institution and annual view: effective hours against the quota, month by month.

Months are local months of each institution. External service hours and the
sharing rate need the service orders, which the schema does not hold yet;
their panels join this dashboard with the orders' tables.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash

from dashboards.common import HOURS, RATIO, dashboard
from dashboards.panels import table_panel, time_series_panel
from dashboards.query import Sql
from dashboards.usage_sql import local_buckets, prorated_quota, ratio, usage

UID = "instrumetry-institution"

_QUOTA = prorated_quota("u.p0", "u.p1")

SUMMARY = f"""
WITH {usage()}
SELECT sel.institution, count(*) AS instruments, sum(u.effective_h) AS effective_h,
       sum({_QUOTA}) AS quota_h, {ratio("sum(u.effective_h)", f"sum({_QUOTA})")} AS of_quota,
       sum(u.effective_h) / count(*) AS effective_per_instrument_h,
       {ratio("sum(u.on_scheduled_h)", "sum(u.scheduled_h)")} AS startup_rate,
       {ratio("sum(u.running_scheduled_h)", "sum(u.scheduled_h)")} AS utilisation,
       1 - {ratio("sum(u.unknown_h)", "sum(u.period_h)")} AS coverage
FROM usage u JOIN selected sel ON sel.instrument_id = u.instrument_id
GROUP BY sel.institution ORDER BY sel.institution
"""

MONTHLY_TOTAL = f"""
WITH {usage(local_buckets("month"))}
SELECT u.bucket AS time, sum(u.effective_h) AS effective_h, sum({_QUOTA}) AS quota_h
FROM usage u JOIN selected sel ON sel.instrument_id = u.instrument_id
GROUP BY 1 ORDER BY 1
"""

MONTHLY_BY_INSTITUTION = f"""
WITH {usage(local_buckets("month"))}
SELECT u.bucket AS time, sel.institution AS metric, sum(u.effective_h) AS effective_h
FROM usage u JOIN selected sel ON sel.instrument_id = u.instrument_id
GROUP BY 1, 2 ORDER BY 1, 2
"""

MONTHLY_TABLE = f"""
WITH {usage(local_buckets("month"))}
SELECT u.bucket AS month, sel.institution, count(*) AS instruments,
       sum(u.effective_h) AS effective_h, sum({_QUOTA}) AS quota_h,
       {ratio("sum(u.on_scheduled_h)", "sum(u.scheduled_h)")} AS startup_rate,
       {ratio("sum(u.running_scheduled_h)", "sum(u.scheduled_h)")} AS utilisation,
       1 - {ratio("sum(u.unknown_h)", "sum(u.period_h)")} AS coverage
FROM usage u JOIN selected sel ON sel.instrument_id = u.instrument_id
GROUP BY 1, 2 ORDER BY 1, 2
"""

_UNITS = {
    "effective_h": HOURS,
    "quota_h": HOURS,
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
            "(1,400 h general, 800 h specialised, pro-rated), per institution and local month.",
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
                "Effective hours and quota, month by month",
                "Summed over the selected instruments.",
                [Sql(MONTHLY_TOTAL).columns("time", "effective_h", "quota_h").time_series()],
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
            table_panel(
                "Month by month",
                "Per institution and local month.",
                Sql(MONTHLY_TABLE).columns(
                    "month",
                    "institution",
                    "instruments",
                    "effective_h",
                    "quota_h",
                    "startup_rate",
                    "utilisation",
                    "coverage",
                ),
                _UNITS,
                height=10,
            )
        )
    )
