"""Payouts: every decision that creates, claims, settles or releases one (docs/design.md §3).

Creating a payout moves its amount ``payable → payouts_in_flight`` in the same transaction, so the
money owed and the money on its way always add up. The payout is keyed by our own
OriginatorConversationID, minted once here and never again for the same payout while an earlier
attempt may have paid.
"""

from __future__ import annotations

import secrets
from datetime import date

import structlog
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from db import fleet, ledger
from db.audit import record_action
from db.fleet import lock_driver
from db.models import Driver, Payout, PayoutStatusQuery, Posting
from db.payouts import reserved_on
from money import notices
from fleetpay import rules
from fleetpay.payout_states import QUERYABLE, RESOLVABLE_STATES, TERMINAL, IllegalTransition, PayoutEvent, Transition, transition
from fleetpay.people import operator_name, same_person
from fleetpay.settings import Settings

log = structlog.get_logger("fleetpay.payouts")


class PayoutError(ValueError):
    """An operator asked for something a payout's state does not allow."""


# The result code of a payout a person withdrew (never sent): it is not retried.
WITHDRAWN = "withdrawn"


def new_originator_conversation_id() -> str:
    # Unique across databases too (a restored or re-created database must not reuse an id
    # Safaricom has already seen): random, not a sequence.
    return f"fp_{secrets.token_hex(10)}"


# populate_existing: a Payout the session loaded before the lock (a result handler finds it by its
# id first) is read again under the lock; deciding on the stale copy could book it twice.
_LOCK_PAYOUT = (
    select(Payout).where(Payout.id == bindparam("payout_id")).with_for_update().execution_options(populate_existing=True)
)


def create_payout(
    session: Session,
    *,
    driver: Driver,
    amount_cents: int,
    cause_key: str,
    business_date: date,
    requires_approval: bool = False,
    requested_by: str | None = None,
) -> Payout:
    """A ``pending`` payout of ``amount_cents`` to ``driver``, reserved from their payable account.

    Call under the driver's lock. ``cause_key`` is unique: the same cause cannot pay twice.
    """
    assert amount_cents > 0 and amount_cents % 100 == 0, amount_cents
    payout = Payout(
        originator_conversation_id=new_originator_conversation_id(),
        cause_key=cause_key,
        driver_id=driver.id,
        msisdn=driver.msisdn,
        amount_cents=amount_cents,
        requires_approval=requires_approval,
        requested_by=requested_by,
    )
    session.add(payout)
    session.flush()
    accounts = ledger.driver_accounts(session, driver.id)
    ledger.post(
        session,
        key=f"payout:{payout.id}:reserve",
        kind="payout_reserve",
        business_date=business_date,
        driver_id=driver.id,
        payout_id=payout.id,
        legs=[
            (accounts.payable, -amount_cents),
            (ledger.system_accounts(session).payouts_in_flight, amount_cents),
        ],
    )
    return payout


def payout_plan(payable_cents: int, settings: Settings, *, cause_key: str) -> list[tuple[str, int]]:
    """Pure: the payouts (cause key, amount) that pay out what is payable: nothing below the B2C
    minimum, whole shillings, in parts of at most the B2C maximum keyed ``<cause>``, ``<cause>#2`` …
    Below zero after an overpayment: later shares pay the debt back before anything goes out."""
    amount_cents = rules.payout_amount_cents(max(0, payable_cents), minimum_cents=settings.b2c_minimum_cents)
    if amount_cents == 0:
        return []
    parts = rules.payout_parts_cents(amount_cents, maximum_cents=settings.b2c_maximum_cents,
                                     minimum_cents=settings.b2c_minimum_cents)
    return [(cause_key if number == 1 else f"{cause_key}#{number}", part) for number, part in enumerate(parts, start=1)]


def reserve_payable(
    session: Session, driver: Driver, settings: Settings, *, cause_key: str, business_date: date
) -> list[Payout]:
    """Payouts of everything the driver is owed, in whole shillings, once it reaches the B2C
    minimum (smaller amounts accrue and go out with a later payout); more than the B2C maximum goes
    out as several payouts, each with its own OriginatorConversationID, keyed ``<cause>``,
    ``<cause>#2`` … Call under the driver's lock."""
    payable_cents = ledger.balance_cents(session, ledger.driver_accounts(session, driver.id).payable)
    payouts = [
        create_payout(session, driver=driver, amount_cents=part_cents, business_date=business_date, cause_key=key)
        for key, part_cents in payout_plan(payable_cents, settings, cause_key=cause_key)
    ]
    if not payouts:
        return []
    amount_cents = sum(payout.amount_cents for payout in payouts)
    log.info("payout_reserved", payout_ids=[p.id for p in payouts], driver=driver.code, amount_cents=amount_cents)
    return payouts


