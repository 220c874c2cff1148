"""``fleetpay``: the command line of the whole system (docs/design.md §5 is its contract)."""

from __future__ import annotations

import logging
import sys

import typer

from cli import books, fleet, payouts, services, simulation
from cli.dlq import dlq
from cli.inbox import inbox
from cli.requests import requests_app
from cli.users import users
from cli.unreachable import EXIT_UNREACHABLE, explain
from fleetpay.logs import configure_logging
from fleetpay.settings import get_settings

app = typer.Typer(
    name="fleetpay",
    help="Queue-driven M-Pesa payment worker for vehicle fleets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(services.dev)
app.command()(services.migrate)
app.command()(services.ingest)
app.command()(services.console)
app.command()(services.worker)
app.command()(services.sweep)
app.command()(books.scheduler)
app.command()(books.reconcile)
app.command("close-day")(books.close_day)
app.command("undo-close")(books.undo_close)
app.command()(fleet.balance)
app.add_typer(fleet.vehicles, name="vehicles")
app.add_typer(fleet.drivers, name="drivers")
app.add_typer(fleet.unmatched, name="unmatched")
app.add_typer(fleet.deposits, name="deposits")
app.add_typer(payouts.payouts, name="payouts")
app.add_typer(dlq, name="dlq")
app.add_typer(inbox, name="inbox")
app.add_typer(users, name="users")
app.add_typer(requests_app, name="requests")
app.command()(simulation.simulator)
app.add_typer(simulation.simulate, name="simulate")


def main() -> None:
    """Every command: logs on stderr only (stdout is the command's output: one JSON document with
    ``--json``), and an unreachable PostgreSQL, Redis or Daraja as one line and exit 5, or any other
    failure as one line and exit 1; ``--debug`` (anywhere on the line) shows the traceback."""
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    current = get_settings()
    configure_logging(level="DEBUG" if debug else current.log_level, json=current.log_json)
    # httpx logs every request at INFO: noise on a command's stderr (and the URLs carry tokens).
    logging.getLogger("httpx").setLevel(logging.DEBUG if debug else logging.WARNING)
    try:
        app(standalone_mode=True)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as error:  # noqa: BLE001 — every other failure: one line, unless --debug
        if debug:
            raise
        line = explain(error, current)
        if line is None:
            line = f"{error.__class__.__name__}: {error} (run again with --debug for the traceback)"
        print(f"error: {line}", file=sys.stderr)
        raise SystemExit(EXIT_UNREACHABLE if explain(error, current) else 1) from None
