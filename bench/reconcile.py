"""Benchmark: the set-based reconciliation check against the same check done driver by driver.

    .venv/bin/python -m bench.reconcile [--drivers N] [--entries-per-driver M]
                                        [--baseline-sample K] [--keep]

Prints one JSON document on stdout (progress goes to stderr) and writes it to
``bench/results/reconcile.json``. ``run(args) -> dict`` is the entry point for ``python -m bench``.

What it does:

1. creates a throwaway database ``fpbench_reconcile_<random>`` and migrates it (``db.migrate``);
2. loads N drivers (3 accounts each, a vehicle each) and about M entries per driver with set-based
   SQL: C2B fares (``mpesa -amount``, ``payable +share``, ``target +contribution``) over 30
   business days, and paid payouts (``payout_reserve`` + ``payout_paid`` postings). The loading
   session runs with ``session_replication_role = replica``, so the per-row ledger triggers
   (deferred balance check, cached-balance move) and the foreign-key triggers do not fire; the
   cached balances and ``driver_days`` are computed from the generation plan in one statement
   each, independently of the entries, so the check proves the loader too. The non-primary
   indexes of ``postings`` and ``entries`` are dropped during the load and rebuilt from their own
   definitions (verified identical afterwards), then ``VACUUM ANALYZE``;
3. plants a handful of corruptions and verifies ``db.reconcile.check`` finds exactly those;
4. times ``db.reconcile.check`` (the real function, best of ``--check-runs``), then the same
   check driver by driver on a random sample of K drivers, extrapolated linearly to N;
5. records the PostgreSQL settings that matter and EXPLAIN (ANALYZE, BUFFERS) of the four queries.

Nothing here is a timed test: it is a measurement, meant to be run by hand or by ``python -m bench``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from db import reconcile
from db.migrate import upgrade
from db.reconcile import Discrepancy
from fleetpay.settings import sqlalchemy_url

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
RESULTS = Path(__file__).resolve().parent / "results" / "reconcile.json"

BASE_DATE = date(2026, 10, 1)
BUSINESS_DAYS = 30
DAILY_TARGET_CENTS = 150_000

TARGETS = {"check_seconds_max": 60.0, "ratio_min": 20.0, "drivers": 100_000, "entries": 10_000_000}

SETTINGS_REPORTED = (
    "work_mem", "hash_mem_multiplier", "shared_buffers", "effective_cache_size",
    "maintenance_work_mem", "max_parallel_workers_per_gather", "max_parallel_workers",
    "max_worker_processes", "parallel_setup_cost", "parallel_tuple_cost",
    "min_parallel_table_scan_size", "random_page_cost", "jit", "enable_partitionwise_aggregate",
    "default_statistics_target",
)


def log(message: str) -> None:
    print(f"[bench.reconcile {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Timer:
    def __init__(self) -> None:
        self.steps: dict[str, float] = {}

    def step(self, name: str, connection: Connection, sql: str, **params: Any) -> Any:
        started = time.perf_counter()
        result = connection.execute(text(sql), params)
        self.steps[name] = round(self.steps.get(name, 0.0) + time.perf_counter() - started, 3)
        log(f"  {name}: {self.steps[name]:.1f} s")
        return result


# --------------------------------------------------------------------------------------------
# Shape of the data set
# --------------------------------------------------------------------------------------------


class Shape:
    """Per driver: F fares of 3 entries and P paid payouts of 2 postings x 2 entries."""

    def __init__(self, drivers: int, entries_per_driver: int) -> None:
        if drivers < 20 or drivers > 999_999:
            raise SystemExit("--drivers must be between 20 and 999999")
        if entries_per_driver < 7:
            raise SystemExit("--entries-per-driver must be at least 7 (one fare and one payout)")
        self.drivers = drivers
        self.entries_per_driver = entries_per_driver
        self.payouts = max(1, entries_per_driver // 100)
        self.fares = (entries_per_driver - 4 * self.payouts) // 3

    @property
    def postings(self) -> int:
        return self.drivers * (self.fares + 2 * self.payouts)

    @property
    def entries(self) -> int:
        return self.drivers * (3 * self.fares + 4 * self.payouts)

    def as_dict(self) -> dict[str, int]:
        return {
            "drivers": self.drivers,
            "entries_per_driver_requested": self.entries_per_driver,
            "fares_per_driver": self.fares,
            "payouts_per_driver": self.payouts,
            "postings_planned": self.postings,
            "entries_planned": self.entries,
        }


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def _droppable_indexes(connection: Connection) -> list[dict[str, str]]:
    """The non-primary indexes of postings and entries, with what recreates each exactly."""
    rows = connection.execute(text("""
        SELECT i.indrelid::regclass::text AS table_name, ci.relname AS index_name,
               pg_get_indexdef(i.indexrelid) AS indexdef,
               con.conname, pg_get_constraintdef(con.oid) AS condef
          FROM pg_index i
          JOIN pg_class ci ON ci.oid = i.indexrelid
          LEFT JOIN pg_constraint con
                 ON con.conindid = i.indexrelid AND con.conrelid = i.indrelid AND con.contype = 'u'
         WHERE i.indrelid IN ('postings'::regclass, 'entries'::regclass) AND NOT i.indisprimary
         ORDER BY 1, 2
    """)).mappings().all()
    return [dict(row) for row in rows]


def _index_definitions(connection: Connection) -> list[str]:
    return sorted(
        connection.execute(text("""
            SELECT pg_get_indexdef(indexrelid) FROM pg_index
             WHERE indrelid IN ('postings'::regclass, 'entries'::regclass, 'accounts'::regclass,
                                'driver_days'::regclass, 'payouts'::regclass)
        """)).scalars().all()
    )


def load(engine: Engine, shape: Shape) -> dict[str, Any]:
    """Fill a freshly migrated database; returns timings and what was loaded."""
    timer = Timer()
    n, f, p = shape.drivers, shape.fares, shape.payouts
    started = time.perf_counter()
    with engine.connect() as c:
        c.execute(text("SET session_replication_role = replica"))  # skip the per-row triggers
        c.execute(text("SET synchronous_commit = off"))
        c.execute(text("SET work_mem = '512MB'"))
        c.execute(text("SET maintenance_work_mem = '1GB'"))
        system = dict(c.execute(text("SELECT code, id FROM accounts WHERE driver_id IS NULL")).all())
        mpesa, flight = system["mpesa"], system["payouts_in_flight"]
        account_base = c.execute(text("SELECT max(id) + 1 FROM accounts")).scalar_one()
        indexes_before = _index_definitions(c)
        dropped = _droppable_indexes(c)
        for index in dropped:
            if index["conname"]:
                c.execute(text(f'ALTER TABLE {index["table_name"]} DROP CONSTRAINT "{index["conname"]}"'))
            else:
                c.execute(text(f'DROP INDEX "{index["index_name"]}"'))
        log(f"loading {n} drivers, {shape.postings} postings, {shape.entries} entries "
            f"(dropped {len(dropped)} indexes for the load)")

        timer.step("drivers", c, """
            INSERT INTO drivers (id, code, name, msisdn, daily_target_cents, fare_percent,
                                 target_sharing, instant_payouts, created_at)
            SELECT d, 'D' || lpad(d::text, 6, '0'), 'Driver ' || d,
                   '2547' || lpad((10000000 + d)::text, 8, '0'),
                   :target, 30 + (d * 7) % 41, d % 3 = 0, true,
                   (:base - 60)::timestamp + d * interval '1 second'
              FROM generate_series(1, :n) d
        """, n=n, target=DAILY_TARGET_CENTS, base=BASE_DATE)
        timer.step("vehicles", c, """
            INSERT INTO vehicles (id, code, regular_driver_id, substitute_driver_id)
            SELECT d, 'KB' || lpad(d::text, 6, '0'), d,
                   CASE WHEN d % 5 = 0 THEN (d % :n) + 1 END
              FROM generate_series(1, :n) d
        """, n=n)
        # The generation plan: one row per posting, in time order (round, driver, phase), so a
        # driver's entries are spread over the table as they would be in production.
        timer.step("plan", c, """
            CREATE UNLOGGED TABLE bench_plan AS
            SELECT row_number() OVER (ORDER BY round, driver_id, phase) AS id, s.*,
                   :base + (round * :days) / :f AS business_date
              FROM (
                SELECT d AS driver_id, i AS round, 0 AS phase, 'fare'::text AS kind,
                       100 * (50 + (d * 7919 + i * 104729) % 251)::bigint AS amount,
                       100 * (50 + (d * 7919 + i * 104729) % 251)::bigint * (30 + (d * 7) % 41) / 100
                           AS share,
                       NULL::bigint AS payout_id
                  FROM generate_series(1::bigint, :n) d, generate_series(0, :f - 1) i
                UNION ALL
                SELECT d, greatest(0, ((j + 1) * :f) / (:p + 1) - 1), ph.phase, ph.kind,
                       100 * (100 + (d * 31 + j * 17) % 400)::bigint, NULL,
                       (d - 1) * :p + j + 1
                  FROM generate_series(1::bigint, :n) d, generate_series(0, :p - 1) j,
                       (VALUES (1, 'payout_reserve'), (2, 'payout_paid')) ph(phase, kind)
              ) s
             ORDER BY 1
        """, n=n, f=f, p=p, base=BASE_DATE, days=BUSINESS_DAYS)
        timer.step("accounts", c, """
            WITH bal AS (
                SELECT driver_id,
                       sum(CASE kind WHEN 'fare' THEN share WHEN 'payout_reserve' THEN -amount ELSE 0 END)
                           AS payable,
                       sum(CASE kind WHEN 'fare' THEN amount - share ELSE 0 END) AS target
                  FROM bench_plan GROUP BY driver_id
            )
            INSERT INTO accounts (id, code, kind, driver_id, balance_cents)
            SELECT :ab + 3 * (d.id - 1) + k.k, 'driver:' || d.code || ':' || k.kind, k.kind, d.id,
                   CASE k.kind WHEN 'payable' THEN coalesce(bal.payable, 0)
                               WHEN 'target' THEN coalesce(bal.target, 0) ELSE 0 END
              FROM drivers d
              CROSS JOIN (VALUES (0, 'payable'), (1, 'deposit'), (2, 'target')) k(k, kind)
              LEFT JOIN bal ON bal.driver_id = d.id
             ORDER BY 1
        """, ab=account_base)
        timer.step("payouts", c, """
            INSERT INTO payouts (id, originator_conversation_id, cause_key, driver_id, msisdn,
                                 amount_cents, state, conversation_id, receipt, result_code,
                                 result_desc, attempts, created_at, updated_at, completed_at)
            SELECT b.payout_id, 'fp_' || substr(md5('oc' || b.payout_id), 1, 20),
                   'share:c2b:S' || upper(lpad(to_hex((b.id * 2654435761) % 4294967296), 8, '0')) || 'P',
                   b.driver_id, d.msisdn, b.amount, 'paid',
                   'AG_' || substr(md5('cv' || b.payout_id), 1, 16),
                   'T' || upper(substr(md5('rc' || b.payout_id), 1, 9)), '0',
                   'The service request is processed successfully.', 1,
                   b.business_date + time '06:00' + (b.driver_id % 720) * interval '1 minute',
                   b.business_date + time '06:01' + (b.driver_id % 720) * interval '1 minute',
                   b.business_date + time '06:01' + (b.driver_id % 720) * interval '1 minute'
              FROM bench_plan b JOIN drivers d ON d.id = b.driver_id
             WHERE b.kind = 'payout_reserve'
             ORDER BY b.payout_id
        """)
        timer.step("postings", c, """
            INSERT INTO postings (id, idempotency_key, kind, body_sha256, business_date, driver_id,
                                  payout_id, created_at)
            SELECT id,
                   CASE kind WHEN 'fare'
                        THEN 'c2b:S' || upper(lpad(to_hex((id * 2654435761) % 4294967296), 8, '0')) || 'K'
                        WHEN 'payout_reserve' THEN 'payout:' || payout_id || ':' || 'reserve'
                        ELSE 'payout:' || payout_id || ':' || 'paid' END,
                   kind, md5('a' || id) || md5('b' || id), business_date, driver_id, payout_id,
                   business_date + time '06:00' + (driver_id % 720) * interval '1 minute'
              FROM bench_plan ORDER BY id
        """)
        timer.step("entries", c, """
            INSERT INTO entries (posting_id, account_id, amount_cents)
            SELECT b.id, l.account_id, l.amount
              FROM bench_plan b
              CROSS JOIN LATERAL (VALUES
                (1, CASE b.kind WHEN 'payout_reserve' THEN :flight ELSE :mpesa END,
                    CASE b.kind WHEN 'fare' THEN -b.amount ELSE b.amount END),
                (2, CASE b.kind WHEN 'payout_paid' THEN :flight ELSE :ab + 3 * (b.driver_id - 1) END,
                    CASE b.kind WHEN 'fare' THEN b.share ELSE -b.amount END),
                (3, CASE b.kind WHEN 'fare' THEN :ab + 3 * (b.driver_id - 1) + 2 END,
                    b.amount - b.share)
              ) l(ord, account_id, amount)
             WHERE l.account_id IS NOT NULL
        """, mpesa=mpesa, flight=flight, ab=account_base)
        timer.step("driver_days", c, """
            INSERT INTO driver_days (driver_id, business_date, target_cents, contributed_cents)
            SELECT driver_id, business_date, :target, sum(amount - share)
              FROM bench_plan WHERE kind = 'fare'
             GROUP BY driver_id, business_date
             ORDER BY driver_id, business_date
        """, target=DAILY_TARGET_CENTS)
        c.execute(text("DROP TABLE bench_plan"))
        for index in dropped:
            name = f"index {index['index_name']}"
            if index["conname"]:
                timer.step(name, c, f'ALTER TABLE {index["table_name"]} ADD CONSTRAINT "{index["conname"]}" '
                                    f'{index["condef"]}')
            else:
                timer.step(name, c, index["indexdef"])
        indexes_after = _index_definitions(c)
        if indexes_after != indexes_before:
            raise RuntimeError(f"indexes differ after the load:\n{indexes_before}\n{indexes_after}")
        for table in ("drivers", "vehicles", "accounts", "payouts", "postings", "entries"):
            c.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                           f"(SELECT max(id) FROM {table}))"))
        timer.step("vacuum_analyze", c, "VACUUM (ANALYZE)")
        counts = {
            table: c.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("drivers", "vehicles", "accounts", "payouts", "postings", "entries", "driver_days")
        }
        sizes = dict(c.execute(text("""
            SELECT relname, pg_size_pretty(pg_total_relation_size(oid)) FROM pg_class
             WHERE relname IN ('postings', 'entries', 'accounts', 'driver_days', 'payouts')
        """)).all())
        database_size = c.execute(text("SELECT pg_size_pretty(pg_database_size(current_database()))")).scalar_one()
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "steps_s": timer.steps,
        "method": (
            "set-based INSERT ... SELECT generate_series in one session with "
            "session_replication_role = replica (ledger and foreign-key triggers skipped); cached "
            "balances and driver_days computed from the generation plan by one statement each; "
            "non-primary indexes of postings/entries dropped and rebuilt from their own definitions "
            "(verified identical); then VACUUM (ANALYZE)"
        ),
        "rows": counts,
        "business_days": BUSINESS_DAYS,
        "sizes": sizes | {"database": database_size},
        "mpesa_account_id": mpesa,
        "payouts_in_flight_account_id": flight,
        "account_base": account_base,
    }


# --------------------------------------------------------------------------------------------
# Deliberate corruptions
# --------------------------------------------------------------------------------------------


def corrupt(engine: Engine, shape: Shape, rng: random.Random, loaded: dict[str, Any]) -> tuple[
    set[tuple[str, str, int, int]], list[int]
]:
    """Plant a handful of discrepancies; returns what the check must find, exactly, and the
    drivers involved."""
    victims = rng.sample(range(1, shape.drivers + 1), 8)
    a, b, cc, d, e, g, h, k = victims
    expected: set[tuple[str, str, int, int]] = set()
    ab = loaded["account_base"]
    with engine.connect() as c:
        c.execute(text("SET session_replication_role = replica"))

        def code(driver: int) -> str:
            return c.execute(text("SELECT code FROM drivers WHERE id = :d"), {"d": driver}).scalar_one()

        def bump_balance(account_id: int, delta: int) -> tuple[str, int]:
            account_code, old = c.execute(
                text("UPDATE accounts SET balance_cents = balance_cents + :delta WHERE id = :a "
                     "RETURNING code, balance_cents - :delta"), {"a": account_id, "delta": delta}
            ).one()
            return account_code, old

        # 1, 2. cached balances moved outside the ledger
        account_code, true = bump_balance(ab + 3 * (a - 1), 12_345)
        expected.add(("cached_balance", account_code, true, true + 12_345))
        account_code, true = bump_balance(ab + 3 * (b - 1) + 2, -700)
        expected.add(("cached_balance", account_code, true, true - 700))
        # 3. a driver day's contribution changed
        day, true = c.execute(text("""
            UPDATE driver_days SET contributed_cents = contributed_cents + 250
             WHERE (driver_id, business_date) = (SELECT driver_id, min(business_date) FROM driver_days
                                                  WHERE driver_id = :d GROUP BY driver_id)
            RETURNING business_date, contributed_cents - 250
        """), {"d": cc}).one()
        expected.add(("driver_day", f"{code(cc)} {day.isoformat()}", true, true + 250))
        # 4. a driver day lost
        day, true = c.execute(text("""
            DELETE FROM driver_days
             WHERE (driver_id, business_date) = (SELECT driver_id, max(business_date) FROM driver_days
                                                  WHERE driver_id = :d GROUP BY driver_id)
            RETURNING business_date, contributed_cents
        """), {"d": d}).one()
        expected.add(("driver_day", f"{code(d)} {day.isoformat()}", true, 0))
        # 5. a driver day with a contribution nobody posted
        day = BASE_DATE - timedelta(days=1)
        c.execute(text("INSERT INTO driver_days (driver_id, business_date, target_cents, contributed_cents) "
                       "VALUES (:d, :day, :t, 1000)"), {"d": e, "day": day, "t": DAILY_TARGET_CENTS})
        expected.add(("driver_day", f"{code(e)} {day.isoformat()}", 0, 1000))
        # 6. a paid payout whose state went back to submitted: its money is no longer in flight
        payout_id, amount = c.execute(text("""
            UPDATE payouts SET state = 'submitted'
             WHERE id = (SELECT min(id) FROM payouts WHERE driver_id = :d)
            RETURNING id, amount_cents
        """), {"d": g}).one()
        expected.add(("payout_in_flight", str(payout_id), amount, 0))
        # 7. a posting that does not balance (only possible with the triggers off): -1 cent overall
        payable = ab + 3 * (h - 1)
        posting = c.execute(text("""
            INSERT INTO postings (idempotency_key, kind, body_sha256, business_date, driver_id)
            VALUES ('c2b:BENCHBROKEN', 'fare', md5('broken'), :day, :d) RETURNING id
        """), {"day": BASE_DATE + timedelta(days=3), "d": h}).scalar_one()
        c.execute(text("INSERT INTO entries (posting_id, account_id, amount_cents) VALUES "
                       "(:p, :mpesa, -1000), (:p, :payable, 999)"),
                  {"p": posting, "mpesa": loaded["mpesa_account_id"], "payable": payable})
        bump_balance(payable, 999)  # the cache moved with its entry, as the trigger would
        expected.add(("posting_unbalanced", str(posting), 0, -1))
        expected.add(("ledger_total", "all entries", 0, -1))
        # 8. a posting without entries
        posting = c.execute(text("""
            INSERT INTO postings (idempotency_key, kind, body_sha256, business_date, driver_id)
            VALUES ('c2b:BENCHEMPTY', 'fare', md5('empty'), :day, :d) RETURNING id
        """), {"day": BASE_DATE + timedelta(days=4), "d": k}).scalar_one()
        expected.add(("posting_unbalanced", str(posting), 0, 0))
        c.execute(text("ANALYZE accounts, driver_days, payouts"))
    return expected, victims


def _key(found: Discrepancy) -> tuple[str, str, int, int]:
    return (found.kind, found.subject, found.expected_cents, found.actual_cents)


# --------------------------------------------------------------------------------------------
# The set-based check and its plans
# --------------------------------------------------------------------------------------------


def _backend_pid(c: Connection) -> int:
    """The server process of ``c``; ends the transaction it had to open, so the caller's next
    statement starts a fresh one (``check`` must begin with SET TRANSACTION)."""
    pid = c.execute(text("SELECT pg_backend_pid()")).scalar_one()
    c.rollback()
    return pid


def _process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) of a local server process from /proc; None when the server is
    not on this host. Parallel workers are separate processes and are not counted."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            comm, rest = stat.read().rsplit(")", 1)
        if "postgres" not in comm and "postmaster" not in comm:
            return None
        fields = rest.split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _cpu_delta(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else round(after - before, 2)


def time_check(engine: Engine, runs: int) -> tuple[list[float], list[float | None], list[float | None],
                                                   list[Discrepancy]]:
    times: list[float] = []
    cpu: list[float | None] = []
    load: list[float | None] = []
    found: list[Discrepancy] = []
    for number in range(runs):
        with engine.connect() as c:
            pid = _backend_pid(c)
            cpu_before = _process_cpu_s(pid)
            started = time.perf_counter()
            found = reconcile.check(c)
            times.append(round(time.perf_counter() - started, 3))
            cpu.append(_cpu_delta(cpu_before, _process_cpu_s(pid)))
            c.rollback()
        load.append((_loadavg() or [None])[0])
        log(f"  check run {number + 1}/{runs}: {times[-1]:.2f} s (server CPU {cpu[-1]} s, "
            f"load {load[-1]}), {len(found)} discrepancies")
    return times, cpu, load, found


QUERY_NAMES = ("ledger", "driver_days", "payouts", "empty_postings")


def explain(engine: Engine) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of each of the four queries, with the highlights pulled out."""
    report: dict[str, Any] = {}
    for name, query in zip(QUERY_NAMES, reconcile.CHECKS, strict=True):
        with engine.connect() as c:
            c.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
            started = time.perf_counter()
            lines = [row[0] for row in c.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + query.text))]
            elapsed = time.perf_counter() - started
            c.rollback()
        plan = "\n".join(lines)
        execution = re.search(r"Execution Time: ([\d.]+) ms", plan)
        report[name] = {
            "wall_s": round(elapsed, 2),
            "execution_ms": float(execution.group(1)) if execution else None,
            "parallel": bool(re.search(r"Workers Launched: [1-9]", plan)),
            "workers": re.findall(r"Workers (?:Planned|Launched): \d+", plan),
            "spills": [
                line.strip() for line in lines
                if re.search(r"Disk(?: Usage)?: \d+|external (?:merge|sort)|Batches: (?:[2-9]|\d\d+)", line)
            ],
            # the top node's buffers are the query's totals
            "top_buffers": next((line.strip() for line in lines if line.strip().startswith("Buffers:")), None),
            "plan": lines,
        }
        log(f"  explain {name}: {report[name]['execution_ms']} ms, parallel={report[name]['parallel']}")
    return report


