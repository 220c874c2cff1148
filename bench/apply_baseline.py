"""The apply bench's per-payment diagnostic: plain psycopg2 from Python, the statements the
one-row path (``money.payments.apply_payment``, what the workers ran before batching) issues per
payment, one transaction per payment, over ``--threads`` connections in this process. The bench
starts as many of these processes as it starts worker processes.

What it leaves out, on purpose: dramatiq and Redis (ids come from an in-process queue),
SQLAlchemy (Core/ORM statement building, result mapping, the session's identity map, the pool's
pre-ping), structlog, pydantic settings. What it keeps: the row locks, every read and write,
the ledger triggers (PostgreSQL runs them for both), JSON decoding of the stored body, the split
(``fleetpay.rules``, pure) and the posting's body digest (``db.ledger``, pure).

    python -m bench.apply_baseline --dsn URL --threads T --ids 1-10000 --modulo 2 --remainder 0
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

from bench import sql_runner
from db.ledger import body_sha256, normalise_legs
from fleetpay import rules

TARGET_CENTS = 300_000  # the settings' defaults, as the workers run them
FARE_PERCENT = 50
TARGET_SHARING = True
SPLIT_MODE = "whole_payment"

STATEMENTS = {
    "lock_inbox": "SELECT inbox.id, inbox.kind, inbox.external_id, inbox.body, inbox.status, inbox.reason, "
    "inbox.source_ip, inbox.received_at, inbox.processed_at, inbox.attempts FROM inbox WHERE inbox.id = %s FOR UPDATE",
    "payee": "SELECT vehicles.regular_driver_id, vehicles.substitute_driver_id FROM vehicles WHERE vehicles.code = %s",
    "lock_driver": "SELECT drivers.id, drivers.code, drivers.name, drivers.msisdn, drivers.daily_target_cents, "
    "drivers.fare_percent, drivers.target_sharing, drivers.instant_payouts, drivers.status, drivers.consecutive_misses, "
    "drivers.rollover_cents, drivers.created_at FROM drivers WHERE drivers.id = %s FOR UPDATE",
    "posting_exists": "SELECT postings.id FROM postings WHERE postings.idempotency_key = %s",
    "day_insert": "INSERT INTO driver_days (driver_id, business_date, target_cents, carried_cents, misses_carried) "
    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
    "day_select": "SELECT driver_days.driver_id, driver_days.business_date, driver_days.target_cents, "
    "driver_days.contributed_cents, driver_days.carried_cents, driver_days.misses_carried, driver_days.closed_at, "
    "driver_days.close_outcome FROM driver_days WHERE driver_days.driver_id = %s AND driver_days.business_date = %s",
    "accounts": "SELECT accounts.kind, accounts.id FROM accounts WHERE accounts.driver_id = %s",
    "posting_insert": "INSERT INTO postings (idempotency_key, kind, body_sha256, business_date, driver_id, inbox_id, "
    "payout_id, corrects_posting_id, memo) VALUES (%s, %s, %s, %s, %s, %s, NULL, NULL, NULL) "
    "ON CONFLICT (idempotency_key) DO NOTHING RETURNING postings.id",
    "entries_insert": "INSERT INTO entries (posting_id, account_id, amount_cents) VALUES {values}",
    "day_update": "UPDATE driver_days SET contributed_cents=(driver_days.contributed_cents + %s) "
    "WHERE driver_days.driver_id = %s AND driver_days.business_date = %s",
    "inbox_finish": "UPDATE inbox SET status=%s, reason=%s, processed_at=now(), attempts=(inbox.attempts + %s) "
    "WHERE inbox.id = %s",
}


def vehicle_code(ref: str) -> str:
    significant = ref.strip().upper().replace(" ", "").lstrip("0")
    return significant.zfill(3)


def apply_one(cur, inbox_id: int, mpesa_account: int) -> str:  # type: ignore[no-untyped-def]
    cur.execute(STATEMENTS["lock_inbox"], (inbox_id,))
    row = cur.fetchone()
    if row is None or row[4] != "received":
        return "skipped"
    body = json.loads(row[3], parse_float=Decimal)
    trans_id = body["TransID"]
    amount_cents = int(Decimal(body["TransAmount"]) * 100)
    stamp = body["TransTime"]  # local (EAT) time; the business day closes at 00:00
    business_date = date(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:8]))

    cur.execute(STATEMENTS["payee"], (vehicle_code(body["BillRefNumber"]),))
    regular_id, substitute_id = cur.fetchone()
    driver_id, role = (substitute_id, "substitute") if substitute_id is not None else (regular_id, "regular")
    cur.execute(STATEMENTS["lock_driver"], (driver_id,))
    driver = cur.fetchone()
    key = f"c2b:{trans_id}"
    cur.execute(STATEMENTS["posting_exists"], (key,))
    if cur.fetchone() is not None:
        cur.execute(STATEMENTS["inbox_finish"], ("processed", f"duplicate:{key}", 1, inbox_id))
        return "duplicate"
    target = driver[4] if driver[4] is not None else TARGET_CENTS
    fare_percent = driver[5] if driver[5] is not None else FARE_PERCENT
    sharing = driver[6] if driver[6] is not None else TARGET_SHARING
    misses, rollover = driver[9], driver[10]
    cur.execute(STATEMENTS["day_insert"], (driver_id, business_date, target + rollover, rollover, misses))
    cur.execute(STATEMENTS["day_select"], (driver_id, business_date))
    day = cur.fetchone()
    cur.execute(STATEMENTS["accounts"], (driver_id,))
    accounts = dict(cur.fetchall())
    split = rules.split_fare(
        amount_cents, role=role, fare_percent=fare_percent, target_cents=day[2], contributed_cents=day[3],
        target_sharing=sharing, split_mode=SPLIT_MODE,
    )
    legs = normalise_legs([(mpesa_account, -amount_cents), (accounts["payable"], split.driver_share_cents),
                           (accounts["target"], split.contribution_cents)])
    cur.execute(STATEMENTS["posting_insert"],
                (key, "fare", body_sha256("fare", business_date, legs), business_date, driver_id, inbox_id))
    posting_id = cur.fetchone()[0]
    values = ", ".join(["(%s, %s, %s)"] * len(legs))
    cur.execute(STATEMENTS["entries_insert"].format(values=values),
                [v for account, cents in legs for v in (posting_id, account, cents)])
    if split.contribution_cents:
        cur.execute(STATEMENTS["day_update"], (split.contribution_cents, driver_id, business_date))
    cur.execute(STATEMENTS["inbox_finish"], ("processed", None, 1, inbox_id))
    return "processed"


def apply_unit(cur, inbox_id: int, mpesa_account: int) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    return apply_one(cur, inbox_id, mpesa_account), 1


if __name__ == "__main__":
    sql_runner.main(apply_unit)
