"""``fleetpay``: the command line of the whole system (docs/design.md §5 is its contract)."""

from __future__ import annotations

import logging

import typer

from cli import books, fleet, payouts, services, simulation
from cli.dlq import dlq
from cli.inbox import inbox

app = typer.Typer(
    name="fleetpay",
    help="Queue-driven M-Pesa payment worker for vehicle fleets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command()(services.dev)
app.command()(services.migrate)
app.command()(services.ingest)
app.command()(services.worker)
app.command()(services.sweep)
app.command()(books.scheduler)
app.command()(books.reconcile)
app.command("close-day")(books.close_day)
app.command()(fleet.balance)
app.add_typer(fleet.vehicles, name="vehicles")
app.add_typer(fleet.drivers, name="drivers")
app.add_typer(fleet.unmatched, name="unmatched")
app.add_typer(payouts.payouts, name="payouts")
app.add_typer(dlq, name="dlq")
app.add_typer(inbox, name="inbox")
app.command()(simulation.simulator)
app.add_typer(simulation.simulate, name="simulate")


def main() -> None:
    # httpx logs every request at INFO: noise on a command's stderr (and the URLs carry tokens).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    app()