# --------------------------------------------------------------------------------------------
# The baseline: the same check, one driver at a time
# --------------------------------------------------------------------------------------------

# One query per part of the check per driver, each through the indexes the schema has
# (accounts.driver_id, entries.account_id, entries.posting_id, postings.driver_id,
# driver_days' primary key, payouts.driver_id): a fair, not a strawman, per-driver loop.
BY_DRIVER_ACCOUNTS = text("""
SELECT a.code, a.balance_cents, coalesce(sum(e.amount_cents), 0)::bigint AS total
  FROM accounts a LEFT JOIN entries e ON e.account_id = a.id
 WHERE a.driver_id = :d
 GROUP BY a.id
""")
BY_DRIVER_POSTINGS = text("""
SELECT p.id, coalesce(sum(e.amount_cents), 0)::bigint AS total, count(e.id) AS n
  FROM postings p LEFT JOIN entries e ON e.posting_id = p.id
 WHERE p.driver_id = :d
 GROUP BY p.id
HAVING count(e.id) < 2 OR coalesce(sum(e.amount_cents), 0) <> 0
""")
BY_DRIVER_DAYS = text("""
WITH c AS (
    SELECT p.business_date, sum(e.amount_cents)::bigint AS total
      FROM accounts a
      JOIN entries e ON e.account_id = a.id
      JOIN postings p ON p.id = e.posting_id AND p.kind IN ('fare', 'driver_payment')
     WHERE a.driver_id = :d AND a.kind = 'target'
     GROUP BY p.business_date
), dd AS (
    SELECT business_date, contributed_cents FROM driver_days WHERE driver_id = :d
)
SELECT coalesce(dd.business_date, c.business_date) AS day, coalesce(c.total, 0) AS expected,
       coalesce(dd.contributed_cents, 0) AS actual
  FROM dd FULL JOIN c ON c.business_date = dd.business_date
 WHERE coalesce(dd.contributed_cents, 0) <> coalesce(c.total, 0)
""")
BY_DRIVER_PAYOUTS = text("""
WITH flight AS (
    SELECT p.payout_id, sum(e.amount_cents)::bigint AS total
      FROM postings p JOIN entries e ON e.posting_id = p.id AND e.account_id = :flight
     WHERE p.driver_id = :d AND p.payout_id IS NOT NULL
     GROUP BY p.payout_id
)
SELECT po.id,
       CASE WHEN po.state IN ('paid', 'failed') THEN 0 ELSE po.amount_cents END AS expected,
       coalesce(f.total, 0) AS actual
  FROM payouts po LEFT JOIN flight f ON f.payout_id = po.id
 WHERE po.driver_id = :d
   AND coalesce(f.total, 0) <> CASE WHEN po.state IN ('paid', 'failed') THEN 0 ELSE po.amount_cents END
""")
# What no driver owns, done once: the grand total, and postings without a driver.
GLOBAL_TOTAL = text("SELECT coalesce(sum(amount_cents), 0)::bigint FROM entries")
GLOBAL_DRIVERLESS = text("""
SELECT p.id, coalesce(sum(e.amount_cents), 0)::bigint AS total, count(e.id) AS n
  FROM postings p LEFT JOIN entries e ON e.posting_id = p.id
 WHERE p.driver_id IS NULL
 GROUP BY p.id
HAVING count(e.id) < 2 OR coalesce(sum(e.amount_cents), 0) <> 0
""")


