"""Four eyes: a money movement one person asks for runs only once another approves it.

A request names its kind (``KINDS``), its parameters, the reason and who asked. Asking tries the
movement at once in a savepoint and rolls it back, so a request that could not run (an unknown
driver, a receipt already assigned) is refused when it is made, not when it is approved. Approving
runs it, in the approver's transaction, through the same library function the CLI calls; a
rejection runs nothing. Nobody approves their own request, and only an ``approver`` or ``admin``
approves. With ``four_eyes`` off (a one-person fleet) a request runs when it is made, and the
audit log says it ran without a second person. Every step is recorded in ``operator_actions``.

Two kinds run in transactions of their own rather than the approver's (``STAGED``): undoing a close
(each driver's day under the close lock) and a reconciliation fix (each discrepancy on its own).
Asking checks that they could run now and pins what the approver will see (the close: when it ran
and for how many drivers; the discrepancies: which, and by how much); approving marks the request
``running`` and commits, then it runs, only on what was pinned, then its outcome is recorded
(``submit`` and ``settle`` do all three). A request a killed process left ``running`` stays so, in
the list and the audit log, and blocks nothing: ask again (both are safe to repeat: a close
already undone is refused, a discrepancy already fixed is not fixed twice).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.audit import record_action
from db.locks import transaction_lock
from db.models import Driver, MoneyRequest, Payout
from db.reconcile import FIXABLE, check
from fleetpay.people import operator_name, same_person
from fleetpay.settings import Settings
from money.close_undo import closed_at, undo_close, undoable
from money.deposits import refund, withdraw_payout
from money.payouts import approve, retry_failed, want_status_check
from money.reconcile_fix import run_fix
from money.unmatched import assign_unmatched

log = structlog.get_logger("fleetpay.requests")

ASKERS = ("operator", "approver", "admin")
REASON_MAX_CHARS = 500
APPROVERS = ("approver", "admin")


class RequestRefused(ValueError):
    """A request that cannot be made or decided; the message says why."""


@dataclass(frozen=True)
class Asker:
    username: str
    role: str


Run = Callable[[Session, dict[str, Any], Settings, MoneyRequest, str, date], dict[str, Any]]


def _assign(session: Session, params: dict[str, Any], settings: Settings, request: MoneyRequest, approver: str,
            day: date) -> dict[str, Any]:
    applied = assign_unmatched(session, trans_id=params["trans_id"], driver_code=params["driver"], reason=request.reason,
                               operator=request.requested_by, settings=settings, as_=params.get("as"))
    if applied.reason and applied.reason.startswith("already_assigned:"):
        raise ValueError(f"{params['trans_id']} is assigned to {params['driver']} already: nothing to do")
    return {"payout_ids": list(applied.payout_ids), "status": applied.status, "reason": applied.reason}


def _refund(session: Session, params: dict[str, Any], settings: Settings, request: MoneyRequest, approver: str,
            day: date) -> dict[str, Any]:
    # The amount is the one the request was made for (pinned when asked): never what the deposit
    # has grown to by the time it is approved.
    done = refund(session, params["driver"], params.get("amount_cents"), settings, operator=request.requested_by,
                  reason=request.reason, business_date=day)
    for payout_id in done["payouts"]:  # the second person is the approver of this request
        approve(session, payout_id, operator=approver, four_eyes=settings.four_eyes)
    return {"payout_ids": done["payouts"], "amount_cents": done["amount_cents"],
            "kept_for_debt_cents": done["kept_for_debt_cents"], "pin": {"amount_cents": done["amount_cents"]}}


def _retry(session: Session, params: dict[str, Any], settings: Settings, request: MoneyRequest, approver: str,
           day: date) -> dict[str, Any]:
    retried = retry_failed(session, int(params["payout_id"]), settings, business_date=day, operator=request.requested_by)
    return {"payout_ids": [retried.id], "pin": _payout_shown(session, retried.id)}


def _payout_shown(session: Session, payout_id: int) -> dict[str, Any]:
    """What an approver must see of a payout: whose, and how much."""
    payout = session.get(Payout, payout_id)
    driver = session.get(Driver, payout.driver_id) if payout else None
    return {"driver": driver.code if driver else None, "amount_cents": payout.amount_cents if payout else None}


def _approve_payout(session: Session, params: dict[str, Any], settings: Settings, request: MoneyRequest, approver: str,
                    day: date) -> dict[str, Any]:
    payout_id = int(params["payout_id"])
    approve(session, payout_id, operator=approver, four_eyes=settings.four_eyes)
    return {"payout_ids": [payout_id], "pin": _payout_shown(session, payout_id)}


def _withdraw_payout(session: Session, params: dict[str, Any], settings: Settings, request: MoneyRequest, approver: str,
                     day: date) -> dict[str, Any]:
    withdrawn = withdraw_payout(session, int(params["payout_id"]), operator=request.requested_by, reason=request.reason,
                                business_date=day)
    return {"withdrawn": withdrawn.id, "pin": _payout_shown(session, withdrawn.id)}


def _resolve_payout(session: Session, params: dict[str, Any], settings: Settings, request: MoneyRequest, approver: str,
                    day: date) -> dict[str, Any]:
    payout_id = int(params["payout_id"])
    want_status_check(session, payout_id)
    return {"status_checks": [payout_id], "pin": _payout_shown(session, payout_id)}


def _kes(params: dict[str, Any]) -> str:
    return f"KES {params['amount_cents'] // 100:,}" if params.get("amount_cents") is not None else "KES ?"


# What may be asked for, how it runs, and how it reads in a list (with the driver and the amount an
# approver must see: pinned in the request's parameters when it was asked).
KINDS: dict[str, tuple[Run, Callable[[dict[str, Any]], str]]] = {
    "unmatched_assign": (_assign, lambda p: f"assign {p['trans_id']} to {p['driver']}" + (f" as {p['as']}" if p.get("as") else "")),
    "deposit_refund": (_refund, lambda p: f"refund {_kes(p)} of the deposit of {p['driver']}"),
    "payout_retry": (_retry, lambda p: f"pay {_kes(p)} to {p.get('driver')} again (failed payout {p['payout_id']})"),
    "payout_approve": (_approve_payout, lambda p: f"release payout {p['payout_id']}: {_kes(p)} to {p.get('driver')}"),
    "payout_withdraw": (_withdraw_payout, lambda p: f"withdraw payout {p['payout_id']}: {_kes(p)} to {p.get('driver')}"),
    "payout_resolve": (_resolve_payout, lambda p: f"ask M-Pesa what became of payout {p['payout_id']}: {_kes(p)} to "
                                                  f"{p.get('driver')} (its answer settles it)"),
}


@dataclass(frozen=True)
class Staged:
    """A kind that runs in transactions of its own: ``check`` (in the asker's transaction) refuses
    what could not run now and returns what to pin; ``run`` does it once approved."""

    check: Callable[[Session, dict[str, Any]], dict[str, Any]]
    run: Callable[[sessionmaker[Session], dict[str, Any], Settings, "Decided"], dict[str, Any]]
    describe: Callable[[dict[str, Any]], str]


def _approved(request: Decided) -> str:
    """The reason a staged movement records (on its postings, fixes and audit rows): the asker's,
    with the request and the second person (or that there was none: four eyes off)."""
    if request.decided_by is None or same_person(request.decided_by, request.requested_by):
        return f"{request.reason} (request {request.id}, run without a second person: four eyes off)"
    return f"{request.reason} (request {request.id}, approved by {request.decided_by})"


def _check_undo(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    day = date.fromisoformat(params["date"])
    # Pinned: the close this request is about. One run again after an undo is another close.
    return {"drivers": len(undoable(session, day)), "close_ran_at": closed_at(session, day)}


def _undo(sessions: sessionmaker[Session], params: dict[str, Any], settings: Settings, request: Decided) -> dict[str, Any]:
    summary = undo_close(sessions, date.fromisoformat(params["date"]), settings, operator=request.requested_by,
                         reason=_approved(request), close_ran_at=params["close_ran_at"], drivers=params["drivers"])
    # Counts, and the few names a person follows up (a fleet's every driver would bloat the page).
    return {"reopened": len(summary.reopened), "vehicles_returned": len(summary.vehicles_returned),
            "refunds_withdrawn": len(summary.refunds_withdrawn), "reinstated": summary.reinstated,
            "vehicles_taken": summary.vehicles_taken, "refunds_already_released": summary.refunds_already_released}


def _check_fix(session: Session, params: dict[str, Any]) -> dict[str, Any]:
    with Session(session.get_bind()) as snapshot:  # a check reads from a snapshot of its own
        fixable = [found.key for found in check(snapshot.connection()) if found.kind in FIXABLE]
    if not fixable:
        raise RequestRefused("the books have nothing a fix can correct now (run a check to see the discrepancies)")
    # Pinned: exactly these, as they are now; the approver sees them, and nothing else is fixed.
    return {"discrepancies": sorted(fixable)}


def _fix(sessions: sessionmaker[Session], params: dict[str, Any], settings: Settings, request: Decided) -> dict[str, Any]:
    approved = frozenset(params["discrepancies"])
    run_id, found, fixed = run_fix(sessions, settings, operator=request.requested_by, reason=_approved(request),
                                   only=approved)
    if gone := sorted(approved - {d.key for d in found}):
        raise ValueError(f"{fixed} corrected (reconciliation run {run_id}); {len(gone)} no longer as approved, left "
                         f"alone: {'; '.join(gone[:5])}: run a check and ask again")
    return {"run_id": run_id, "fixed": fixed}


def _fix_described(params: dict[str, Any]) -> str:
    listed = params.get("discrepancies", [])
    return f"fix {len(listed)} discrepancies in the books: " + "; ".join(listed[:5]) + ("; …" if len(listed) > 5 else "")


STAGED: dict[str, Staged] = {
    "close_undo": Staged(_check_undo, _undo, lambda p: f"undo the close of business day {p['date']} ({p.get('drivers', '?')} drivers)"),
    "reconcile_fix": Staged(_check_fix, _fix, _fix_described),
}


def _a(role: str) -> str:
    return f"{'an' if role[0] in 'aeiou' else 'a'} {role}"


# What a request is about: a second one about the same thing while the first waits is refused
# (a form sent twice would otherwise move the money twice once both are approved).
SUBJECT_KEYS: dict[str, str | None] = {"unmatched_assign": "trans_id", "deposit_refund": "driver", "payout_retry": "payout_id",
                "payout_approve": "payout_id", "payout_withdraw": "payout_id", "payout_resolve": "payout_id",
                "close_undo": "date", "reconcile_fix": None}


def describe(request: MoneyRequest | Decided) -> str:
    if request.kind in STAGED:
        return STAGED[request.kind].describe(request.params)
    return KINDS[request.kind][1](request.params)


@dataclass(frozen=True)
class Decided:
    """A request as its maker or decider sees it once committed."""

    id: int
    kind: str
    state: str
    outcome: dict[str, Any] | None
    requested_by: str
    reason: str
    params: dict[str, Any]
    decided_by: str | None

    @classmethod
    def of(cls, request: MoneyRequest) -> Decided:
        return cls(request.id, request.kind, request.state, request.outcome, request.requested_by, request.reason,
                   dict(request.params), request.decided_by)


def submit(sessions: sessionmaker[Session], kind: str, params: dict[str, Any], *, asker: Asker, reason: str,
           settings: Settings, business_date: date) -> Decided:
    """``ask`` in a transaction of its own; a staged kind that may run at once (four eyes off)
    runs after it is committed. The caller sends the payouts in ``outcome["payout_ids"]``."""
    with sessions.begin() as session:
        made = Decided.of(ask(session, kind, params, asker=asker, reason=reason, settings=settings,
                              business_date=business_date))
    return _run_staged(sessions, made, settings)


def settle(sessions: sessionmaker[Session], request_id: int, *, approver: Asker, approve_it: bool, settings: Settings,
           business_date: date, note: str = "") -> Decided:
    """``decide`` in a transaction of its own; an approved staged kind runs after it is committed."""
    with sessions.begin() as session:
        decided = Decided.of(decide(session, request_id, approver=approver, approve_it=approve_it, settings=settings,
                                    business_date=business_date, note=note))
    return _run_staged(sessions, decided, settings)


def _run_staged(sessions: sessionmaker[Session], request: Decided, settings: Settings) -> Decided:
    if request.state != "running":
        return request
    try:
        state, outcome = "done", STAGED[request.kind].run(sessions, request.params, settings, request)
    except ValueError as error:  # it could run when approved, not any more (a close ran meanwhile, …)
        state, outcome = "failed", {"error": str(error)}
    except BaseException as error:  # the database went away, Ctrl-C, …: part may be done; say so
        log.exception("money_request_interrupted", request_id=request.id, kind=request.kind)
        with contextlib.suppress(Exception):  # the database may be what went away: then it stays running
            _finish(sessions, request, "failed", {"error": f"interrupted: {error.__class__.__name__}: {error}"[:500],
                                                  "partly_done": "maybe: both kinds are safe to ask for again"})
        raise
    return _finish(sessions, request, state, outcome)


def _finish(sessions: sessionmaker[Session], request: Decided, state: str, outcome: dict[str, Any]) -> Decided:
    with sessions.begin() as session:
        row = session.execute(select(MoneyRequest).where(MoneyRequest.id == request.id).with_for_update()).scalar_one()
        row.state, row.outcome = state, outcome
        record_action(session, action="money_request_finished", subject=f"request:{request.id}", operator=row.decided_by or "",
                      reason=request.reason, detail={"kind": request.kind, "state": state, "outcome": outcome})
        log.warning("money_request_finished", request_id=request.id, kind=request.kind, state=state)
        return Decided.of(row)


def ask(session: Session, kind: str, params: dict[str, Any], *, asker: Asker, reason: str, settings: Settings,
        business_date: date) -> MoneyRequest:
    """Make a request (or, with four eyes off, run it at once); ``RequestRefused`` when it could
    not run. The caller sends the payouts of a request that ran (``outcome["payout_ids"]``)."""
    if kind not in KINDS and kind not in STAGED:
        raise RequestRefused(f"no such request: {kind}")
    if asker.role not in ASKERS:
        raise RequestRefused(f"{_a(asker.role)} cannot ask for money to move")
    if not reason.strip():
        raise RequestRefused("a request says why")
    if len(reason) > REASON_MAX_CHARS:
        raise RequestRefused(f"a reason is at most {REASON_MAX_CHARS} characters")
    subject = SUBJECT_KEYS[kind]
    # Two people asking the same at once: one after the other, so the second sees the first.
    transaction_lock(session, f"money_request:{kind}:{params.get(subject) if subject else ''}")
    # Only pending ones: a running undo or fix may be asked for again (each is pinned to what its
    # approver saw, so a second one finds nothing left to do), and one a crash left running blocks nothing.
    same = select(MoneyRequest.id).where(MoneyRequest.state == "pending", MoneyRequest.kind == kind)
    if subject is not None:
        same = same.where(MoneyRequest.params[subject].astext == str(params.get(subject)))
    if waiting := session.execute(same.limit(1)).scalar_one_or_none():
        about = "the same " + subject.replace("_", " ") if subject else "this"
        raise RequestRefused(f"request {waiting} about {about} is already waiting for a second person: approve or "
                             "reject it first")
    request = MoneyRequest(kind=kind, params=params, reason=reason.strip(), requested_by=operator_name(asker.username))
    session.add(request)
    session.flush()
    try:
        if kind in STAGED:
            tried = {"pin": STAGED[kind].check(session, params)}
        else:
            with structlog.contextvars.bound_contextvars(dry_run=True), session.begin_nested() as trial:
                tried = KINDS[kind][0](session, params, settings, request, "dry-run check", business_date)
                trial.rollback()
    except ValueError as error:  # the library's refusals (unknown driver, assigned already, …)
        raise RequestRefused(str(error)) from error
    if pinned := tried.pop("pin", None):  # what the approver sees, and what will run
        request.params = {**params, **pinned}
    record_action(session, action="money_requested", subject=f"request:{request.id}", operator=request.requested_by,
                  reason=request.reason, detail={"kind": kind, "params": params})
    if not settings.four_eyes:
        return _run(session, request, request.requested_by, settings, business_date, alone=True)
    log.info("money_requested", request_id=request.id, kind=kind, requested_by=request.requested_by)
    return request


def decide(session: Session, request_id: int, *, approver: Asker, approve_it: bool, settings: Settings,
           business_date: date, note: str = "") -> MoneyRequest:
    """Approve (run) or reject a pending request, under its row lock; ``RequestRefused`` for one
    decided already, one's own, or a user who may not approve."""
    request = session.execute(select(MoneyRequest).where(MoneyRequest.id == request_id).with_for_update()
                              .execution_options(populate_existing=True)).scalar_one_or_none()
    if request is None:
        raise RequestRefused(f"no request {request_id}")
    if request.state != "pending":
        raise RequestRefused(f"request {request_id} is {request.state} already")
    if approver.role not in APPROVERS:
        raise RequestRefused(f"{_a(approver.role)} cannot approve or reject requests")
    if same_person(request.requested_by, approver.username):
        raise RequestRefused(f"request {request_id} is {request.requested_by}'s own: another person decides it (four eyes)")
    name = operator_name(approver.username)
    if not approve_it:
        request.state, request.decided_by, request.decided_at = "rejected", name, func.now()
        request.outcome = {"note": note} if note else None
        record_action(session, action="money_request_rejected", subject=f"request:{request.id}", operator=name,
                      reason=note or "rejected", detail={"kind": request.kind})
        return request
    return _run(session, request, name, settings, business_date, alone=False)


def _run(session: Session, request: MoneyRequest, approver: str, settings: Settings, business_date: date, *,
         alone: bool) -> MoneyRequest:
    if request.kind in STAGED:  # runs once this is committed (``submit``, ``settle``)
        request.state = "running"
    else:
        try:
            with session.begin_nested():
                outcome = KINDS[request.kind][0](session, request.params, settings, request, approver, business_date)
            outcome.pop("pin", None)
            request.state, request.outcome = "done", outcome
        except ValueError as error:  # it could run when asked, not any more (assigned meanwhile, …)
            request.state, request.outcome = "failed", {"error": str(error)}
    request.decided_by, request.decided_at = approver, func.now()
    record_action(session, action="money_request_ran_alone" if alone else "money_request_approved",
                  subject=f"request:{request.id}", operator=approver,
                  reason="four eyes off: no second person" if alone else "approved",
                  detail={"kind": request.kind, "state": request.state, "outcome": request.outcome})
    log.warning("money_request_decided", request_id=request.id, state=request.state, approver=approver, alone=alone)
    return request


def pending(session: Session, *, limit: int = 200) -> list[MoneyRequest]:
    return list(session.execute(select(MoneyRequest).where(MoneyRequest.state == "pending")
                                .order_by(MoneyRequest.id).limit(limit)).scalars())


def recent(session: Session, *, limit: int = 100) -> list[MoneyRequest]:
    return list(session.execute(select(MoneyRequest).order_by(MoneyRequest.id.desc()).limit(limit)).scalars())
