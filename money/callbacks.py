"""Apply one stored callback (an inbox row) to the books: the money path's unit of work.

``apply_callback`` locks the row, hands its body to the function for its kind, and marks the row
with the outcome, all in one transaction. Only a ``received`` row is applied, and every posting is
keyed (``c2b:<TransID>``), so a redelivered message, a sweeper re-enqueue or a second worker finds
the row done (or waits for the first worker's transaction) and changes nothing.

A body that cannot be applied (``InvalidCallback``) or a posting conflict marks the row
``rejected`` with its reason instead of being retried for days. Anything else (connection loss,
serialization failure, deadlock) propagates: the transaction rolls back and the caller retries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import structlog
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from db import inbox, ledger
from db.ledger import PostingConflict
from db.models import Inbox
from fleetpay.settings import Settings
from money import float_check, notices, payout_results
from money.payment_batch import PostingRaced, apply_c2b_batch
from money.payments import Applied, apply_payment, payee_for_ref, payment_key
from schemas.callbacks import InvalidCallback, parse_c2b, parse_stk
from schemas.json_body import decode_json
from schemas.parsing import business_date, classify_account_ref

log = structlog.get_logger("fleetpay.worker")

Handler = Callable[[Session, Inbox, Any, Settings], Applied]


def c2b_confirmation(session: Session, row: Inbox, body: Any, settings: Settings) -> Applied:
    payment = parse_c2b(body, max_amount_cents=settings.amount_max_cents)
    structlog.contextvars.bind_contextvars(trans_id=payment.trans_id)
    ref = classify_account_ref(
        payment.bill_ref,
        vehicle_code_digits=settings.vehicle_code_digits,
        driver_code_pattern=settings.driver_code_pattern,
    )
    return apply_payment(
        session,
        key=payment_key(payment.trans_id),
        amount_cents=payment.amount_cents,
        business_date=business_date(payment.trans_time, close_time=settings.close_time, tz=settings.timezone),
        payee=payee_for_ref(session, ref),
        settings=settings,
        source_account=ledger.system_accounts(session).mpesa,
        inbox_id=row.id,
        vehicle_code=ref.code if ref.kind == "vehicle" else None,
    )


def stk_result(session: Session, row: Inbox, body: Any, settings: Settings) -> Applied:
    """An STK push result is recorded, never posted. It carries no account reference, so it
    cannot say whose money it is; the paybill sends a C2B confirmation for the same receipt, which
    does (and Pull Transactions recovers that confirmation if it is lost). Posting from both
    would race: whichever came first would decide who is paid."""
    result = parse_stk(body)
    if result.result_code != 0:
        return Applied("processed", f"stk_failed:{result.result_code}")
    structlog.contextvars.bind_contextvars(trans_id=result.receipt)
    return Applied("processed", f"stk_paid:{result.receipt}:applied_by_c2b_confirmation")


def sms_delivery(session: Session, row: Inbox, body: Any, settings: Settings) -> Applied:
    """An SMS delivery report: recorded on its notice; no money moves."""
    return Applied("processed", notices.record_delivery(session, body))


HANDLERS: Mapping[str, Handler] = {
    "c2b_confirmation": c2b_confirmation,
    "stk_result": stk_result,
    "b2c_result": payout_results.b2c_result,
    "b2c_timeout": payout_results.b2c_timeout,
    "status_result": payout_results.status_result,
    "status_timeout": payout_results.status_timeout,
    "balance_result": float_check.balance_result,
    "balance_timeout": float_check.balance_timeout,
    "sms_delivery": sms_delivery,
}


def apply_inbox_row(session: Session, inbox_id: int, settings: Settings) -> Applied | None:
    """Apply the row in the caller's transaction; None when there is nothing (left) to do."""
    row = inbox.lock_row(session, inbox_id)
    if row is None or row.status != "received":
        return None
    handler = HANDLERS.get(row.kind)
    if handler is None:
        applied = Applied("rejected", f"no_handler:{row.kind}")
    else:
        applied = handler(session, row, decode_json(row.body.encode()), settings)
    inbox.finish(session, inbox_id, applied.status, applied.reason, applied.about_payout)
    return replace(applied, notice_ids=notices.written(session))