def check_driver(c: Connection, driver_id: int, code: str, flight: int) -> list[Discrepancy]:
    found: list[Discrepancy] = []
    for account_code, cached, total in c.execute(BY_DRIVER_ACCOUNTS, {"d": driver_id}):
        if cached != total:
            found.append(Discrepancy("cached_balance", account_code, None, total, cached))
    for posting_id, total, _ in c.execute(BY_DRIVER_POSTINGS, {"d": driver_id}):
        found.append(Discrepancy("posting_unbalanced", str(posting_id), None, 0, total))
    for day, expected, actual in c.execute(BY_DRIVER_DAYS, {"d": driver_id}):
        found.append(Discrepancy("driver_day", f"{code} {day.isoformat()}", driver_id, expected, actual))
    for payout_id, expected, actual in c.execute(BY_DRIVER_PAYOUTS, {"d": driver_id, "flight": flight}):
        found.append(Discrepancy("payout_in_flight", str(payout_id), payout_id, expected, actual))
    return found


def check_global(c: Connection) -> list[Discrepancy]:
    found: list[Discrepancy] = []
    total = c.execute(GLOBAL_TOTAL).scalar_one()
    if total != 0:
        found.append(Discrepancy("ledger_total", "all entries", None, 0, total))
    for posting_id, total, _ in c.execute(GLOBAL_DRIVERLESS):
        found.append(Discrepancy("posting_unbalanced", str(posting_id), None, 0, total))
    return found


