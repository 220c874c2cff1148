"""What the apply bench's plain-SQL baselines share: take units of work (an inbox id, or a batch of
them) from an in-process queue over ``--threads`` psycopg2 connections, one transaction each, a
deadlock or serialization failure retried later as dramatiq would; print the outcomes' counts.

    main(apply, batch=N)   # apply(cursor, unit, mpesa_account_id) -> (outcome, rows)
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg2
import psycopg2.errors

Apply = Callable[[Any, Any, int], tuple[str, int]]


def worker(dsn: str, apply: Apply, units: queue.Queue[Any], counts: dict[str, int], lock: threading.Lock,
           deadline: float, connections: list) -> None:  # type: ignore[type-arg]
    conn = psycopg2.connect(dsn)
    connections.append(conn)  # closed by main(), after the bench has read the backends' CPU time
    cur = conn.cursor()
    cur.execute("SELECT id FROM accounts WHERE driver_id IS NULL AND kind = 'mpesa'")
    mpesa = cur.fetchone()[0]  # cached once, as db.ledger.system_accounts does
    conn.commit()
    while time.monotonic() < deadline:
        try:
            unit = units.get_nowait()
        except queue.Empty:
            return
        try:
            outcome, rows = apply(cur, unit, mpesa)
            conn.commit()
        except psycopg2.errors.TransactionRollbackError as error:  # deadlock / serialization: later
            conn.rollback()
            units.put(unit)
            outcome, rows = f"retried:{error.pgcode}", 1
        with lock:
            counts[outcome] = counts.get(outcome, 0) + rows


def main(apply: Apply, *, batch: int | None = None) -> None:
    """``batch`` None: one inbox id a unit; else lists of ``--batch`` ids (default ``batch``)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--ids", required=True, help="FIRST-LAST inbox ids")
    parser.add_argument("--modulo", type=int, default=1)
    parser.add_argument("--remainder", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=600)
    if batch is not None:
        parser.add_argument("--batch", type=int, default=batch, help="rows per transaction")
    parser.add_argument("--hold-s", type=float, default=0,
                        help="keep the connections open until stdin has a line (at most this long), so the "
                        "bench can read the PostgreSQL backends' CPU time")
    args = parser.parse_args()
    first, last = (int(x) for x in args.ids.split("-"))
    mine = [i for i in range(first, last + 1) if i % args.modulo == args.remainder]
    units: queue.Queue[Any] = queue.Queue()
    for unit in ([mine[s : s + args.batch] for s in range(0, len(mine), args.batch)] if batch is not None else mine):
        units.put(unit)
    counts: dict[str, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + args.timeout_s
    connections: list = []  # type: ignore[type-arg]
    threads = [threading.Thread(target=worker, args=(args.dsn, apply, units, counts, lock, deadline, connections))
               for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if args.hold_s > 0:
        waiter = threading.Thread(target=sys.stdin.readline, daemon=True)
        waiter.start()
        waiter.join(timeout=args.hold_s)
    for conn in connections:
        conn.close()
    json.dump(counts, sys.stdout)