def retry_failed(session: Session, payout_id: int, settings: Settings, *, business_date: date, operator: str) -> Payout:
    """Pay again what a *failed* payout (proven unpaid; its money is back in ``payable``) owed.
    Only once per failed payout (``retry:<id>``), never one a person withdrew, and recorded."""
    driver_id = session.execute(select(Payout.driver_id).where(Payout.id == payout_id)).scalar_one_or_none()
    if driver_id is None:
        raise PayoutError(f"no payout {payout_id}")
    driver = lock_driver(session, driver_id)
    failed = session.execute(_LOCK_PAYOUT, {"payout_id": payout_id}).scalar_one()
    if failed.state != "failed":
        raise PayoutError(f"payout {payout_id} is {failed.state}: only a failed payout is proven unpaid")
    if failed.result_code == WITHDRAWN:
        raise PayoutError(f"payout {payout_id} was withdrawn by a person ({failed.result_desc}): it is not to be paid")
    if session.execute(select(Payout.id).where(Payout.cause_key == f"retry:{payout_id}")).first():
        raise PayoutError(f"payout {payout_id} was retried already")
    payable_cents = ledger.balance_cents(session, ledger.driver_accounts(session, driver_id).payable)
    if payable_cents < failed.amount_cents:
        raise PayoutError(f"driver {driver.code} is owed {payable_cents} cents, less than {failed.amount_cents}")
    retried = create_payout(
        session, driver=driver, amount_cents=failed.amount_cents, cause_key=f"retry:{payout_id}", business_date=business_date
    )
    record_action(session, action="payout_retried", subject=f"payout:{payout_id}", operator=operator,
                  reason="proven unpaid", detail={"new_payout_id": retried.id, "amount_cents": retried.amount_cents})
    return retried


def claim(session: Session, payout_id: int) -> Payout | None:
    """Take a ``pending`` payout to send it: a conditional UPDATE, so one attempt is in flight per
    payout whatever number of workers got the message. None: not ours to send (any more)."""
    return session.execute(
        update(Payout)
        .where(Payout.id == payout_id, Payout.state == "pending", Payout.requires_approval.is_(False))
        .values(state="submitting", attempts=Payout.attempts + 1, updated_at=func.now())
        .returning(Payout)
    ).scalar_one_or_none()


def apply_event(
    session: Session,
    payout_id: int,
    event: PayoutEvent,
    *,
    receipt: str | None = None,
    result_code: str | None = None,
    result_desc: str | None = None,
    status_result_code: str | None = None,
    evidence_inbox_id: int | None = None,
    review_reason: str | None = None,
) -> Transition:
    """Move a payout by ``event`` (``fleetpay.payout_states``) and post the money that goes with
    it (``_post_move``). ``evidence_inbox_id`` is the callback that moved it; ``review_reason`` is
    added to the payout's record of what needs an operator, even when the state cannot move. Locks
    the driver, then the payout (read again under its lock)."""
    driver_id = session.execute(select(Payout.driver_id).where(Payout.id == payout_id)).scalar_one()
    lock_driver(session, driver_id)
    payout = session.execute(_LOCK_PAYOUT, {"payout_id": payout_id}).scalar_one()
    previous = payout.state
    moved = transition(previous, event)  # type: ignore[arg-type]
    if review_reason:
        flag_for_review(payout, review_reason)
    if not moved.changed:
        return moved
    payout.state = moved.new_state
    payout.updated_at = func.now()  # type: ignore[assignment]
    payout.receipt = receipt or payout.receipt
    payout.result_code = result_code if result_code is not None else payout.result_code
    payout.result_desc = result_desc or payout.result_desc
    payout.status_result_code = status_result_code or payout.status_result_code
    payout.settled_by_inbox_id = evidence_inbox_id or payout.settled_by_inbox_id
    if moved.new_state in ("pending", "reopened"):  # sent again, or asked about anew: queries start over
        payout.status_queries = 0
    if moved.new_state in TERMINAL:
        payout.completed_at = func.now()  # type: ignore[assignment]
    if moved.new_state not in RESOLVABLE_STATES:  # settled, or sent again: nothing left to ask
        payout.status_check_wanted_at = None
    _post_move(session, payout, previous)
    notices.payout_moved(session, payout)
    return moved


