"""The Daraja simulator, and driving payments through it."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated, Optional

import typer

from cli import context
from cli.output import fail

simulate = typer.Typer(help="Ask the Daraja simulator (or the sandbox) to make payments.")


def simulator(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8010,
    result_delay_ms: Annotated[int, typer.Option(min=0)] = 200,
    fault_mix: Annotated[
        Optional[str], typer.Option(help='Random B2C faults, JSON: {"http_5xx": 0.05, "result_failure:2001": 0.01}.')
    ] = None,
    fault_seed: Annotated[Optional[int], typer.Option(help="Seed of the fault draws (replayable runs).")] = None,
    hang_s: Annotated[float, typer.Option(min=0, help="How long an http_timeout_after_accept answer hangs.")] = 30.0,
    utility_balance: Annotated[
        int, typer.Option(min=0, help="Opening balance of the B2C (utility) account, whole shillings.")
    ] = 1_000_000,
) -> None:
    """The Daraja simulator: OAuth, C2B, B2C, Transaction Status, Account Balance, Pull, and
    fault injection at /sim/faults. Its credentials match fleetpay's defaults."""
    import logging

    import uvicorn

    from fleetpay.logs import configure_logging
    from simulator import DarajaApp, SimulatorConfig, build_app

    current = context.settings()
    configure_logging(level=current.log_level, json=current.log_json)
    # httpx logs each callback it posts, URL and token included, at INFO: quiet here (and redacted
    # anyway by the simulator's own filter, should the level be lowered).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    c2b, b2c = current.daraja_app("c2b"), current.daraja_app("b2c")
    # One app per product when fleetpay is given two (as on Daraja); else one app with every product.
    apps = () if c2b.consumer_key == b2c.consumer_key else (
        DarajaApp(c2b.consumer_key, c2b.consumer_secret, products=frozenset({"c2b", "express"})),
        DarajaApp(b2c.consumer_key, b2c.consumer_secret, products=frozenset({"b2c"})),
    )
    config = SimulatorConfig(
        consumer_key=c2b.consumer_key,
        consumer_secret=c2b.consumer_secret,
        apps=apps,
        short_code=c2b.short_code,
        b2c_short_code=b2c.short_code,
        initiator_name=current.daraja_initiator_name,
        initiator_password=current.daraja_initiator_password.get_secret_value(),
        result_delay_ms=result_delay_ms,
        fault_mix=json.loads(fault_mix) if fault_mix else {},
        fault_seed=fault_seed,
        hang_s=hang_s,
        utility_opening_balance=Decimal(utility_balance),
        sms_username=current.sms_username,
        sms_api_key=current.sms_api_key.get_secret_value(),
    )
    uvicorn.run(build_app(config), host=host, port=port, log_level="warning")


@simulate.command("c2b")
def simulate_c2b(
    account: Annotated[str, typer.Option(help="The account number the customer types, e.g. 025.")],
    amount: Annotated[int, typer.Option(min=1, help="Whole shillings.")],
    msisdn: Annotated[str, typer.Option()] = "254708374149",
    trans_id: Annotated[Optional[str], typer.Option(help="Replay a known receipt (simulator only).")] = None,
) -> None:
    """A customer pays the paybill: Daraja calls our confirmation URL, and the money flows."""
    from workers import runtime
    from workers.daraja.outcomes import Outcome

    daraja = runtime.daraja()
    registered = daraja.register_c2b_urls()
    if registered.outcome is not Outcome.ACCEPTED:
        raise fail(f"registering the C2B URLs failed: {registered.code} {registered.description}")
    answer = daraja.simulate_c2b(account=account, amount_kes=amount, msisdn=msisdn, trans_id=trans_id)
    if answer.outcome is not Outcome.ACCEPTED:
        raise fail(f"the simulator refused: {answer.code} {answer.description}")
    typer.echo(f"paid KES {amount} to account {account} ({answer.description})")


@simulate.command("ussd")
def simulate_ussd(
    msisdn: Annotated[str, typer.Option(help="The driver's phone, e.g. 254705912645.")],
    choices: Annotated[str, typer.Option("--input", help="The choices typed, joined by *, e.g. 1 or 4*1.")] = "",
) -> None:
    """A driver dials the USSD menu: the simulator plays Africa's Talking's session against our
    USSD URL and each screen is printed."""
    import httpx

    current = context.settings()
    try:
        answer = httpx.post(f"{current.sms_base_url.rstrip('/')}/sim/ussd", timeout=60,
                            json={"url": current.africas_talking_url("ussd"), "msisdn": msisdn, "input": choices})
    except httpx.HTTPError as error:
        raise fail(f"the simulator at {current.sms_base_url} cannot be reached ({error}); is `fleetpay dev` running?") from error
    if answer.status_code != 200:
        raise fail(f"the simulator at {current.sms_base_url} refused: {answer.status_code} {answer.text[:200]}")
    for screen in answer.json()["screens"]:
        typer.echo(f"> {screen['text'] or '(dial)'}")
        typer.echo(screen["response"])
        typer.echo("")
