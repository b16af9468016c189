"""Grafana's expansion of a PostgreSQL panel query, so tests can run it without Grafana.

Grafana turns a panel's ``rawSql`` into SQL in three steps, reproduced here
in the same order:

1. the browser replaces template variables (``$var``, ``${var}``,
   ``${var:format}``, ``[[var]]``), including the built-in ``$__interval``;
   without a format the PostgreSQL datasource quotes each value of a
   multi-value or include-all variable as a literal and joins them with
   commas, and only doubles the quotes of a single value;
2. the backend replaces ``$__interval``, ``$__interval_ms``,
   ``$__unixEpochFrom()`` and ``$__unixEpochTo()`` (sqleng's ``Interpolate``);
3. the PostgreSQL macro engine replaces ``$__name(args)``: ``$__timeFilter``
   becomes ``col BETWEEN 'from' AND 'to'`` in RFC 3339 UTC, ``$__timeGroup``
   becomes ``time_bucket('Ns', col)`` on a TimescaleDB datasource, and an
   unknown macro is an error.

``expand_promql`` does the same for a Prometheus panel's interval variables.

Sources: Grafana's ``pkg/tsdb/grafana-postgresql-datasource/macros.go``,
``pkg/tsdb/sqleng/sql_engine.go``, the SQL datasource's
``interpolateVariable``, and the templating docs' variable formats.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


@dataclass(frozen=True, slots=True)
class Variable:
    """A dashboard variable's current value(s); "All" is the list of every option."""

    values: Sequence[str]
    multi: bool = True
    include_all: bool = True


@dataclass(frozen=True, slots=True)
class TimeRange:
    start: datetime
    end: datetime
    interval: timedelta = timedelta(minutes=1)


_VARIABLE = re.compile(
    r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}"
)
_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")
_UNITS = {
    "ms": 0.001,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 7 * 86400,
    "M": 30 * 86400,
    "y": 365 * 86400,
}


class MacroError(ValueError):
    """A macro Grafana would refuse (unknown name, missing argument)."""


def expand(sql: str, time_range: TimeRange, variables: Mapping[str, Variable]) -> str:
    """``sql`` as Grafana would send it to PostgreSQL (a TimescaleDB datasource)."""
    sql = _replace_variables(sql, time_range, variables)
    sql = sql.replace("$__interval_ms", str(int(time_range.interval.total_seconds() * 1000)))
    sql = sql.replace("$__interval", format_interval(time_range.interval))
    sql = sql.replace("$__unixEpochFrom()", str(int(time_range.start.timestamp())))
    sql = sql.replace("$__unixEpochTo()", str(int(time_range.end.timestamp())))

    def replace(match: re.Match[str]) -> str:
        name = match[1]
        # Grafana's pre-5.3 compatibility: `$__timeGroup(...),` (a comma right after its
        # first occurrence) still means `$__timeGroupAlias`.
        at = sql.find(match[0]) + len(match[0])
        if name == "__timeGroup" and sql[at : at + 1] == ",":
            name = "__timeGroupAlias"
        return _macro(name, [a.strip() for a in match[2].split(",")], time_range)

    return _MACRO.sub(replace, sql)


def format_interval(interval: timedelta) -> str:
    """Grafana's ``gtime.FormatInterval``: the largest whole unit, ``1m``, ``2h``, ``1d``."""
    ms = int(interval.total_seconds() * 1000)
    for unit, size in (("y", 365 * 86400_000), ("d", 86400_000), ("h", 3600_000)):
        if ms >= size:
            return f"{ms // size}{unit}"
    for unit, size in (("m", 60_000), ("s", 1000), ("ms", 1)):
        if ms >= size:
            return f"{ms // size}{unit}"
    return "1ms"


