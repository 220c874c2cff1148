"""The scheduled side, by hand: reconciliation, the daily close and the scheduler itself."""

from __future__ import annotations

import signal
from collections import Counter
from datetime import date
from typing import Annotated, Any, Optional

import typer
from rich.progress import Progress

from cli import context
from cli.output import console, emit_json, emit_table, errors, fail, kes

DISCREPANCIES_EXIT = 3  # `fleetpay reconcile` exits 3 when the books do not reconcile
MPESA_UNAVAILABLE_EXIT = 4  # … and 4 when they do, but M-Pesa could not be compared (`--mpesa`)


def reconcile(
    fix: Annotated[bool, typer.Option("--fix", help="Ask to correct what can be corrected (needs --reason and --user; another user approves).")] = False,
    reason: Annotated[Optional[str], typer.Option(help="Why the fix is made (kept with every correction).")] = None,
    user: Annotated[Optional[str], typer.Option("--user", envvar="FLEETPAY_USER", help="Your console username: who asks for the fix.")] = None,
    mpesa: Annotated[bool, typer.Option("--mpesa", help="Also compare with M-Pesa (Pull Transactions, 48 h) and recover missed confirmations.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Prove the books: every posting balances, every cached balance and driver day equals its
    entries, every payout agrees with the in-flight account. A check never writes money.
    Exits 0 when clean, 3 when there are discrepancies, 4 when the books are clean but --mpesa
    could not ask M-Pesa (Pull off, or refused: one line on stderr). With --fix, a request to
    correct them is made first (four eyes: it runs once another user approves it)."""
    from db.reconcile import latest_float, run_check

    if fix and not (reason and user):
        raise fail("--fix needs --reason and --user: every correction names who and why", 2)
    sessions = context.sessions()
    document: dict[str, object] = {}
    if fix:
        document["fix"] = _ask_fix(user or "", reason or "", as_json)
    if mpesa:
        document["mpesa"] = _reconcile_mpesa(sessions)
    run_id, found = run_check(sessions)
    with sessions() as session:
        float_ = latest_float(session, low_cents=context.settings().float_low_cents)
    document |= {
        "run_id": run_id,
        "ok": not found,
        "counts": dict(Counter(d.kind for d in found)),
        "discrepancies": [d.as_dict() for d in found],
        "float": float_,
    }
    if float_ and float_["low"] and not as_json:
        errors.print(f"warning: the B2C utility account is low: KES {kes(int(float_['utility_available_cents']))} "  # type: ignore[call-overload]
                     f"at {float_['observed_at']}; top it up before payouts fail", markup=False, soft_wrap=True)
    if as_json:
        emit_json(document)
    elif found:
        emit_table(f"reconciliation run {run_id}: the books do NOT reconcile", [d.as_dict() for d in found],
                   ["kind", "subject", "expected_cents", "actual_cents", "difference_cents", "fixable"])
    else:
        console.print(f"reconciliation run {run_id}: the books reconcile")
    if found:
        raise typer.Exit(DISCREPANCIES_EXIT)
    if mpesa and document["mpesa"].get("error"):  # type: ignore[union-attr]
        raise typer.Exit(MPESA_UNAVAILABLE_EXIT)


def _ask_fix(user: str, reason: str, as_json: bool) -> dict[str, object]:
    """A request to fix the books (``money.requests``), and what came of it (said on stderr too).
    A refused one (nothing to fix) is said, and the check runs as usual."""
    from cli.requests import submit_as, waiting
    from money.requests import RequestRefused

    try:
        made = submit_as(user, "reconcile_fix", {}, reason)
    except RequestRefused as refused:
        errors.print(f"no fix asked: {refused}", markup=False, soft_wrap=True)
        return {"refused": str(refused)}
    if not as_json:
        errors.print(waiting(made) if made.state == "pending" else f"request {made.id} ran: {made.outcome}",
                     markup=False, soft_wrap=True)
    return {"request": made.id, "state": made.state, **(made.outcome or {})}


def _reconcile_mpesa(sessions) -> dict[str, object]:  # type: ignore[no-untyped-def]
    from workers import runtime
    from workers.reconcile_mpesa import recover_missed_confirmations

    current = context.settings()
    if not current.pull_enabled:
        error = "Pull Transactions is off: set FLEETPAY_PULL_ENABLED=true once the paybill is registered for Pull"
        errors.print(f"error: {error}", markup=False, soft_wrap=True)
        return {"error": error}
    report = recover_missed_confirmations(sessions, runtime.daraja(), current)
    if report.error:
        errors.print(f"error: M-Pesa could not be compared: {report.error}", markup=False, soft_wrap=True)
        return {"run_id": report.run_id, "error": report.error}
    return {
        "run_id": report.run_id,
        "listed_by_mpesa": report.listed,
        "recovered": len(report.recovered_inbox_ids),
        "missing_at_mpesa": [d.subject for d in report.missing_at_mpesa],
    }


def close_day(
    on: Annotated[Optional[str], typer.Option("--date", help="Business date YYYY-MM-DD (default: the day that ended last).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Close a day the close would refuse (needs --reason; recorded).")] = False,
    reason: Annotated[Optional[str], typer.Option(help="Why a refused day must be closed anyway.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The daily close (idempotent: safe to re-run, finishes a close that crashed half-way). It
    refuses a day that has not ended and a day before the fleet existed (exit 1, nothing changed)
    unless --force --reason R."""
    from db.fleet import count_drivers
    from money.daily_close import CloseRefused, yesterday
    from workers.close_day import close_and_pay

    current = context.settings()
    try:
        day = date.fromisoformat(on) if on else yesterday(current)
    except ValueError as error:
        raise fail(f"--date must be YYYY-MM-DD, not {on!r}", 2) from error
    if force and not reason:
        raise fail("--force needs --reason: a forced close is recorded with why", 2)
    sessions = context.sessions()
    with sessions() as session:
        drivers_n = count_drivers(session)
    with Progress(console=errors, transient=True, disable=as_json) as progress:
        task = progress.add_task(f"closing {day}", total=drivers_n)
        try:
            summary, sent = close_and_pay(sessions, current, day, forced_reason=reason if force else None,
                                          after_each=lambda _: progress.advance(task))
        except CloseRefused as refused:
            raise fail(f"{refused} (nothing changed; --force --reason R closes it anyway)") from refused
    if not sent:
        errors.print("[yellow]payouts not enqueued; the payout sweep will send them[/]")
    document = {"business_date": str(day), **summary.closed, "flagged": summary.flagged,
                "payouts": summary.payout_ids, "payouts_enqueued": sent, "complete": summary.complete,
                "failed_driver_ids": summary.failed}
    if as_json:
        emit_json(document)
    else:
        console.print(document)
    if not summary.complete:
        raise fail(f"the close of {day} is incomplete: {len(summary.failed)} drivers failed (driver_day_close_failed "
                   "in the log says why); run it again once the cause is fixed")


def undo_close(
    on: Annotated[str, typer.Option("--date", help="The business date YYYY-MM-DD whose close to undo.")],
    reason: Annotated[str, typer.Option(help="Why the close was a mistake (recorded).")],
    user: Annotated[str, typer.Option("--user", envvar="FLEETPAY_USER", help="Your console username: who asks for the undo.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Ask to undo a mistaken daily close (four eyes: it runs once another user approves it, with
    `fleetpay requests approve ID`). The undo posts correcting entries (never edits): contributions
    back towards the target, bonus taken back, misses, shortfall and targets restored, a
    termination flag cleared. Only the last close run can be undone (exit 1, nothing asked)."""
    from cli.requests import submit_as, waiting
    from money.requests import RequestRefused

    try:
        day = date.fromisoformat(on)
    except ValueError as error:
        raise fail(f"--date must be YYYY-MM-DD, not {on!r}", 2) from error
    try:
        made = submit_as(user, "close_undo", {"date": day.isoformat()}, reason)
    except RequestRefused as refused:
        raise fail(str(refused)) from refused
    document = {"business_date": str(day), "request": made.id, "state": made.state, **(made.outcome or {})}
    if as_json:
        emit_json(document)
    elif made.state == "pending":
        console.print(waiting(made), soft_wrap=True)
    else:
        _said_undone(document)


def _said_undone(summary: dict[str, Any]) -> None:
    console.print(f"close of {summary['business_date']} undone for {summary['reopened']} drivers", soft_wrap=True)
    if summary["reinstated"]:
        console.print(f"reinstated: {', '.join(summary['reinstated'])}", soft_wrap=True)
    if summary["vehicles_taken"]:
        errors.print(f"[yellow]vehicles with a new driver since (reassign by hand if needed): "
                     f"{', '.join(summary['vehicles_taken'])}[/]", soft_wrap=True)
    if summary["refunds_already_released"]:
        errors.print(f"[yellow]deposit refunds already released, left as they are: payouts "
                     f"{', '.join(map(str, summary['refunds_already_released']))}[/]", soft_wrap=True)


def scheduler() -> None:
    """The scheduler (one active instance; start others as standbys)."""
    from db.engine import make_engine
    from workers.scheduler import Scheduler
    from workers import all as _actors  # noqa: F401 — declares every actor on the broker
    from workers import runtime

    current = context.settings()
    running = Scheduler(current, make_engine(current.require_database_url(), pool_size=2),
                        lambda name: runtime.broker.get_actor(name).send())
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: running.stop())
    running.run()