class Loop:
    def __init__(self, seconds: float, server_cpu_s: float | None, client_cpu_s: float,
                 found: list[Discrepancy]) -> None:
        self.seconds, self.server_cpu_s, self.client_cpu_s, self.found = seconds, server_cpu_s, client_cpu_s, found


def by_driver(engine: Engine, drivers: list[int], flight: int) -> Loop:
    """The per-driver loop over ``drivers`` in one REPEATABLE READ snapshot."""
    found: list[Discrepancy] = []
    with engine.connect() as c:
        pid = _backend_pid(c)
        c.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        codes = dict(c.execute(text("SELECT id, code FROM drivers WHERE id = ANY(:ids)"), {"ids": drivers}).all())
        cpu_before, client_before = _process_cpu_s(pid), time.process_time()
        started = time.perf_counter()
        for number, driver_id in enumerate(drivers, 1):
            found.extend(check_driver(c, driver_id, codes[driver_id], flight))
            if number % 500 == 0:
                log(f"  baseline {number}/{len(drivers)} drivers, {time.perf_counter() - started:.1f} s")
        elapsed = time.perf_counter() - started
        loop = Loop(elapsed, _cpu_delta(cpu_before, _process_cpu_s(pid)),
                    round(time.process_time() - client_before, 2), found)
        c.rollback()
    return loop


