"""Payout rows as stored: look-ups and the listings operators and sweeps read. No money moves here
(``money.payouts`` makes every payout decision)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import Session

from db.models import PAYOUT_RESULT_KINDS, Driver, Inbox, Payout, PayoutStatusQuery, Posting
from fleetpay.payout_states import ASKED_ABOUT, RESOLVABLE_STATES
from schemas.result_evidence import read_result

EVIDENCE_ROWS_MAX = 200  # a payout named by more results than this is under attack; the first ones tell
BACKOFF_DOUBLINGS_MAX = 20  # 2²⁰ × the interval is past any sensible maximum; more would overflow


def payout_by_originator_id(session: Session, originator_conversation_id: str) -> Payout | None:
    return session.execute(
        select(Payout).where(Payout.originator_conversation_id == originator_conversation_id)
    ).scalar_one_or_none()


def reserved_on(session: Session, payout_id: int) -> date:
    """The business date of the payout's reserve posting: its later postings share it."""
    return session.execute(
        select(Posting.business_date).where(Posting.idempotency_key == f"payout:{payout_id}:reserve")
    ).scalar_one()


def payout_detail(session: Session, payout_id: int) -> dict[str, Any] | None:
    """One payout as a person judges it (the console's payout page, ``fleetpay payouts show``):
    its row, the status queries we sent about it, and every result that names it or one of those
    queries, or was taken to be about it (the evidence), oldest first, each as its body reads and
    as fleetpay took it; at most ``EVIDENCE_ROWS_MAX`` (``evidence_total`` counts them all), the
    settling one and the answers to our own queries always among them."""
    found = session.execute(select(Payout, Driver.code).join(Driver, Driver.id == Payout.driver_id)
                            .where(Payout.id == payout_id)).one_or_none()
    if found is None:
        return None
    payout, code = found
    queries = session.execute(select(PayoutStatusQuery.originator_conversation_id, PayoutStatusQuery.created_at)
                              .where(PayoutStatusQuery.payout_id == payout_id)
                              .order_by(PayoutStatusQuery.created_at)).all()
    ours = [query_id for query_id, _ in queries]
    named = [payout.originator_conversation_id, *ours]
    # Those naming it or our queries by id (applied or not yet), and those taken to be about it
    # (a status answer to a query we never sent names it only inside).
    about = or_(and_(Inbox.kind.in_(PAYOUT_RESULT_KINDS),
                     func.split_part(Inbox.external_id, "#", 1).in_([*named, *(f"timeout:{n}" for n in named)])),
                Inbox.payout_id == payout_id)
    total = session.execute(select(func.count()).select_from(Inbox).where(about)).scalar_one()
    # A flood of forged bodies never hides what settled it or the answers to our own queries.
    first = case((Inbox.id == payout.settled_by_inbox_id, 0),
                 (func.split_part(Inbox.external_id, "#", 1).in_([*ours, *(f"timeout:{q}" for q in ours)]), 1), else_=2)
    results = sorted(session.execute(select(Inbox).where(about).order_by(first, Inbox.received_at, Inbox.id)
                                     .limit(EVIDENCE_ROWS_MAX)).scalars().all(), key=lambda row: (row.received_at, row.id))
    return {
        **_listed(payout, code),
        "msisdn": payout.msisdn,
        "conversation_id": payout.conversation_id,
        "requested_by": payout.requested_by,
        "approved_by": payout.approved_by,
        "completed_at": payout.completed_at.isoformat() if payout.completed_at else None,
        "status_checked_at": payout.status_checked_at.isoformat() if payout.status_checked_at else None,
        "status_queries": payout.status_queries,
        "status_check_wanted": payout.status_check_wanted_at is not None,
        "queries": [{"query_id": query_id, "sent_at": sent_at.isoformat()} for query_id, sent_at in queries],
        "evidence_total": total,  # more than listed: the latest others were left out
        "evidence": [{"inbox_id": row.id, "kind": row.kind, "received_at": row.received_at.isoformat(),
                      "source_ip": row.source_ip, "status": row.status, "taken_as": row.reason,
                      "settled_it": row.id == payout.settled_by_inbox_id, **read_result(row.kind, row.body)}
                     for row in results],
    }


