"""Reconciliation: prove the books from the ledger, in a few set-based queries.

The entries are the truth: append-only, each posting balanced, enforced by PostgreSQL. Everything
else is a cache of them, and the check proves each cache against them:

1. every posting sums to zero with two or more entries, and all entries sum to zero;
   every driver account's cached balance equals the sum of its entries (two aggregates over
   ``entries``: by posting, and by account, whose total is the grand total);
2. every driver-day row's contribution equals the contributions posted for that business day;
3. every payout's share of ``payouts_in_flight`` matches its state (its amount while open, zero
   once paid or failed);
4. postings without any entry;
5. payouts a person must look at: in review, or a driver paid more than owed (``overpayment``);
6. M-Pesa's own record: a B2C success result we handled for a payout the books do not show as
   paid (``mpesa_paid_unbooked``: money that left without the books knowing).

The check runs in one REPEATABLE READ snapshot and never writes money. The driver-day query, the
heaviest, runs on a second connection that imports that snapshot (``pg_export_snapshot``), so it
sees exactly the same committed state while the others run beside it on another core. Fixing
what a check found is a money decision: ``money.reconcile_fix``.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, TextClause, func, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from db.models import FloatObservation, ReconciliationDiscrepancy, ReconciliationRun
from fleetpay.payout_states import TERMINAL
from schemas.callbacks import InvalidCallback, parse_b2c_result
from schemas.json_body import decode_json

LEDGER_SQL = text("""
WITH by_account AS MATERIALIZED (
    SELECT account_id, sum(amount_cents)::bigint AS total FROM entries GROUP BY account_id
)
SELECT 'posting_unbalanced' AS kind, posting_id::text AS subject, NULL::bigint AS ref_id,
       0::bigint AS expected, sum(amount_cents)::bigint AS actual
  FROM entries GROUP BY posting_id HAVING sum(amount_cents) <> 0 OR count(*) < 2
UNION ALL
SELECT 'ledger_total', 'all entries', NULL, 0, total
  FROM (SELECT coalesce(sum(total), 0)::bigint AS total FROM by_account) t WHERE total <> 0
UNION ALL
SELECT 'cached_balance', a.code, a.id, coalesce(s.total, 0), a.balance_cents
  FROM accounts a LEFT JOIN by_account s ON s.account_id = a.id
 WHERE a.driver_id IS NOT NULL AND a.balance_cents <> coalesce(s.total, 0)
""")

DRIVER_DAYS_SQL = text("""
WITH contributed AS (
    SELECT a.driver_id, p.business_date, sum(e.amount_cents)::bigint AS total
      FROM entries e
      JOIN accounts a ON a.id = e.account_id AND a.kind = 'target'
      JOIN postings p ON p.id = e.posting_id AND p.kind IN ('fare', 'driver_payment')
     GROUP BY a.driver_id, p.business_date
)
SELECT 'driver_day' AS kind,
       d.code || ' ' || coalesce(dd.business_date, c.business_date)::text AS subject,
       d.id AS ref_id, coalesce(c.total, 0) AS expected, coalesce(dd.contributed_cents, 0) AS actual
  FROM driver_days dd
  FULL JOIN contributed c ON c.driver_id = dd.driver_id AND c.business_date = dd.business_date
  JOIN drivers d ON d.id = coalesce(dd.driver_id, c.driver_id)
 WHERE coalesce(dd.contributed_cents, 0) <> coalesce(c.total, 0)
