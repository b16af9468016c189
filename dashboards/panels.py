"""Panel shapes the dashboards reuse, on the foundation SDK's builders.

Each function takes the query and the layout and returns a builder, so a
dashboard module reads as a list of panels with their SQL, nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import (
    piechart,
    prometheus,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import piechart as piechart_model

from dashboards.common import state_mappings
from dashboards.query import DATASOURCE, Sql

P = TypeVar("P", stat.Panel, table.Panel, timeseries.Panel, piechart.Panel, statetimeline.Panel)


def _common(
    panel: P,
    title: str,
    description: str,
    width: int,
    height: int,
    *,
    datasource: model.DataSourceRef = DATASOURCE,
) -> P:
    return (
        panel.title(title)
        .description(description)
        .datasource(datasource)
        .span(width)
        .height(height)
    )


def with_units(panel: P, units: Mapping[str, str]) -> P:
    """Per-column units (hours, ratios shown as percentages, seconds)."""
    for column, unit in units.items():
        panel = panel.override_by_name(
            column, [model.DynamicConfigValue(id_val="unit", value=unit)]
        )
    return panel


def stat_panel(
    title: str, description: str, query: Sql, units: Mapping[str, str], *, width: int = 6
) -> stat.Panel:
    panel = _common(stat.Panel(), title, description, width, 4).with_target(query)
    panel = panel.graph_mode(common.BigValueGraphMode.NONE).text_mode(
        common.BigValueTextMode.VALUE_AND_NAME
    )
    return with_units(panel, units)


def pie_panel(title: str, description: str, query: Sql, *, width: int = 6) -> piechart.Panel:
    """Slices are the query's columns of its one row (a count per category)."""
    panel = _common(piechart.Panel(), title, description, width, 8).with_target(query)
    legend = (
        piechart.PieChartLegendOptions()
        .show_legend(True)
        .display_mode(common.LegendDisplayMode.TABLE)
        .placement(common.LegendPlacement.RIGHT)
        .values([piechart_model.PieChartLegendValues.VALUE])
    )
    return (
        panel.pie_type(piechart_model.PieChartType.DONUT)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .legend(legend)
    )


def table_panel(
    title: str,
    description: str,
    query: Sql,
    units: Mapping[str, str],
    *,
    width: int = 24,
    height: int = 9,
) -> table.Panel:
    panel = _common(table.Panel(), title, description, width, height).with_target(query)
    return with_units(panel.filterable(True), units)


def time_series_panel(
    title: str,
    description: str,
    queries: Sequence[Sql | prometheus.Dataquery],
    unit: str,
    *,
    width: int = 12,
    height: int = 8,
    bars: bool = False,
    lines: tuple[str, ...] = (),
    datasource: model.DataSourceRef = DATASOURCE,
) -> timeseries.Panel:
    """A time series; with ``bars``, the series named in ``lines`` stay lines (a quota)."""
    panel = _common(timeseries.Panel(), title, description, width, height, datasource=datasource)
    panel = panel.unit(unit)
    for query in queries:
        panel = panel.with_target(query)
    if bars:
        panel = panel.draw_style(common.GraphDrawStyle.BARS).fill_opacity(60)
    for column in lines:
        line = model.DynamicConfigValue(id_val="custom.drawStyle", value="line")
        panel = panel.override_by_name(column, [line])
    return panel


def state_timeline_panel(title: str, description: str, query: Sql) -> statetimeline.Panel:
    """States as numbers (see ``common.STATE_CODES``), coloured and named by value mappings."""
    panel = _common(statetimeline.Panel(), title, description, 24, 8).with_target(query)
    # One series per instrument, each with its own timestamps: the others' rows are
    # null there, and a state lasts until that instrument's next point.
    hold = model.DynamicConfigValue(id_val="custom.spanNulls", value=True)
    return (
        panel.mappings(state_mappings())
        .show_value(common.VisibilityMode.NEVER)
        .override_by_field_type("number", [hold])
    )
