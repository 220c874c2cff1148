"""The apply bench's limit: the batched statements of ``db.payment_batch`` run with plain psycopg2.

The same writes as a worker's batch (rows taken with their locks, payees, drivers locked in id
order, posted keys, driver days, postings and entries by ``unnest``, contributions, the payment
notices, the inbox marked), the same SQL text (compiled from ``db.payment_batch``'s statements),
one transaction per ``--batch`` rows, over ``--threads`` connections in this process. What it
leaves out: dramatiq and Redis (batches come from an in-process queue), SQLAlchemy (sessions,
pool pre-ping, result mapping), structlog, pydantic settings, payouts (the bench runs the workers
with instant payouts off for the comparison). The split is the same pure rule (``fleetpay.rules``).
The bench's fleet: vehicles each with a regular driver, default terms.

    python -m bench.apply_setbased --dsn URL --threads T --ids 1-10000 --modulo 2 --remainder 0 --batch 100
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

from sqlalchemy.dialects import postgresql

from bench import sql_runner
from db import payment_batch as statements
from db.ledger import body_sha256, normalise_legs
from fleetpay import rules

TARGET_CENTS = 300_000  # the settings' defaults, as the workers run them
FARE_PERCENT = 50
# As the workers write them with no Africa's Talking key (the bench's settings): skipped already.
SKIPPED = "FLEETPAY_SMS_API_KEY is the placeholder 'sim-at-api-key'"


def sql(statement) -> str:  # type: ignore[no-untyped-def]
    return str(statement.compile(dialect=postgresql.psycopg2.dialect()))


SQL = {name: sql(getattr(statements, name)) for name in (
    "_TAKE_WAITING", "_VEHICLE_DRIVERS", "_LOCK_DRIVERS", "_EXISTING_KEYS", "_NEW_DAYS", "_DAYS", "_ACCOUNTS",
    "_INSERT_POSTINGS", "_INSERT_ENTRIES", "_ADD_CONTRIBUTIONS", "_ADD_NOTICES", "_FINISH")}


def vehicle_code(ref: str) -> str:
    return ref.strip().upper().replace(" ", "").lstrip("0").zfill(3)


def apply_batch(cur, ids: list[int], mpesa: int) -> int:  # type: ignore[no-untyped-def]
    cur.execute(SQL["_TAKE_WAITING"], {"ids": ids})
    rows = []
    for inbox_id, _kind, raw in cur.fetchall():
        body = json.loads(raw, parse_float=Decimal)
        stamp = body["TransTime"]  # local (EAT) time; the business day closes at 00:00
        rows.append((inbox_id, f"c2b:{body['TransID']}", int(Decimal(body["TransAmount"]) * 100),
                     date(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:8])), vehicle_code(body["BillRefNumber"])))
    if not rows:
        return 0
    cur.execute(SQL["_VEHICLE_DRIVERS"], {"codes": sorted({r[4] for r in rows})})
    payee = {code: substitute or regular for code, regular, substitute in cur.fetchall()}
    cur.execute(SQL["_LOCK_DRIVERS"], {"ids": sorted({payee[r[4]] for r in rows})})
    drivers = {d[0]: statements.DriverRow(*d) for d in cur.fetchall()}
    cur.execute(SQL["_EXISTING_KEYS"], {"keys": [r[1] for r in rows]})
    posted = {k for (k,) in cur.fetchall()}
    fresh = [r for r in rows if r[1] not in posted]
    days = sorted({(payee[r[4]], r[3]) for r in fresh})
    targets = [TARGET_CENTS + drivers[d].rollover_cents for d, _ in days]
    cur.execute(SQL["_NEW_DAYS"], {"driver_ids": [d for d, _ in days], "dates": [day for _, day in days], "targets": targets,
                                   "carried": [drivers[d].rollover_cents for d, _ in days],
                                   "misses": [drivers[d].consecutive_misses for d, _ in days]})
    cur.execute(SQL["_DAYS"], {"driver_ids": [d for d, _ in days], "dates": [day for _, day in days]})
    day_rows = {(d, day): [target, contributed] for d, day, target, contributed, _open in cur.fetchall()}
    cur.execute(SQL["_ACCOUNTS"], {"ids": sorted(drivers)})
    accounts: dict[int, dict[str, int]] = {}
    for driver_id, kind, account_id in cur.fetchall():
        accounts.setdefault(driver_id, {})[kind] = account_id
    postings, notices, moves = [], [], {}
    for inbox_id, key, amount, day, code in fresh:
        driver_id = payee[code]
        target, contributed = day_rows[(driver_id, day)]
        split = rules.split_fare(amount, role="regular", fare_percent=FARE_PERCENT, target_cents=target,
                                 contributed_cents=contributed, target_sharing=True, split_mode="whole_payment")
        day_rows[(driver_id, day)][1] += split.contribution_cents
        moves[(driver_id, day)] = moves.get((driver_id, day), 0) + split.contribution_cents
        legs = normalise_legs([(mpesa, -amount), (accounts[driver_id]["payable"], split.driver_share_cents),
                               (accounts[driver_id]["target"], split.contribution_cents)])
        postings.append((key, "fare", body_sha256("fare", day, legs), day, driver_id, inbox_id, legs))
        notices.append(("payment", key, driver_id, json.dumps({
            "amount_cents": amount, "receipt": key[4:], "vehicle": code, "contributed_cents": contributed + split.contribution_cents,
            "target_cents": target, "share_cents": split.driver_share_cents})))
    if postings:
        cur.execute(SQL["_INSERT_POSTINGS"], {"keys": [p[0] for p in postings], "kinds": [p[1] for p in postings],
                                              "digests": [p[2] for p in postings], "dates": [p[3] for p in postings],
                                              "driver_ids": [p[4] for p in postings], "inbox_ids": [p[5] for p in postings],
                                              "payout_ids": [None] * len(postings)})
        ids_by_key = dict(cur.fetchall())
        entries = sorted((a, ids_by_key[p[0]], c) for p in postings for a, c in p[6])
        cur.execute(SQL["_INSERT_ENTRIES"], {"account_ids": [e[0] for e in entries], "posting_ids": [e[1] for e in entries],
                                             "amounts": [e[2] for e in entries]})
        moved = sorted(moves.items())
        cur.execute(SQL["_ADD_CONTRIBUTIONS"], {"driver_ids": [k[0] for k, _ in moved], "dates": [k[1] for k, _ in moved],
                                                "amounts": [v for _, v in moved]})
        cur.execute(SQL["_ADD_NOTICES"], {"kinds": [n[0] for n in notices], "subjects": [n[1] for n in notices],
                                          "driver_ids": [n[2] for n in notices], "facts": [n[3] for n in notices],
                                          "skipped": SKIPPED})
    cur.execute(SQL["_FINISH"], {"ids": [r[0] for r in rows], "statuses": ["processed"] * len(rows),
                                 "reasons": [None if r in fresh else f"duplicate:{r[1]}" for r in rows]})
    return len(rows)


def apply_unit(cur, ids: list[int], mpesa_account: int) -> tuple[str, int]:  # type: ignore[no-untyped-def]
    return "processed", apply_batch(cur, ids, mpesa_account)


if __name__ == "__main__":
    sql_runner.main(apply_unit, batch=100)
