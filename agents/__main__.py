"""``instrumetry-agent --config FILE`` (or ``python -m agents``): the agent's lean entry point.

``instrumetry agent run`` does the same through the full CLI, but Typer (0.29)
validates command-line parameters with pydantic, which alone adds about 10 MB
to the resident memory of a process that must stay under 40 MB for months on
an old PC. This entry point imports only the agent's own modules, and reads
its two options with ``getopt``: ``argparse`` and the ``gettext`` it loads
would be another 0.3 MB (docs/BENCHMARKS.md). It is what the service files
start.
"""

from __future__ import annotations

import getopt
import sys
from pathlib import Path
from typing import NoReturn

from agents.config import load_config
from agents.logs import setup_logging
from agents.runner import run_agent
from instrumetry.domain.errors import InstrumetryError

PROG = "instrumetry-agent"
USAGE = f"usage: {PROG} --config FILE [--verbose]"
HELP = f"""{USAGE}

Poll the meter, report state transitions and heartbeats (docs/AGENT.md).

options:
  -c, --config FILE  the agent's TOML file
  -v, --verbose      log debug details
  -h, --help         show this help and exit
"""


def main(argv: list[str] | None = None) -> None:
    """Run the agent until SIGTERM or Ctrl-C; a user's mistake ends in one line and exit 2."""
    config, verbose = _arguments(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_config(config)
        setup_logging(settings.log, verbose=verbose)
        run_agent(settings)
    except InstrumetryError as error:
        _fail(str(error))


def _arguments(argv: list[str]) -> tuple[Path, bool]:
    """``--config FILE`` and ``--verbose`` from ``argv``; ``--help`` prints the help and exits."""
    try:
        options, extra = getopt.gnu_getopt(argv, "c:vh", ["config=", "verbose", "help"])
    except getopt.GetoptError as error:
        _usage_error(str(error))
    if extra:
        _usage_error(f"unexpected argument {extra[0]!r}")
    config: Path | None = None
    verbose = False
    for name, value in options:
        if name in ("-h", "--help"):
            print(HELP, end="")
            sys.exit(0)
        if name in ("-c", "--config"):
            config = Path(value)
        else:
            verbose = True
    if config is None:
        _usage_error("the option --config FILE is required")
    return config, verbose


def _usage_error(message: str) -> NoReturn:
    print(USAGE, file=sys.stderr)
    _fail(message)


def _fail(message: str) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    main()