def list_payouts(
    session: Session, *, state: str | None = None, driver_code: str | None = None, before_id: int | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    """Payouts, newest first, as operators read them (``fleetpay payouts list``); ``before_id``
    starts the page after the last one shown (keyset pages)."""
    query = select(Payout, Driver.code).join(Driver, Driver.id == Payout.driver_id).order_by(Payout.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(Payout.id < before_id)
    if state:
        query = query.where(Payout.state == state)
    if driver_code:
        query = query.where(Driver.code == driver_code)
    return [_listed(payout, code) for payout, code in session.execute(query).all()]


def _listed(payout: Payout, code: str) -> dict[str, Any]:
    return {
        "id": payout.id,
        "driver": code,
        "amount_cents": payout.amount_cents,
        "state": payout.state,
        "originator_conversation_id": payout.originator_conversation_id,
        "receipt": payout.receipt,
        "result_code": payout.result_code,
        "result_desc": payout.result_desc,
        "status_result_code": payout.status_result_code,
        "settled_by_inbox_id": payout.settled_by_inbox_id,
        "review_reason": payout.review_reason,
        "attempts": payout.attempts,
        "requires_approval": payout.requires_approval,
        "cause": payout.cause_key,
        "created_at": payout.created_at.isoformat(),
        "updated_at": payout.updated_at.isoformat(),
    }


def _older_than(seconds: int):  # type: ignore[no-untyped-def]
    return Payout.updated_at < func.now() - timedelta(seconds=seconds)


def take_pending_due(session: Session, *, older_than_s: int, limit: int) -> list[int]:
    """Pending payouts (not waiting for approval) untouched for ``older_than_s``: their message was
    lost after the COMMIT, or they were proven unsent. Stamped, so each is re-sent at most once per
    ``older_than_s``."""
    due = (
        select(Payout.id)
        .where(Payout.state == "pending", Payout.requires_approval.is_(False), _older_than(older_than_s))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(
        session.execute(
            update(Payout).where(Payout.id.in_(due.scalar_subquery())).values(updated_at=func.now()).returning(Payout.id)
        ).scalars()
    )


def stale_claims(session: Session, *, older_than_s: int, limit: int) -> list[int]:
    """Payouts still ``submitting`` after ``older_than_s``: their worker died between the claim and
    Daraja's answer."""
    return list(
        session.execute(
            select(Payout.id).where(Payout.state == "submitting", _older_than(older_than_s)).limit(limit)
        ).scalars()
    )


def take_status_checks_due(
    session: Session, *, submitted_older_than_s: int, interval_s: int, backoff_max_s: int, queries_max: int, limit: int
) -> list[int]:
    """Payouts whose outcome only a Transaction Status query can tell: ``unknown``,
    ``failure_reported`` (a failure result waits for our confirmation), or ``submitted`` with no
    result for ``submitted_older_than_s``. The right to ask is taken here (stamped), so a slow queue
    never holds two checks of a payout. The wait after the n-th query is ``interval_s × 2ⁿ⁻¹``, at
    most ``backoff_max_s``; a payout asked ``queries_max`` times is left to ``status_exhausted``. A
    query a person asked for is due whatever the state's rule (``review`` too) and the count."""
    doublings = func.least(func.greatest(Payout.status_queries - 1, 0), BACKOFF_DOUBLINGS_MAX)
    wait = func.least(timedelta(seconds=interval_s) * func.power(2, doublings), timedelta(seconds=backoff_max_s))
    as_usual = and_(
        or_(Payout.state.in_(ASKED_ABOUT), and_(Payout.state == "submitted", _older_than(submitted_older_than_s))),
        Payout.status_queries < queries_max,
        or_(Payout.status_checked_at.is_(None), Payout.status_checked_at < func.now() - wait),
    )
    # A person asked (``money.payouts.want_status_check``): until Daraja takes a query, each try
    # waiting half the time since the wish (at least ``interval_s``, at most ``backoff_max_s``), so
    # the waits double while Daraja does not take it.
    since_checked = func.now() - Payout.status_checked_at
    wanted = and_(
        Payout.status_check_wanted_at.is_not(None),
        Payout.state.in_(RESOLVABLE_STATES),
        or_(
            Payout.status_checked_at.is_(None),
            and_(since_checked > timedelta(seconds=interval_s),
                 or_(func.extract("epoch", since_checked) * 2
                     > func.extract("epoch", func.now() - Payout.status_check_wanted_at),
                     since_checked > timedelta(seconds=backoff_max_s))),
        ),
    )
    due = (
        select(Payout.id)
        .where(
            or_(as_usual, wanted),
            # Its result has arrived and waits for a worker: asking again would only add work.
            # (Result rows are keyed ``<OriginatorConversationID>#<body digest>``.)
            ~select(Inbox.id)
            .where(Inbox.kind == "b2c_result", Inbox.status == "received",
                   Inbox.external_id.startswith(Payout.originator_conversation_id + "#"))
            .exists(),
        )
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(
        session.execute(
            update(Payout).where(Payout.id.in_(due.scalar_subquery())).values(status_checked_at=func.now()).returning(Payout.id)
        ).scalars()
    )


def status_exhausted(
    session: Session, *, queries_max: int, interval_s: int, submitted_older_than_s: int, limit: int
) -> list[tuple[int, int]]:
    """(payout id, queries) of payouts still in doubt after ``queries_max`` status queries Daraja
    took, once the last one has had ``interval_s`` to be answered (a ``submitted`` payout only once
    it is as stale as the sweep asks about)."""
    return [
        (payout_id, queries)
        for payout_id, queries in session.execute(
            select(Payout.id, Payout.status_queries)
            .where(
                or_(Payout.state.in_(ASKED_ABOUT), and_(Payout.state == "submitted", _older_than(submitted_older_than_s))),
                Payout.status_queries >= queries_max,
                Payout.status_checked_at < func.now() - timedelta(seconds=interval_s),
            )
            .limit(limit)
        ).all()
    ]
