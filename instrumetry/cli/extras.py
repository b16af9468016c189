"""Which optional extra of the distribution provides a module a command could not import.

An instrument PC installs only the agent (``pip install instrumetry``); the
server commands import their libraries when they run, so on such a machine
``instrumetry db migrate`` meets a missing module. This table turns that into
advice; ``tests/test_cli_extras.py`` holds it equal to pyproject.toml's extras.
"""

from __future__ import annotations

EXTRA_MODULES: dict[str, frozenset[str]] = {
    "server": frozenset(
        {
            "psycopg",
            "psycopg_pool",
            "fastapi",
            "uvicorn",
            "pydantic",
            "pydantic_settings",
            "rich",
            "httpx",
            "fpdf",
            "prometheus_client",
        }
    ),
    "probe": frozenset({"psutil"}),
    "dashboards": frozenset({"grafana_foundation_sdk", "grafana_client"}),
}


def missing_extra(module: str | None) -> str | None:
    """The extra whose libraries include ``module`` (a dotted name), or None if none does."""
    if module is None:
        return None
    top = module.partition(".")[0]
    return next((extra for extra, names in EXTRA_MODULES.items() if top in names), None)
