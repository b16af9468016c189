"""``instrumetry-agent --config FILE`` (or ``python -m agents``): the agent's lean entry point.

``instrumetry agent run`` does the same through the full CLI, but Typer (0.29)
validates command-line parameters with pydantic, which alone adds about 10 MB
to the resident memory of a process that must stay under 40 MB for months on
an old PC. This entry point parses its two options with argparse and imports
only the agent's own modules, so it is what the service files start.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agents.config import load_config
from agents.logs import setup_logging
from agents.runner import run_agent
from instrumetry.domain.errors import InstrumetryError


def main(argv: list[str] | None = None) -> None:
    """Run the agent until SIGTERM or Ctrl-C; a user's mistake ends in one line and exit 2."""
    parser = argparse.ArgumentParser(
        prog="instrumetry-agent",
        description="Poll the meter, report state transitions and heartbeats (docs/AGENT.md).",
    )
    parser.add_argument("--config", "-c", type=Path, required=True, help="the agent's TOML file")
    parser.add_argument("--verbose", "-v", action="store_true", help="log debug details")
    args = parser.parse_args(argv)
    try:
        settings = load_config(args.config)
        setup_logging(settings.log, verbose=args.verbose)
        run_agent(settings)
    except InstrumetryError as error:
        print(f"instrumetry-agent: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
