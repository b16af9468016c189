"""Render every dashboard to the JSON committed under ``dashboards/json``.

Grafana provisions the committed files at start (docker compose), and
``instrumetry dashboards push`` sends the same JSON, so the code is the
source and the files are its output; ``check`` tells when they drifted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model

from dashboards import audit, fleet, institution, instrument, pipeline

JSON_DIR = Path(__file__).resolve().parent / "json"

BUILDERS: dict[str, Callable[[], dash.Dashboard]] = {
    "fleet-overview": fleet.build,
    "instrument-detail": instrument.build,
    "institution-annual": institution.build,
    "audit": audit.build,
    "pipeline-health": pipeline.build,
}
"""File name (without ``.json``) → the dashboard it holds."""


def dashboards() -> dict[str, model.Dashboard]:
    """Every dashboard, built, with panel ids numbered in layout order."""
    built = {}
    for name, make in BUILDERS.items():
        board = make().build()
        for number, panel in enumerate(board.panels or [], start=1):
            panel.id_val = number
        built[name] = board
    return built


def render(board: model.Dashboard) -> str:
    """Stable JSON: sorted keys, two-space indent, a final newline."""
    return json.dumps(board, cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def rendered() -> dict[str, str]:
    """File name → JSON text, for every dashboard."""
    return {f"{name}.json": render(board) for name, board in dashboards().items()}


def write(directory: Path | None = None) -> list[Path]:
    """Write every dashboard's JSON (to ``JSON_DIR`` by default); return the files that changed."""
    directory = directory or JSON_DIR
    directory.mkdir(parents=True, exist_ok=True)
    changed = []
    for file_name, text in rendered().items():
        path = directory / file_name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed


def stale(directory: Path | None = None) -> list[str]:
    """Files in ``directory`` (``JSON_DIR``) that differ from the code's, are missing or extra."""
    directory = directory or JSON_DIR
    expected = rendered()
    found = {p.name for p in directory.glob("*.json")} if directory.is_dir() else set()
    problems = [f"{name}: missing" for name in sorted(set(expected) - found)]
    problems += [f"{name}: not built by the code" for name in sorted(found - set(expected))]
    for name in sorted(set(expected) & found):
        if (directory / name).read_text(encoding="utf-8") != expected[name]:
            problems.append(f"{name}: differs from what the code builds")
    return problems