def _post_move(session: Session, payout: Payout, previous: str) -> None:
    """The money of a move, each posting keyed so it is made once per move:

    - to ``paid``: ``payouts_in_flight → mpesa`` (from ``failed``: ``payable → mpesa``);
    - to ``failed``: ``payouts_in_flight → payable`` (the driver is owed it again);
    - ``failed`` to ``reopened``: ``payable → payouts_in_flight`` (a success named it: the money
      must not be paid out again until our own status query answers).

    Whenever the driver's ``payable`` ends below zero (the money had been paid out again), their
    unsent payouts are held for an operator, and a payment so booked is flagged as an overpayment."""
    system = ledger.system_accounts(session)
    payable = ledger.driver_accounts(session, payout.driver_id).payable
    amount_cents = payout.amount_cents
    if payout.state == "paid":
        source, kind = (payable, "payout_paid_after_failure") if previous == "failed" else (system.payouts_in_flight, "payout_paid")
        _post_payout(session, payout, kind, [(source, -amount_cents), (system.mpesa, amount_cents)])
    elif payout.state == "failed":
        _post_payout(session, payout, "payout_failed", [(system.payouts_in_flight, -amount_cents), (payable, amount_cents)])
    elif payout.state == "reopened":
        _post_payout(session, payout, "payout_reopened", [(payable, -amount_cents), (system.payouts_in_flight, amount_cents)])
        flag_for_review(payout, "success_after_failure")
    else:
        return
    owed_cents = ledger.balance_cents(session, payable)
    if owed_cents >= 0:
        if previous == "failed" and payout.state == "paid":
            flag_for_review(payout, "paid_after_failure")
        return
    if payout.state == "paid":
        flag_for_review(payout, f"overpaid:{-owed_cents}")
        log.error("payout_overpaid", payout_id=payout.id, driver_payable_cents=owed_cents)
    held = session.execute(
        update(Payout)
        .where(Payout.driver_id == payout.driver_id, Payout.state == "pending", Payout.requires_approval.is_(False))
        .values(requires_approval=True, review_reason=func.concat_ws("; ", Payout.review_reason, "held:overpayment_risk"))
        .returning(Payout.id)
    ).scalars().all()
    if held:
        log.error("payouts_held", driver_id=payout.driver_id, payout_ids=list(held), driver_payable_cents=owed_cents)


def _post_payout(
    session: Session, payout: Payout, kind: str, legs: list[tuple[int, int]], *, memo: dict[str, str] | None = None
) -> None:
    """One posting of a payout's move; keyed ``payout:<id>:<state>``, and for a move a payout has
    made before (failed, reopened, failed again) ``payout:<id>:<state>:<n>``."""
    key = f"payout:{payout.id}:{kind.removeprefix('payout_')}"
    earlier = session.execute(
        select(func.count()).select_from(Posting).where(Posting.payout_id == payout.id, Posting.kind == kind)
    ).scalar_one()
    ledger.post(
        session,
        key=key if earlier == 0 else f"{key}:{earlier + 1}",
        kind=kind,
        business_date=reserved_on(session, payout.id),
        driver_id=payout.driver_id,
        payout_id=payout.id,
        memo=memo,
        legs=legs,
    )


def flag(session: Session, payout_id: int, reason: str) -> None:
    """Flag a payout for an operator, under its locks, without moving it."""
    lock_driver(session, session.execute(select(Payout.driver_id).where(Payout.id == payout_id)).scalar_one())
    flag_for_review(session.execute(_LOCK_PAYOUT, {"payout_id": payout_id}).scalar_one(), reason)


def flag_for_review(payout: Payout, reason: str) -> None:
    """Add ``reason`` to what an operator must look at about ``payout`` (reasons accumulate: the
    record is evidence, never overwritten)."""
    known = payout.review_reason.split("; ") if payout.review_reason else []
    if reason not in known:
        payout.review_reason = "; ".join([*known, reason])
    log.warning("payout_needs_review", payout_id=payout.id, state=payout.state, reason=reason)


