"""Apply bench: payments applied per second by the real dramatiq workers, against plain SQL.

Each measurement gets a fresh database (a copy of a template holding the schema and a fleet of
1,000 vehicles, each with its regular driver, registered with ``db.fleet``) whose inbox is
preloaded with N C2B confirmations exactly as the ingest stores them (``received``, the raw JSON
body). Then one of

- ``workers``: the ids are enqueued in Redis as the ingest enqueues them (one ``apply_callbacks``
  message per ``apply_batch_max`` rows), then ``fleetpay worker --processes W --threads T`` starts
  with instant payouts off (applying payments only);
- ``workers_rabbitmq``: the same as ``workers`` with RabbitMQ as the broker
  (``FLEETPAY_BROKER_URL=amqp://…``, publisher confirms), on a node of the bench's own
  (``launcher.rabbitmq_node``), a virtual host per measurement; left out where RabbitMQ is not
  installed;
- ``workers_payouts``: the same as ``workers`` with instant payouts on, the product's default: every batch also
  reserves its drivers' payouts and enqueues them (sending them is the payouts bench's; here the
  workers consume only the callback queue);
- ``limit``: W processes of ``bench.apply_setbased`` with T threads (one connection each) run the
  workers' own batched statements (``db.payment_batch``) with plain psycopg2, 100 rows a
  transaction: the same writes without dramatiq, Redis or SQLAlchemy;
- ``per_payment_sql`` (diagnostic): ``bench.apply_baseline``, one transaction per payment with
  plain psycopg2: what the workers did before batching, at its own limit;

and the bench waits until every row is processed. Rate = rows processed between the 5th and the
95th percentile of ``inbox.processed_at`` over that time span (steady state: process start-up and
the last stragglers are left out); the full-span rate is reported too. Scenarios: ``spread``
(payments to uniformly random vehicles of the 1,000) and ``hot`` (every payment to one vehicle).
The sides alternate, ``reps`` times; figures are medians.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import time
from collections.abc import Callable
from typing import Any

import psutil

from bench.common import (
    PYTHON,
    Child,
    Resources,
    c2b_body,
    database_url,
    fleetpay_env,
    median,
    nairobi_now_str,
    ratio,
    rounded,
    say,
    steady_rates,
)
from launcher import rabbitmq_node
from launcher.rabbitmq_node import RabbitNode

DRIVERS = 1000
AMOUNT = "200.00"


def sizes(quick: bool) -> dict[str, Any]:
    if quick:  # a smoke run: a smaller fleet registers faster
        return {"reps": 1, "processes": 2, "threads": 4, "drivers": 200, "spread_n": 2000, "hot_n": 1000}
    return {"reps": 3, "processes": 2, "threads": 4, "drivers": DRIVERS, "spread_n": 20000, "hot_n": 10000}


# --- the database -------------------------------------------------------------------------------


def vehicle_code(i: int) -> str:
    return f"{i:03d}"


def driver_code(i: int) -> str:
    return f"D{100000 + i}"


def register_fleet(url: str, drivers: int = DRIVERS) -> None:
    """Vehicles 000…, each with its regular driver D100000…, through ``db.fleet`` as the CLI does."""
    from db import fleet
    from db.engine import make_engine, make_sessionmaker

    engine = make_engine(url, pool_size=1)
    try:
        with make_sessionmaker(engine).begin() as session:
            for i in range(drivers):
                fleet.add_vehicle(session, vehicle_code(i))
                fleet.add_driver(session, code=driver_code(i), name=f"Driver {i}", msisdn=f"2547{10000000 + i}")
                fleet.assign(session, driver_code=driver_code(i), vehicle_code=vehicle_code(i), substitute=False)
    finally:
        engine.dispose()


def fleet_template(res: Resources, drivers: int) -> str:
    """A database with the schema and the fleet, made once per run and copied per measurement."""
    templates = res.__dict__.setdefault("fleet_templates", {})
    if drivers not in templates:
        say(f"registering a fleet of {drivers} vehicles and drivers")
        started = time.monotonic()
        name = res.create_database(f"fleet{drivers}")
        register_fleet(database_url(name), drivers)
        templates[drivers] = name
        say(f"fleet registered in {time.monotonic() - started:.1f} s")
    return templates[drivers]


def connect(database: str):  # type: ignore[no-untyped-def]
    import psycopg2

    conn = psycopg2.connect(database_url(database))
    conn.autocommit = True
    return conn


def preload_inbox(database: str, n: int, *, hot: bool, tag: str, drivers: int, seed: int = 7, amount: str = AMOUNT,
                  spread: bool = True, code: Callable[[int], str] = vehicle_code) -> list[int]:
    """N received C2B confirmations (distinct TransIDs), stored as the ingest stores them: to
    vehicle 000 (``hot``), to uniformly random vehicles (``spread``), else to vehicle i % 1000;
    ``code``: the account reference of the i-th vehicle (or driver)."""
    from psycopg2.extras import execute_values

    rng = random.Random(seed)
    at = nairobi_now_str()
    rows = []
    for i in range(n):
        trans_id = f"A{tag}{i:07d}"[:20]
        account = code(0 if hot else rng.randrange(drivers) if spread else i % drivers)
        rows.append(("c2b_confirmation", trans_id, json.dumps(c2b_body(trans_id, amount, account, at)), "received", "127.0.0.1"))
    conn = connect(database)
    try:
        with conn.cursor() as cur:
            ids = execute_values(
                cur, "INSERT INTO inbox (kind, external_id, body, status, source_ip) VALUES %s RETURNING id",
                rows, page_size=1000, fetch=True,
            )
            cur.execute("VACUUM ANALYZE inbox")
    finally:
        conn.close()
    return sorted(i for (i,) in ids)


def enqueue(res: Resources, ids: list[int], broker_url: str | None = None) -> float:
    """Put the ids on the queue as the ingest does (one ``apply_callbacks`` message per
    ``apply_batch_max`` rows), on Redis or ``broker_url``; seconds taken."""
    from fleetpay.settings import Settings
    from workers.broker import build_broker, close, enqueue_many
    from workers.messages import apply_callbacks_messages

    settings = Settings(redis_url=res.redis_url(), broker_url=broker_url, database_url="postgresql://unused/x")
    broker = build_broker(settings)
    started = time.monotonic()
    enqueue_many(broker, apply_callbacks_messages(ids, queue_name=settings.queue_name, batch_max=settings.apply_batch_max))
    close(broker)
    return time.monotonic() - started


def processed_count(conn) -> int:  # type: ignore[no-untyped-def]
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM inbox WHERE kind = 'c2b_confirmation' AND status <> 'received'")
        return cur.fetchone()[0]


def wait_all_processed(conn, n: int, *, timeout_s: float, alive=lambda: True) -> float:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        done = processed_count(conn)
        if done >= n:
            return time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {done}/{n} processed after {timeout_s:.0f} s")
        if not alive():
            raise RuntimeError(f"the processes stopped with {done}/{n} processed")
        time.sleep(0.2)


def measure_until_done(conn, n: int, *, timeout_s: float, alive, python_cpu, database: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Wait for every row; CPU per payment (Python processes, PostgreSQL backends of this database)
    counted from the first processed row on, so process start-up is left out."""
    deadline = time.monotonic() + timeout_s
    while processed_count(conn) == 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing processed after {timeout_s:.0f} s")
        if not alive():
            raise RuntimeError("the processes stopped before processing anything")
        time.sleep(0.02)
    first = processed_count(conn)
    py0, pg0 = python_cpu(), backend_cpu_seconds(database)
    finished = wait_all_processed(conn, n, timeout_s=max(1.0, deadline - time.monotonic()), alive=alive)
    py1, pg1 = python_cpu(), backend_cpu_seconds(database)
    counted = max(n - first, 1)
    cpu = {f"python_{k}": round((py1[k] - py0[k]) * 1000 / counted, 3) for k in py0}
    cpu["python"] = round(sum(py1[k] - py0[k] for k in py0) * 1000 / counted, 3)
    cpu["postgres"] = round((pg1 - pg0) * 1000 / counted, 3)
    return {"finished_at": finished, "cpu_ms_per_payment": cpu}