""")

_SETTLED = ", ".join(f"'{state}'" for state in sorted(TERMINAL))  # a settled payout holds nothing in flight
PAYOUTS_SQL = text(f"""
WITH flight AS (
    SELECT p.payout_id, sum(e.amount_cents)::bigint AS total
      FROM entries e JOIN postings p ON p.id = e.posting_id
     WHERE e.account_id = (SELECT id FROM accounts WHERE code = 'payouts_in_flight')
       AND p.payout_id IS NOT NULL
     GROUP BY p.payout_id
)
SELECT 'payout_in_flight' AS kind, po.id::text AS subject, po.id AS ref_id,
       CASE WHEN po.state IN ({_SETTLED}) THEN 0 ELSE po.amount_cents END AS expected,
       coalesce(f.total, 0) AS actual
  FROM payouts po LEFT JOIN flight f ON f.payout_id = po.id
 WHERE coalesce(f.total, 0) <> CASE WHEN po.state IN ({_SETTLED}) THEN 0 ELSE po.amount_cents END
""")

EMPTY_POSTINGS_SQL = text("""
SELECT 'posting_unbalanced' AS kind, p.id::text AS subject, NULL::bigint AS ref_id,
       0::bigint AS expected, 0::bigint AS actual
  FROM postings p WHERE NOT EXISTS (SELECT 1 FROM entries e WHERE e.posting_id = p.id)
""")

# Payouts a person must look at: in review (a result did not match what we asked), and drivers
# paid more than they were owed (a payment M-Pesa made after we had booked it failed and re-paid).
PAYOUT_ATTENTION_SQL = text("""
SELECT 'payout_in_review' AS kind, po.id::text || ' ' || coalesce(po.review_reason, '') AS subject,
       po.id AS ref_id, po.amount_cents AS expected, 0::bigint AS actual
  FROM payouts po WHERE po.state IN ('review', 'reopened')
UNION ALL
SELECT 'overpayment', d.code, d.id, 0, a.balance_cents
  FROM accounts a JOIN drivers d ON d.id = a.driver_id
 WHERE a.kind = 'payable' AND a.balance_cents < 0
""")

# M-Pesa's own record against the books: every B2C result a worker has handled that names one of
# our payouts not booked as paid. Its body is read in Python: a success among them is money M-Pesa
# says it paid and the ledger does not show as paid.
# Left out: results judged as not matching what we asked (``review:…``: the payout's review shows
# them), and results that M-Pesa's own answer to a query we made afterwards has settled (the
# payout's state is that answer; its review reason keeps the disagreement visible).
MPESA_RESULTS_OF_UNPAID_SQL = text("""
SELECT po.id, po.amount_cents, i.body
  FROM inbox i
  JOIN payouts po ON po.originator_conversation_id = split_part(i.external_id, '#', 1)
 WHERE i.kind = 'b2c_result' AND i.status = 'processed' AND po.state <> 'paid'
   AND (i.reason IS NULL OR i.reason NOT LIKE 'review:%')
   AND NOT EXISTS (
       SELECT 1 FROM payout_status_queries q
         JOIN inbox a ON a.kind = 'status_result' AND a.status = 'processed'
                     AND split_part(a.external_id, '#', 1) = q.originator_conversation_id
        WHERE q.payout_id = po.id AND q.created_at > i.received_at)
 ORDER BY po.id
 LIMIT :limit