def global_part(engine: Engine) -> tuple[float, list[Discrepancy]]:
    with engine.connect() as c:
        c.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        started = time.perf_counter()
        found = check_global(c)
        elapsed = time.perf_counter() - started
        c.rollback()
    return elapsed, found


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def _settings(engine: Engine) -> dict[str, str]:
    with engine.connect() as c:
        rows = c.execute(text("SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(:n)"),
                         {"n": list(SETTINGS_REPORTED)}).all()
        version = c.execute(text("SHOW server_version")).scalar_one()
    return {"server_version": version} | dict(sorted(rows))


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--drivers", type=int, default=100_000, help="drivers (default 100000)")
    parser.add_argument("--entries-per-driver", type=int, default=100,
                        help="ledger entries per driver (default 100: 32 fares + 1 paid payout)")
    parser.add_argument("--baseline-sample", type=int, default=2_000,
                        help="drivers checked one by one for the baseline, extrapolated (default 2000)")
    parser.add_argument("--check-runs", type=int, default=3, help="timed runs of the check (best kept)")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--no-explain", action="store_true", help="skip EXPLAIN ANALYZE")
    parser.add_argument("--seed", type=int, default=20261124, help="sample and corruption seed")
    parser.add_argument("--admin-url", default=os.environ.get("FLEETPAY_BENCH_ADMIN_URL", DEFAULT_ADMIN_URL),
                        help="a superuser URL of the server (loopback)")
    parser.add_argument("--output", default=str(RESULTS), help="where to write the JSON ('-' for nowhere)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    drivers = getattr(args, "drivers", 100_000)
    shape = Shape(drivers, getattr(args, "entries_per_driver", 100))
    sample_size = min(getattr(args, "baseline_sample", 2_000), drivers)
    check_runs = max(1, getattr(args, "check_runs", 3))
    keep = getattr(args, "keep", False)
    rng = random.Random(getattr(args, "seed", 20261124))
    admin_url = getattr(args, "admin_url", DEFAULT_ADMIN_URL)
    output = getattr(args, "output", str(RESULTS))

    name = f"fpbench_reconcile_{secrets.token_hex(4)}"
    url = make_url(sqlalchemy_url(admin_url)).set(database=name).render_as_string(hide_password=False)
    admin = create_engine(sqlalchemy_url(admin_url), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    result: dict[str, Any] = {
        "benchmark": "reconcile",
        "command": "python -m bench.reconcile " + " ".join(
            [f"--drivers {shape.drivers}", f"--entries-per-driver {shape.entries_per_driver}",
             f"--baseline-sample {sample_size}", f"--check-runs {check_runs}"] + (["--keep"] if keep else [])
        ),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "database": name,
        "host": {"cpus": os.cpu_count(), "loadavg_at_start": _loadavg(),
                 "note": "shared machine: other tests and benchmarks may run at the same time; "
                         "compare the ratio, which is measured in this run"},
        "targets": dict(TARGETS),
    }
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    log(f"created database {name}")
    engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    checker = create_engine(url, poolclass=NullPool)
    try:
        upgrade(url)
        log("migrated; loading")
        loaded = load(engine, shape)
        result["dataset"] = shape.as_dict() | {
            "postings": loaded["rows"]["postings"], "entries": loaded["rows"]["entries"],
            "rows": loaded["rows"], "business_days": loaded["business_days"], "sizes": loaded["sizes"],
            "not_loaded": "inbox rows (the check does not read them); daily-close postings (days left open)",
        }
        result["load"] = {"seconds": loaded["seconds"], "steps_s": loaded["steps_s"], "method": loaded["method"]}
        log(f"loaded in {loaded['seconds']:.1f} s")

        expected, victims = corrupt(engine, shape, rng, loaded)
        log(f"planted {len(expected)} discrepancies")
        result["postgres"] = _settings(checker)

        log(f"timing db.reconcile.check ({check_runs} runs)")
        times, cpu, load_during, found = time_check(checker, check_runs)
        found_keys = Counter(_key(x) for x in found)
        result["check"] = {
            "function": "db.reconcile.check (4 set-based queries, one REPEATABLE READ snapshot)",
            "runs_s": times,
            "best_s": min(times),
            "runs_server_cpu_s": cpu,
            "loadavg_1min_after_each_run": load_during,
            "discrepancies_found": len(found),
            "discrepancies_planted": len(expected),
            "found_exactly_the_planted": set(found_keys) == expected and max(found_keys.values(), default=1) == 1,
            "by_kind": dict(Counter(x.kind for x in found)),
            "found": [x.as_dict() for x in found],
        }
        if not result["check"]["found_exactly_the_planted"]:
            result["check"]["missed"] = sorted(map(list, expected - set(found_keys)))
            result["check"]["unexpected"] = sorted(map(list, set(found_keys) - expected))[:50]
            log("WARNING: the check did not find exactly the planted discrepancies")

        flight = loaded["payouts_in_flight_account_id"]
        # The per-driver loop must find the same discrepancies: run it (untimed) on the victims.
        on_victims = by_driver(checker, sorted(victims), flight).found
        _, global_found = global_part(checker)
        baseline_keys = {_key(x) for x in on_victims + global_found}

        sample = sorted(rng.sample(range(1, shape.drivers + 1), sample_size))
        log(f"timing the driver-by-driver baseline on {sample_size} random drivers")
        others = sorted(set(range(1, shape.drivers + 1)) - set(sample))
        by_driver(checker, rng.sample(others, min(50, len(others))), flight)  # warm up, outside the sample
        loop = by_driver(checker, sample, flight)
        sample_s, sample_found = loop.seconds, loop.found
        global_s, _ = global_part(checker)
        per_driver_extrapolated = sample_s * shape.drivers / sample_size
        extrapolated = per_driver_extrapolated + global_s
        result["baseline"] = {
            "method": (
                "driver by driver in one REPEATABLE READ snapshot, 4 indexed queries per driver "
                "(its accounts' entry sums vs cached balances; its postings balance; its driver days "
                "vs its contributions; its payouts vs payouts_in_flight), plus once for everything "
                "no driver owns (grand total, driverless postings)"
            ),
            "sample_drivers": sample_size,
            "sample_s": round(sample_s, 3),
            "per_driver_ms": round(1000 * sample_s / sample_size, 3),
            "global_part_s": round(global_s, 3),
            "extrapolated": True,
            "extrapolated_to_drivers": shape.drivers,
            "extrapolated_s": round(extrapolated, 1),
            "sample_server_cpu_s": loop.server_cpu_s,
            "sample_client_cpu_s": loop.client_cpu_s,
            "discrepancies_in_sample": len(sample_found),
            "finds_the_same_as_check_on_planted_drivers": baseline_keys == expected,
        }
        result["ratio_baseline_over_check"] = round(extrapolated / min(times), 1)
        result["ratio_per_driver_part_only"] = round(per_driver_extrapolated / min(times), 1)
        known_cpu = [x for x in cpu if x is not None]
        if known_cpu and loop.server_cpu_s is not None:
            # Less sensitive to other load on the machine than wall time; the check's parallel
            # workers (if any) are not counted, so this overstates the ratio when plans go parallel.
            baseline_cpu = (loop.server_cpu_s + loop.client_cpu_s) * shape.drivers / sample_size
            result["cpu_ratio_per_driver_part"] = {
                "baseline_cpu_extrapolated_s": round(baseline_cpu, 1),
                "check_server_cpu_best_s": min(known_cpu),
                "ratio": round(baseline_cpu / min(known_cpu), 1),
                "note": "server (leader process) + client CPU seconds; parallel workers not counted",
            }
        result["targets_met"] = {
            "full_size": shape.drivers >= TARGETS["drivers"] and loaded["rows"]["entries"] >= TARGETS["entries"],
            "check_under_60_s": min(times) < TARGETS["check_seconds_max"],
            "ratio_at_least_20": result["ratio_baseline_over_check"] >= TARGETS["ratio_min"],
        }
        if not getattr(args, "no_explain", False):
            log("EXPLAIN (ANALYZE, BUFFERS) of the four queries")
            result["explain"] = explain(checker)
            result["plan_went_parallel"] = any(q["parallel"] for q in result["explain"].values())
        result["host"]["loadavg_at_end"] = _loadavg()
    finally:
        engine.dispose()
        checker.dispose()
        if keep:
            log(f"kept database {name}: {url}")
            result["kept_url"] = url
        else:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            log(f"dropped database {name}")
        admin.dispose()
    result["kept"] = keep
    if output and output != "-":
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, default=str) + "\n")
        log(f"wrote {path}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reconcile", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    result = run(parser.parse_args(argv))
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())


