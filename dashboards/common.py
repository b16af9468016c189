"""What every Instrumetry dashboard shares: variables, datasource, units, state colours."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models import dashboard as model

from dashboards.query import DATASOURCE

FILTER = "i.institution_id IN ($institution) AND i.id IN ($instrument)"
"""The instruments (``i``) the institution and instrument variables select."""

INSTITUTIONS = "SELECT id AS __value, name AS __text FROM institutions ORDER BY name"
INSTRUMENTS = (
    "SELECT id AS __value, name || ' (' || id || ')' AS __text FROM instruments "
    "WHERE institution_id IN ($institution) ORDER BY id"
)

STATE_CODES = {"off": 0, "standby": 1, "running": 2, "unknown": 3}
"""States as numbers, which Grafana's state timeline colours through value mappings."""

STATE_COLOURS = {"off": "#8e8e8e", "standby": "yellow", "running": "green", "unknown": "red"}

HOURS = "h"
RATIO = "percentunit"


def state_code(column: str) -> str:
    """SQL turning a state (text or enum) into its number of ``STATE_CODES``."""
    cases = " ".join(f"WHEN '{name}' THEN {code}" for name, code in STATE_CODES.items())
    return f"CASE {column}::text {cases} END"


def state_mappings() -> list[model.ValueMapping]:
    return [
        model.ValueMap(
            options={
                str(code): model.ValueMappingResult(
                    text=name, color=STATE_COLOURS[name], index=code
                )
                for name, code in STATE_CODES.items()
            }
        )
    ]


def _variable(name: str, label: str, query: str) -> dash.QueryVariable:
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(query)
        .refresh(model.VariableRefresh.ON_DASHBOARD_LOAD)
        .sort(model.VariableSort.DISABLED)
        .multi(True)
        .include_all(True)
        .current(model.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


def dashboard(
    uid: str, title: str, description: str, time_from: str, time_to: str
) -> dash.Dashboard:
    """A dashboard with the institution and instrument variables (multi-value, "All" first).

    The browser's time zone shows the times; days and months in the queries
    are local to each institution, whatever the viewer's zone.
    """
    return (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["instrumetry"])
        .editable()
        .timezone("browser")
        .time(time_from, time_to)
        .refresh("")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .with_variable(_variable("institution", "Institution", INSTITUTIONS))
        .with_variable(_variable("instrument", "Instrument", INSTRUMENTS))
    )