def record_conversation_id(session: Session, payout_id: int, conversation_id: str) -> None:
    """The ConversationID Daraja's HTTP answer gave our request; only that answer may set it (a
    result callback, forged or not, never does), and only once. Locks the driver first, as every
    payout move does (driver, then payout: one lock order, no deadlock with a settlement)."""
    lock_driver(session, session.execute(select(Payout.driver_id).where(Payout.id == payout_id)).scalar_one())
    session.execute(
        update(Payout).where(Payout.id == payout_id, Payout.conversation_id.is_(None)).values(conversation_id=conversation_id)
    )


def post_settlement(session: Session, payout: Payout, *, memo: dict[str, str] | None = None) -> None:
    """The missing money of a settled payout whose in-flight share was left (a reconciliation fix):
    ``paid`` moves ``payouts_in_flight → mpesa``; ``failed`` returns the amount to ``payable``."""
    system = ledger.system_accounts(session)
    assert payout.state in ("paid", "failed"), payout.state
    to_account = system.mpesa if payout.state == "paid" else ledger.driver_accounts(session, payout.driver_id).payable
    _post_payout(session, payout, f"payout_{payout.state}",
                 [(system.payouts_in_flight, -payout.amount_cents), (to_account, payout.amount_cents)], memo=memo)


# The cause keys of a deposit refund's payouts (``money.deposits``, and the close's termination).
REFUND_CAUSES = ("refund:", "deposit-refund:")


def approve(session: Session, payout_id: int, *, operator: str, four_eyes: bool = True) -> None:
    """Release a payout that waits for an operator's approval (a deposit refund, or one held
    after an overpayment). Four eyes: a payout a person asked for is approved by someone else.
    Refused while the driver owes money (``payable`` below zero): paying them now would pay twice
    what was paid; withdraw the held payout instead (its money repays the debt). Locks the driver,
    then the payout. Recorded in ``operator_actions``."""
    operator = operator_name(operator)
    driver_id = session.execute(select(Payout.driver_id).where(Payout.id == payout_id)).scalar_one_or_none()
    if driver_id is None:
        raise PayoutError(f"no payout {payout_id}")
    lock_driver(session, driver_id)
    payout = session.execute(_LOCK_PAYOUT, {"payout_id": payout_id}).scalar_one()
    if not (payout.state == "pending" and payout.requires_approval):
        raise PayoutError(f"payout {payout_id} is not a pending payout waiting for approval")
    if four_eyes and payout.requested_by is not None and same_person(payout.requested_by, operator):
        raise PayoutError(f"payout {payout_id} was asked for by {payout.requested_by}: another person must approve it (four eyes)")
    owed_cents = ledger.balance_cents(session, ledger.driver_accounts(session, driver_id).payable)
    if owed_cents < 0:
        raise PayoutError(f"the driver owes {-owed_cents} cents (paid more than owed): releasing payout {payout_id} "
                          "would pay them again; withdraw it instead (`fleetpay payouts withdraw`), its money repays the debt")
    payout.requires_approval, payout.approved_by, payout.updated_at = False, operator, func.now()  # type: ignore[assignment]
    record_action(session, action="payout_approved", subject=f"payout:{payout_id}", operator=operator,
                  reason="approved", detail={"amount_cents": payout.amount_cents, "requested_by": payout.requested_by})
    if payout.cause_key.startswith(REFUND_CAUSES):  # the deposit goes back now: the driver is told
        notices.deposit_refunded(session, key=str(payout.id), driver_id=driver_id, amount_cents=payout.amount_cents)
    log.warning("payout_approved", payout_id=payout_id, operator=operator)


def withdraw(session: Session, payout_id: int, *, operator: str, reason: str) -> Payout:
    """An operator withdraws a payout held for approval that was never sent (no attempt: M-Pesa
    cannot have paid it): it becomes ``failed`` and its money is payable again. Locks the driver,
    then the payout; ``PayoutError`` for any other payout."""
    driver_id = session.execute(select(Payout.driver_id).where(Payout.id == payout_id)).scalar_one_or_none()
    if driver_id is None:
        raise PayoutError(f"no payout {payout_id}")
    lock_driver(session, driver_id)
    payout = session.execute(_LOCK_PAYOUT, {"payout_id": payout_id}).scalar_one()
    if not (payout.state == "pending" and payout.requires_approval and payout.attempts == 0):
        raise PayoutError(f"payout {payout_id} is {payout.state}"
                          + (" and was sent" if payout.attempts else "")
                          + ": only a payout held for approval and never sent can be withdrawn")
    apply_event(session, payout_id, "withdraw", result_code=WITHDRAWN, result_desc=f"withdrawn by {operator}: {reason}")
    log.warning("payout_withdrawn", payout_id=payout_id, operator=operator, reason=reason)
    return payout