def apply_callback(sessions: sessionmaker[Session], inbox_id: int, settings: Settings) -> Applied | None:
    """Apply one inbox row in a transaction of its own; a row that cannot be applied is marked
    ``rejected`` with its reason (in a second transaction, the first having rolled back).
    Returns what was done, or None when the row was already done."""
    try:
        with sessions.begin() as session:
            return apply_inbox_row(session, inbox_id, settings)
    except (InvalidCallback, PostingConflict) as problem:
        reason = problem.reason if isinstance(problem, InvalidCallback) else f"conflict:{problem.key}"
        log.error("callback_rejected", reason=reason)
        with sessions.begin() as session:
            row = inbox.lock_row(session, inbox_id)
            if row is not None and row.status == "received":
                inbox.finish(session, inbox_id, "rejected", reason)
        return Applied("rejected", reason)


@dataclass
class BatchDone:
    """What applying a batch of rows left to do after its COMMITs: payouts to send, payouts to ask
    Transaction Status about, notices to send, rows to apply again shortly (``TryLater``), and rows
    that failed alone, to hand to a message of their own (its retries, its dead letter)."""

    payout_ids: list[int] = field(default_factory=list)
    status_checks: list[int] = field(default_factory=list)
    notice_ids: list[int] = field(default_factory=list)
    later: list[int] = field(default_factory=list)
    alone: list[int] = field(default_factory=list)


RACED_ATTEMPTS_MAX = 3


# SQLSTATE classes of a failure that is nobody's row's: the connection (08), a deadlock or a
# serialization failure (40), the server short of resources (53), an operator's shutdown or a
# statement timeout (57), an I/O error (58).
_TRANSIENT_CLASSES = ("08", "40", "53", "57", "58")


def _transient(error: Exception) -> bool:
    """PostgreSQL gone or restarting, a deadlock, a serialization failure: nothing to do with any
    one row, so the whole message is tried again. Any other error is a row's own."""
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated or isinstance(error, InterfaceError):
        return True
    code = getattr(error.orig, "pgcode", None)
    return (code is None and isinstance(error, OperationalError)) or (code or "")[:2] in _TRANSIENT_CLASSES


def apply_callbacks(sessions: sessionmaker[Session], inbox_ids: Sequence[int], settings: Settings) -> BatchDone:
    """Apply a batch of inbox rows: its C2B confirmations together in one transaction
    (``money.payment_batch``), then the rows of other kinds one at a time (``apply_callback``).

    A batch that fails for a reason of its own (a row the set-based path cannot take) is rolled
    back and its rows are applied one at a time instead, so one bad row never holds up the rest; a
    row that still fails alone is returned in ``alone``. A lost connection, a deadlock or a
    serialization failure (``_transient``) propagates: the whole batch is tried again (what was
    applied is not)."""
    done = BatchDone()
    singles: list[int] = list(inbox_ids)
    for attempt in range(1, RACED_ATTEMPTS_MAX + 1):
        try:
            with sessions.begin() as session:
                batch = apply_c2b_batch(session, inbox_ids, settings)
        except PostingRaced as raced:
            log.warning("batch_raced", attempt=attempt, keys=raced.args[0])
            continue
        except Exception as error:  # a bug, or a row the batch cannot take: each row alone
            if _transient(error):
                raise
            log.exception("batch_set_aside_rows_applied_alone", rows=len(inbox_ids))
        else:
            singles = batch.others
            done.payout_ids.extend(batch.payout_ids)
            done.notice_ids.extend(batch.notice_ids)
        break
    for inbox_id in singles:
        with structlog.contextvars.bound_contextvars(inbox_id=inbox_id, trans_id=None):
            try:
                applied = apply_callback(sessions, inbox_id, settings)
            except payout_results.TryLater as later:
                log.info("callback_applied_later", reason=str(later))
                done.later.append(inbox_id)
                continue
            except Exception as error:  # retried by a message of its own
                if _transient(error):
                    raise
                log.exception("callback_failed_alone")
                done.alone.append(inbox_id)
                continue
            if applied is not None:
                log.info("callback_processed", status=applied.status, reason=applied.reason, payout_ids=applied.payout_ids)
                done.payout_ids.extend(applied.payout_ids)
                done.status_checks.extend(applied.status_checks)
                done.notice_ids.extend(applied.notice_ids)
    return done