""")
MPESA_RESULTS_READ_MAX = 10_000

CHECKS = (LEDGER_SQL, DRIVER_DAYS_SQL, PAYOUTS_SQL, EMPTY_POSTINGS_SQL, PAYOUT_ATTENTION_SQL)
SIDE_CHECKS = (DRIVER_DAYS_SQL,)  # about as long as the three others together (docs/benchmarks.md)
SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+(-[0-9]+)?")
FIXABLE = frozenset({"cached_balance", "driver_day", "payout_in_flight"})


@dataclass(frozen=True)
class Discrepancy:
    kind: str
    subject: str
    ref_id: int | None  # account id, driver id or payout id, by kind
    expected_cents: int
    actual_cents: int

    @property
    def difference_cents(self) -> int:
        return self.actual_cents - self.expected_cents

    @property
    def key(self) -> str:
        """This discrepancy: what is wrong, where, and by how much (which balanced postings made
        meanwhile do not change); a fix approved for it corrects it only while it is still so."""
        return f"{self.kind} {self.subject}: {self.difference_cents:+} cents"

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "subject": self.subject,
            "expected_cents": self.expected_cents,
            "actual_cents": self.actual_cents,
            "difference_cents": self.difference_cents,
            "fixable": self.kind in FIXABLE,
        }


def check(connection: Connection) -> list[Discrepancy]:
    """Every discrepancy, from one consistent snapshot, in ``CHECKS`` order. Writes nothing."""
    connection.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
    snapshot = connection.execute(text("SELECT pg_export_snapshot()")).scalar_one()
    with ThreadPoolExecutor(1, thread_name_prefix="reconcile") as pool:
        side = pool.submit(_check_in_snapshot, connection.engine, snapshot)
        found = {query: _run(connection, query) for query in CHECKS if query not in SIDE_CHECKS}
        mpesa = _paid_by_mpesa_not_booked(connection)
        found.update(side.result())
    return [discrepancy for query in CHECKS for discrepancy in found[query]] + mpesa


def _paid_by_mpesa_not_booked(connection: Connection) -> list[Discrepancy]:
    """Payouts M-Pesa's result says it paid that the books do not show as paid."""
    found: dict[int, Discrepancy] = {}
    for payout_id, amount_cents, body in connection.execute(MPESA_RESULTS_OF_UNPAID_SQL, {"limit": MPESA_RESULTS_READ_MAX}):
        try:
            result = parse_b2c_result(decode_json(body.encode()))
        except InvalidCallback:
            continue
        if result.result_code == 0:
            said_cents = result.amount_cents if result.amount_cents is not None else amount_cents
            found[payout_id] = Discrepancy("mpesa_paid_unbooked", str(payout_id), payout_id, said_cents, 0)
    return list(found.values())


def _run(connection: Connection, query: TextClause) -> list[Discrepancy]:
    return [Discrepancy(*row) for row in connection.execute(query).all()]


def _check_in_snapshot(engine: Engine, snapshot: str) -> dict[TextClause, list[Discrepancy]]:
    assert SNAPSHOT_ID.fullmatch(snapshot), snapshot  # it goes into the statement as a literal
    with engine.connect() as connection:
        connection.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        connection.execute(text(f"SET TRANSACTION SNAPSHOT '{snapshot}'"))
        found = {query: _run(connection, query) for query in SIDE_CHECKS}
        connection.rollback()
    return found


def record_run(
    session: Session,
    *,
    kind: str,
    found: list[Discrepancy],
    operator: str | None = None,
    reason: str | None = None,
    error: str | None = None,
) -> int:
    """Keep what a reconciliation found, or why it could not look (this writes no money)."""
    run = ReconciliationRun(kind=kind, operator=operator, reason=reason, discrepancies=len(found),
                            finished_at=func.now(), error=error)
    session.add(run)
    session.flush()
    if found:
        session.execute(
            insert(ReconciliationDiscrepancy),
            [
                {"run_id": run.id, "kind": d.kind, "subject": d.subject, "expected_cents": d.expected_cents,
                 "actual_cents": d.actual_cents, "difference_cents": d.difference_cents}
                for d in found
            ],
        )
    return run.id


def run_check(sessions: sessionmaker[Session]) -> tuple[int, list[Discrepancy]]:
    with sessions() as session:
        found = check(session.connection())
        session.rollback()
    with sessions.begin() as session:
        run_id = record_run(session, kind="check", found=found)
    return run_id, found


def latest_float(session: Session, *, low_cents: int) -> dict[str, object] | None:
    """M-Pesa's last word on the B2C utility account (an Account Balance answer), for the report."""
    row = session.execute(
        select(FloatObservation.utility_available_cents, FloatObservation.observed_at)
        .order_by(FloatObservation.id.desc())  # the latest to arrive (its time is M-Pesa's word)
        .limit(1)
    ).first()
    if row is None:
        return None
    return {"utility_available_cents": row[0], "observed_at": row[1].isoformat(), "low": row[0] < low_cents}