def reserve_accrued(session: Session, driver_code: str, settings: Settings, *, business_date: date) -> list[Payout]:
    """A payout of what has accrued in one driver's ``payable`` account (instant payouts off, or
    shares below the B2C minimum), if it reaches the minimum. Keyed by the newest entry of that
    account, so asking twice for the same accrued money reserves it once."""
    driver = lock_driver(session, fleet.get_driver(session, driver_code).id)
    payable = ledger.driver_accounts(session, driver.id).payable
    newest_entry_id = ledger.newest_entry_id(session, payable)
    if newest_entry_id is None:
        return []
    return reserve_payable(
        session, driver, settings, cause_key=f"accrued:{driver.code}:{newest_entry_id}", business_date=business_date
    )




def want_status_check(session: Session, payout_id: int) -> None:
    """A person asks what became of a payout in doubt (``review`` above all, which is never asked
    about by itself): it is remembered on the payout, so the sweep asks until Daraja takes one
    query, even past ``payout_status_queries_max`` and whatever became of the message that asks
    at once. ``ValueError`` for a payout that is not in doubt. The answer settles it as any
    status answer does: a person decides nothing about the money here."""
    state = session.execute(select(Payout.state).where(Payout.id == payout_id).with_for_update()).scalar_one_or_none()
    if state is None:
        raise ValueError(f"no payout {payout_id}")
    if state not in RESOLVABLE_STATES:
        raise ValueError(f"payout {payout_id} is {state}: only {', '.join(RESOLVABLE_STATES)} payouts need resolving")
    # Stamped as asked: the message sent with the approval asks at once; the sweep only backs it up.
    session.execute(update(Payout).where(Payout.id == payout_id)
                    .values(status_check_wanted_at=func.now(), status_checked_at=func.now()))


def take_status_check(session: Session, payout_id: int) -> str | None:
    """Take the right to ask Transaction Status about a payout whose outcome is in doubt (or a
    failed one a success callback named); its OriginatorConversationID, or None when it no longer
    needs asking."""
    return session.execute(
        update(Payout)
        .where(Payout.id == payout_id, Payout.state.in_(QUERYABLE))
        .values(status_checked_at=func.now())
        .returning(Payout.originator_conversation_id)
    ).scalar_one_or_none()


def escalate(session: Session, payout_id: int, reason: str) -> Transition:
    """We cannot find out what became of a payout by ourselves (our status queries are refused, or
    ran out): it goes to review with ``reason``; its money stays in flight."""
    return apply_event(session, payout_id, "escalate", review_reason=reason)


def status_query_refused(session: Session, payout_id: int, code: str) -> Transition:
    """Daraja refused our status query itself (a definite refusal: a bad credential, initiator or
    product): asking again cannot help, whoever wanted it, so a person looks."""
    moved = escalate(session, payout_id, f"status_query_refused:{code}")  # the driver's lock, then the payout's
    session.execute(update(Payout).where(Payout.id == payout_id).values(status_check_wanted_at=None))
    return moved


def record_status_query(session: Session, payout_id: int, query_id: str) -> None:
    """Remember a Transaction Status query we sent (by the id Daraja gave it): only a result for
    a query we sent may speak about a payout."""
    recorded = session.execute(
        pg_insert(PayoutStatusQuery).values(originator_conversation_id=query_id, payout_id=payout_id)
        .on_conflict_do_nothing()
        .returning(PayoutStatusQuery.originator_conversation_id)
    ).scalar_one_or_none()
    if recorded is not None:  # only queries Daraja took count towards the limit; a person's wish is met
        session.execute(update(Payout).where(Payout.id == payout_id)
                        .values(status_queries=Payout.status_queries + 1, status_check_wanted_at=None))


def give_up_stale_claim(session: Session, payout_id: int) -> None:
    """A claim whose worker died before recording Daraja's answer: nobody knows whether the request
    reached Daraja, so the payout becomes ``unknown`` (a status query settles it). A no-op if it was
    answered meanwhile."""
    try:
        apply_event(session, payout_id, "ambiguous", result_desc="claim went stale: worker lost")
    except IllegalTransition:
        pass  # answered meanwhile
