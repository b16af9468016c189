"""The ``instrumetry`` command: the composition root of every component.

Each sub-command module keeps its heavy imports inside the command functions,
so ``instrumetry agent run`` on an instrument PC never loads server libraries.
"""

from __future__ import annotations

import sys

import typer

from instrumetry.cli import (
    agent,
    api,
    audit,
    broker,
    collector,
    dashboards,
    db,
    demo,
    dev,
    orders,
    report,
    sim,
    token,
)
from instrumetry.cli.extras import missing_extra
from instrumetry.cli.options import load_dev_env
from instrumetry.domain.errors import InstrumetryError

app = typer.Typer(
    name="instrumetry",
    help="Measure how shared scientific instruments are really used.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(dev.app, name="dev")
app.add_typer(db.app, name="db")
app.add_typer(agent.app, name="agent")
app.add_typer(collector.app, name="collector")
app.add_typer(api.app, name="api")
app.add_typer(sim.app, name="sim")
app.add_typer(dashboards.app, name="dashboards")
app.add_typer(broker.app, name="broker")
app.add_typer(token.app, name="token")
app.command(name="demo")(demo.demo)
app.add_typer(orders.app, name="orders")
app.add_typer(audit.app, name="audit")
app.add_typer(report.app, name="report")


def main() -> None:
    """Run the CLI; a user's mistake ends in one line on stderr and a non-zero exit.

    Usage errors (unknown option, bad or missing value) exit 2 as Click does;
    ``InstrumetryError`` covers everything else a user can cause: bad config,
    unreachable services, ports in use.
    """
    load_dev_env()
    try:
        result = app(standalone_mode=False)
    except typer.TyperException as error:  # Click's usage errors, vendored by Typer
        context = getattr(error, "ctx", None)
        command = context.command_path if context is not None else "instrumetry"
        print(f"{command}: error: {error.format_message()} (see --help)", file=sys.stderr)
        sys.exit(getattr(error, "exit_code", 2))
    except InstrumetryError as error:
        print(f"instrumetry: error: {error}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("instrumetry: aborted", file=sys.stderr)
        sys.exit(130)
    except ModuleNotFoundError as error:
        extra = missing_extra(error.name)
        if extra is None:
            raise  # not an optional library: a broken install or a bug, keep the traceback
        print(
            f"instrumetry: error: this command needs the '{extra}' extra (no module "
            f"{error.name!r}): pip install 'instrumetry[{extra}]'",
            file=sys.stderr,
        )
        sys.exit(2)
    if isinstance(result, int) and result:
        sys.exit(result)
