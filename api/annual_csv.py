"""The annual report as CSV: one row per instrument, every figure with its own column.

UTF-8 with a byte-order mark, because that is what makes spreadsheet
programs on Chinese-locale desktops read the instrument names correctly;
ratios are fractions (0–1) and empty when undefined, never 0.
"""

from __future__ import annotations

import csv
import io

from api.annual import AnnualReport, InstrumentYear
from instrumetry.domain.reconcile import Flag

COLUMNS = (
    "institution_id",
    "year",
    "instrument_id",
    "name",
    "category",
    "scheduled_h",
    "on_scheduled_h",
    "startup_rate",
    "days_on_share",
    "utilisation",
    "effective_h",
    "quota_h",
    "effective_vs_quota",
    "fully_booked_h",
    "external_h",
    "sharing_rate",
    "coverage",
    "orders",
    *(f"flag_{flag.value}" for flag in Flag),
)


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _hours(value: float) -> str:
    return f"{value:.2f}"


def _row(report: AnnualReport, row: InstrumentYear) -> list[str]:
    u = row.usage
    return [
        report.institution.id,
        str(report.year),
        row.instrument.id,
        row.instrument.name,
        row.instrument.category.value,
        _hours(u.scheduled_h),
        _hours(u.on_scheduled_h),
        _ratio(u.startup_rate),
        _ratio(u.days_on_share),
        _ratio(u.utilisation),
        _hours(u.effective_h),
        _hours(row.quota_h),
        _ratio(row.effective_vs_quota),
        _hours(row.fully_booked_h),
        _hours(u.external_h),
        _ratio(u.sharing_rate),
        _ratio(u.coverage),
        str(row.orders),
        *(str(row.flags[flag]) for flag in Flag),
    ]


def render_csv(report: AnnualReport) -> bytes:
    """The report as UTF-8 CSV (with BOM), a header row, then one row per instrument."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    writer.writerows(_row(report, row) for row in report.rows)
    return out.getvalue().encode("utf-8-sig")