def end_month_today(engine: Engine, today: date) -> None:
    """Move the loaded month so that it ends ``today``, as a running fleet's would: every day but
    today closed. (The loader's way, with the ledger's triggers off.)"""
    with engine.connect() as c:
        c.execute(text("SET session_replication_role = replica"))
        shift = c.execute(text("SELECT CAST(:today AS date) - max(business_date) FROM driver_days"), {"today": today}).scalar_one()
        c.execute(text("UPDATE postings SET business_date = business_date + :d"), {"d": shift})
        c.execute(text("UPDATE driver_days SET business_date = business_date + :d, "
                       "closed_at = CASE WHEN business_date + :d < CAST(:today AS date) THEN now() END, "
                       "close_outcome = CASE WHEN business_date + :d < CAST(:today AS date) THEN 'met' END"),
                  {"d": shift, "today": today})
        c.execute(text("VACUUM (ANALYZE) postings"))
        c.execute(text("VACUUM (ANALYZE) driver_days"))


def business_today() -> date:
    """The business day fleetpay shows as today (its own clock and settings)."""
    from zoneinfo import ZoneInfo

    from fleetpay.settings import Settings
    from schemas.parsing import business_date

    settings = Settings()
    return business_date(datetime.now(ZoneInfo(settings.timezone)), close_time=settings.close_time, tz=settings.timezone)


def load_month_to_today(res: Any, label: str, shape: Shape) -> tuple[str, str, dict[str, Any]]:
    """A new database of ``shape`` whose month ends today: (its name, its URL, what was loaded)."""
    from bench.common import database_url, say

    name = res.create_database(label, template=res.migrated_template())
    url = sqlalchemy_url(database_url(name))
    engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    say(f"loading {shape.drivers} drivers, {shape.entries} entries")
    loaded = load(engine, shape)
    end_month_today(engine, business_today())
    engine.dispose()
    return name, url, loaded