def rates(conn) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    with conn.cursor() as cur:
        cur.execute(
            "SELECT extract(epoch FROM processed_at)::float8 FROM inbox "
            "WHERE kind = 'c2b_confirmation' AND status <> 'received' ORDER BY processed_at"
        )
        return steady_rates([t for (t,) in cur.fetchall()])


def check_books(conn, n: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Every payment applied once, the ledger balanced, the cached balances right."""
    with conn.cursor() as cur:
        cur.execute("SELECT status, count(*) FROM inbox WHERE kind = 'c2b_confirmation' GROUP BY status")
        statuses = dict(cur.fetchall())
        cur.execute("SELECT count(*) FROM postings WHERE idempotency_key LIKE 'c2b:%'")
        postings = cur.fetchone()[0]
        cur.execute("SELECT coalesce(sum(amount_cents), 0) FROM entries")
        entries_sum = int(cur.fetchone()[0])
        cur.execute(
            "SELECT count(*) FROM accounts a WHERE a.driver_id IS NOT NULL AND a.balance_cents <> "
            "(SELECT coalesce(sum(e.amount_cents), 0) FROM entries e WHERE e.account_id = a.id)"
        )
        bad_balances = cur.fetchone()[0]
    ok = statuses.get("processed") == n and postings == n and entries_sum == 0 and bad_balances == 0
    return {"ok": ok, "statuses": statuses, "postings": postings, "entries_sum": entries_sum, "bad_cached_balances": bad_balances}


def postgres_backends(database: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if cmdline.startswith("postgres:") and f" {database} " in cmdline:
                found.append(proc)
    return found


def backend_cpu_seconds(database: str) -> float:
    total = 0.0
    for proc in postgres_backends(database):
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


# --- the worker processes -----------------------------------------------------------------------


def start_workers(res: Resources, database: str, *, processes: int, threads: int, queues: tuple[str, ...] = (),
                  **env: str) -> Child:
    environment = fleetpay_env(res, database, **{"FLEETPAY_INSTANT_PAYOUTS": "false", **env})
    return res.start(
        f"worker-{database[-12:]}",
        [PYTHON, "-m", "cli", "worker", "--processes", str(processes), "--threads", str(threads),
         "--shutdown-timeout-s", "5", *(arg for queue in queues for arg in ("--queues", queue))],
        environment,
    )


def worker_processes(child: Child) -> list[psutil.Process]:
    """The dramatiq worker processes (the children of ``fleetpay worker``'s main process)."""
    with contextlib.suppress(psutil.Error):
        return psutil.Process(child.pid).children(recursive=False)
    return []


def tree_cpu(child: Child) -> dict[str, float]:
    """CPU seconds of dramatiq's supervisor (it forwards the workers' log lines) and of its
    worker processes."""
    out = {"supervisor": 0.0, "workers": 0.0}
    for proc in child.tree():
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            out["supervisor" if proc.pid == child.pid else "workers"] += times.user + times.system
    return out


def rss_mb(procs: list[psutil.Process]) -> list[dict[str, float]]:
    out = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            info = proc.memory_full_info()
            out.append({"pid": proc.pid, "rss_mb": round(info.rss / 2**20, 1), "uss_mb": round(info.uss / 2**20, 1)})
    return out


def run_workers(res: Resources, scenario: str, n: int, s: dict[str, Any], rep: int, *, payouts: bool = False,
                rabbit: RabbitNode | None = None) -> dict[str, Any]:
    label = f"{scenario}_w{rep}{'p' if payouts else ''}{'r' if rabbit else ''}"
    database = res.create_database(f"apply_{label}", template=fleet_template(res, s["drivers"]))
    res.reset_redis()
    broker_url = rabbit.add_vhost(f"{res.run_id}_{label}") if rabbit else None
    broker_env = {"FLEETPAY_BROKER_URL": broker_url} if broker_url else {}
    ids = preload_inbox(database, n, hot=scenario == "hot", tag=f"{res.run_id[:4]}w{rep}", drivers=s["drivers"])
    enqueue_s = enqueue(res, ids, broker_url)
    conn = connect(database)
    try:
        started = time.monotonic()
        # With payouts on, the workers reserve and enqueue them; sending them is the payouts bench's.
        child = (start_workers(res, database, processes=s["processes"], threads=s["threads"], queues=("fleetpay",),
                               FLEETPAY_INSTANT_PAYOUTS="true")
                 if payouts else start_workers(res, database, processes=s["processes"], threads=s["threads"], **broker_env))
        measured = measure_until_done(conn, n, timeout_s=max(90.0, n / 40), alive=child.alive,
                                      python_cpu=lambda: tree_cpu(child), database=database)
        memory = rss_mb(worker_processes(child))
        child.stop()
        with conn.cursor() as cur:
            cur.execute("SELECT count(*), coalesce(sum(amount_cents), 0) FROM payouts")
            payouts_made, payouts_cents = cur.fetchone()
        result = {
            **rates(conn),
            "wall_pps_including_startup": rounded(n / (measured["finished_at"] - started)),
            "enqueue_s": round(enqueue_s, 2),
            "payouts_reserved": payouts_made,
            "payouts_reserved_cents": int(payouts_cents),
            "cpu_ms_per_payment": measured["cpu_ms_per_payment"],
            "worker_rss": memory,
            "books": check_books(conn, n),
        }
    finally:
        conn.close()
        res.drop_database(database)
    return result


def run_baseline(res: Resources, scenario: str, n: int, s: dict[str, Any], rep: int, *, module: str) -> dict[str, Any]:
    """``module``: ``bench.apply_setbased`` (the limit) or ``bench.apply_baseline`` (per payment)."""
    database = res.create_database(f"apply_{scenario}_b{rep}_{module[-4:]}", template=fleet_template(res, s["drivers"]))
    ids = preload_inbox(database, n, hot=scenario == "hot", tag=f"{res.run_id[:4]}b{rep}", drivers=s["drivers"])
    env = fleetpay_env(res, database)
    conn = connect(database)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        started = time.monotonic()
        for p in range(s["processes"]):
            procs.append(subprocess.Popen(
                [PYTHON, "-m", module, "--dsn", database_url(database), "--threads", str(s["threads"]),
                 "--ids", f"{ids[0]}-{ids[-1]}", "--modulo", str(s["processes"]), "--remainder", str(p),
                 "--timeout-s", str(max(90.0, n / 40)), "--hold-s", "30"],
                env=env, cwd=res.tmp, stdout=subprocess.PIPE, stdin=subprocess.PIPE,
            ))

        def python_cpu() -> dict[str, float]:
            total = 0.0
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    times = psutil.Process(proc.pid).cpu_times()
                    total += times.user + times.system
            return {"processes": total}

        measured = measure_until_done(conn, n, timeout_s=max(90.0, n / 40) + 10, python_cpu=python_cpu,
                                      alive=lambda: all(p.poll() is None for p in procs), database=database)
        outcomes: dict[str, int] = {}
        for proc in procs:
            out, _ = proc.communicate(b"done\n", timeout=60)  # lets it close its connections and exit
            for key, value in json.loads(out or b"{}").items():
                outcomes[key] = outcomes.get(key, 0) + value
        result = {
            **rates(conn),
            "wall_pps_including_startup": rounded(n / (measured["finished_at"] - started)),
            "cpu_ms_per_payment": measured["cpu_ms_per_payment"],
            "outcomes": outcomes,
            "books": check_books(conn, n),
        }
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        conn.close()
        res.drop_database(database)
    return result


def run(res: Resources, *, quick: bool) -> dict[str, Any]:
    if not rabbitmq_node.available():
        say(f"apply: {rabbitmq_node.MISSING}")
        return measure(res, quick=quick, rabbit=None)
    rabbit = RabbitNode(res.tmp / "rabbitmq").start()
    try:
        return measure(res, quick=quick, rabbit=rabbit)
    finally:
        rabbit.stop()


def measure(res: Resources, *, quick: bool, rabbit: RabbitNode | None) -> dict[str, Any]:
    s = sizes(quick)
    sides = ("workers", *(("workers_rabbitmq",) if rabbit else ()), "workers_payouts", "limit", "per_payment_sql")
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {sc: {side: [] for side in sides} for sc in ("spread", "hot")}
    for scenario in ("spread", "hot"):
        n = s[f"{scenario}_n"]
        for rep in range(s["reps"]):
            for side in sides:
                load0 = os.getloadavg()[0]
                if side.startswith("workers"):
                    result = run_workers(res, scenario, n, s, rep, payouts=side == "workers_payouts",
                                         rabbit=rabbit if side == "workers_rabbitmq" else None)
                else:
                    module = "bench.apply_setbased" if side == "limit" else "bench.apply_baseline"
                    result = run_baseline(res, scenario, n, s, rep, module=module)
                result["load_average_1m_before"] = round(load0, 2)
                runs[scenario][side].append(result)
                say(f"apply: {scenario:6s} rep {rep + 1}/{s['reps']} {side:16s} {result['steady_pps']:8.1f} payments/s "
                    f"(span {result['span_pps']}, wall {result['wall_pps_including_startup']}) "
                    f"cpu/payment py {result['cpu_ms_per_payment']['python']} ms pg {result['cpu_ms_per_payment']['postgres']} ms "
                    f"load {load0:.2f} books {'ok' if result['books']['ok'] else result['books']}")

    def med(scenario: str, side: str) -> float:
        return median([r["steady_pps"] for r in runs[scenario][side]])

    spread_w, spread_l = med("spread", "workers"), med("spread", "limit")
    hot_w = med("hot", "workers")
    figures = {
        "workers": f"{s['processes']} processes x {s['threads']} threads, apply_batch_max 100",
        "spread": {
            "payments": s["spread_n"],
            "drivers": s["drivers"],
            "workers_pps": rounded(spread_w),
            "workers_payouts_on_pps": rounded(med("spread", "workers_payouts")),
            "workers_rabbitmq_pps": rounded(med("spread", "workers_rabbitmq")) if rabbit else None,
            "rabbitmq_ratio_to_redis": ratio(med("spread", "workers_rabbitmq"), spread_w) if rabbit else None,
            "limit_pps": rounded(spread_l),
            "ratio_to_limit": ratio(spread_w, spread_l),
            "payouts_on_ratio_to_limit": ratio(med("spread", "workers_payouts"), spread_l),
            "per_payment_sql_pps": rounded(med("spread", "per_payment_sql")),
            "per_rep_ratio": [ratio(w["steady_pps"], b["steady_pps"]) for w, b in zip(runs["spread"]["workers"], runs["spread"]["limit"], strict=True)],
            "target": ">= 0.50 of the set-based plain-SQL limit",
            "met": (ratio(spread_w, spread_l) or 0) >= 0.5,
        },
        "hot": {
            "payments": s["hot_n"],
            "drivers": 1,
            "workers_pps": rounded(hot_w),
            "workers_payouts_on_pps": rounded(med("hot", "workers_payouts")),
            "workers_rabbitmq_pps": rounded(med("hot", "workers_rabbitmq")) if rabbit else None,
            "limit_pps": rounded(med("hot", "limit")),
            "ratio_to_spread": ratio(hot_w, spread_w),
            "limit_ratio_to_spread": ratio(med("hot", "limit"), spread_l),
            "target": ">= 0.50 of the spread rate",
            "met": (ratio(hot_w, spread_w) or 0) >= 0.5,
        },
        "books_ok": all(r["books"]["ok"] for sc in runs.values() for side in sc.values() for r in side),
    }
    diagnostics = {
        "cpu_ms_per_payment_median": {
            f"{scenario}_{side}": {key: median([r["cpu_ms_per_payment"][key] for r in runs[scenario][side]])
                                   for key in runs[scenario][side][0]["cpu_ms_per_payment"]}
            for scenario in runs for side in sides
        },
    }
    return {"sizes": s, "figures": figures, "diagnostics": diagnostics, "runs": runs}