def rfc3339(moment: datetime) -> str:
    """Go's ``time.RFC3339Nano`` in UTC: trailing zeros of the fraction dropped, ``Z``."""
    text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _format(variable: Variable, form: str | None) -> str:
    values = list(variable.values)
    if form is None:  # the SQL datasource's interpolateVariable
        if variable.multi or variable.include_all:
            return ",".join(_quote(v) for v in values)
        return values[0].replace("'", "''")
    formats = {
        "csv": lambda: ",".join(values),
        "raw": lambda: ",".join(values),
        "sqlstring": lambda: ",".join(_quote(v) for v in values),
        "singlequote": lambda: ",".join("'" + v.replace("'", "\\'") + "'" for v in values),
        "doublequote": lambda: ",".join('"' + v.replace('"', '\\"') + '"' for v in values),
        "pipe": lambda: "|".join(values),
    }
    if form not in formats:
        raise MacroError(f"variable format {form!r} is not reproduced here")
    return formats[form]()


def _replace_variables(sql: str, time_range: TimeRange, variables: Mapping[str, Variable]) -> str:
    builtin = {
        "__interval": format_interval(time_range.interval),
        "__interval_ms": str(int(time_range.interval.total_seconds() * 1000)),
        "__from": str(int(time_range.start.timestamp() * 1000)),
        "__to": str(int(time_range.end.timestamp() * 1000)),
    }

    def replace(match: re.Match[str]) -> str:
        name = match[1] or match[2] or match[4]
        form = match[3] or match[6]
        if name in builtin:
            return builtin[name]
        if name not in variables:
            return match[0]  # Grafana leaves unknown names (and macros) alone
        return _format(variables[name], form)

    return _VARIABLE.sub(replace, sql)


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d|w|M|y)", text.strip("'"))
    if not match:
        raise MacroError(f"error parsing interval {text}")
    return int(match[1]) * _UNITS[match[2]]


def _macro(name: str, args: list[str], time_range: TimeRange) -> str:
    start, end = rfc3339(time_range.start), rfc3339(time_range.end)
    first, last = int(time_range.start.timestamp()), int(time_range.end.timestamp())
    column = args[0]
    if name in ("__timeGroup", "__timeGroupAlias"):
        if len(args) < 2:
            raise MacroError(f"macro ${name} needs time column and interval")
        group = f"time_bucket('{_seconds(args[1]):.3f}s',{column})"
        return group + (' AS "time"' if name == "__timeGroupAlias" else "")
    with_column = {
        "__time": f'{column} AS "time"',
        "__timeEpoch": f'extract(epoch from {column}) as "time"',
        "__timeFilter": f"{column} BETWEEN '{start}' AND '{end}'",
        "__unixEpochFilter": f"{column} >= {first} AND {column} <= {last}",
    }
    if name in with_column:
        if not column:
            raise MacroError(f"missing time column argument for macro {name}")
        return with_column[name]
    without = {"__timeFrom": f"'{start}'", "__timeTo": f"'{end}'"}
    if name not in without:
        raise MacroError(f"unknown macro {name!r}")
    return without[name]


def expand_promql(expr: str, time_range: TimeRange, scrape_interval: timedelta) -> str:
    """A Prometheus panel's ``expr`` as Grafana sends it, its interval variables replaced.

    ``$__interval`` is at least the datasource's scrape interval (its
    ``timeInterval``); ``$__rate_interval`` is max($__interval + scrape
    interval, 4 × scrape interval), as Grafana's Prometheus datasource computes
    it (pkg/promlib's ``calculateRateInterval``, formatted as ``FormatInterval``);
    ``$__range`` is the range rounded to whole seconds.
    """
    interval = max(time_range.interval, scrape_interval)
    rate_interval = max(interval + scrape_interval, 4 * scrape_interval)
    seconds = round((time_range.end - time_range.start).total_seconds())
    for name, value in (
        ("$__rate_interval", format_interval(rate_interval)),
        ("$__interval_ms", str(int(interval.total_seconds() * 1000))),
        ("$__interval", format_interval(interval)),
        ("$__range", f"{seconds}s"),
    ):
        expr = expr.replace(name, value)
    return expr
