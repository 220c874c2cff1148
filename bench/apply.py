"""Apply bench: payments applied per second by the real dramatiq workers, against plain SQL.

Each measurement gets a fresh database (a copy of a template holding the schema and a fleet of
1,000 vehicles, each with its regular driver, registered with ``db.fleet``) whose inbox is
preloaded with N C2B confirmations exactly as the ingest stores them (``received``, the raw JSON
body). Then either

- workers: the N ids are enqueued in Redis, then ``fleetpay worker --processes W --threads T``
  starts (instant payouts off: this measures applying payments, not B2C), or
- baseline: W processes of ``bench.apply_baseline`` with T threads (one connection each) issue
  the same statements per payment with plain psycopg2;

and the bench waits until every row is processed. Rate = rows processed between the 5th and the
95th percentile of ``inbox.processed_at`` over that time span (steady state: process start-up and
the last stragglers are left out); the full-span rate is reported too. Scenarios: ``spread``
(payments to uniformly random vehicles of the 1,000) and ``hot`` (every payment to one vehicle).
Workers and baseline alternate, ``reps`` times; figures are medians.
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import time
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

DRIVERS = 1000
AMOUNT = "200.00"


def sizes(quick: bool) -> dict[str, Any]:
    if quick:  # a smoke run: a smaller fleet registers faster
        return {"reps": 1, "processes": 2, "threads": 4, "drivers": 200, "spread_n": 800, "hot_n": 300,
                "group_commit_batch": 20, "profile_n": 300}
    return {"reps": 3, "processes": 2, "threads": 4, "drivers": DRIVERS, "spread_n": 6000, "hot_n": 2000,
            "group_commit_batch": 20, "profile_n": 900}


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
                  spread: bool = True) -> list[int]:
    """N received C2B confirmations (distinct TransIDs), stored as the ingest stores them: to
    vehicle 000 (``hot``), to uniformly random vehicles (``spread``), else to vehicle i % 1000."""
    from psycopg2.extras import execute_values

    rng = random.Random(seed)
    at = nairobi_now_str()
    rows = []
    for i in range(n):
        trans_id = f"A{tag}{i:07d}"[:20]
        account = vehicle_code(0 if hot else rng.randrange(drivers) if spread else i % drivers)
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


def enqueue(res: Resources, ids: list[int]) -> float:
    """Put one ``process_callback`` message per id on the queue, as the ingest does; seconds taken."""
    from fleetpay.settings import Settings
    from workers.broker import build_broker
    from workers.messages import process_callback_message

    settings = Settings(redis_url=res.redis_url(), database_url="postgresql://unused/x")
    broker = build_broker(settings)
    started = time.monotonic()
    for inbox_id in ids:
        broker.enqueue(process_callback_message(inbox_id, queue_name=settings.queue_name))
    broker.client.close()
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


def start_workers(res: Resources, database: str, *, processes: int, threads: int, **env: str) -> Child:
    environment = fleetpay_env(res, database, FLEETPAY_INSTANT_PAYOUTS="false", **env)
    return res.start(
        f"worker-{database[-12:]}",
        [PYTHON, "-m", "fleetpay", "worker", "--processes", str(processes), "--threads", str(threads),
         "--shutdown-timeout-s", "5"],
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


def run_workers(res: Resources, scenario: str, n: int, s: dict[str, Any], rep: int) -> dict[str, Any]:
    database = res.create_database(f"apply_{scenario}_w{rep}", template=fleet_template(res, s["drivers"]))
    res.reset_redis()
    ids = preload_inbox(database, n, hot=scenario == "hot", tag=f"{res.run_id[:4]}w{rep}", drivers=s["drivers"])
    enqueue_s = enqueue(res, ids)
    conn = connect(database)
    try:
        started = time.monotonic()
        child = start_workers(res, database, processes=s["processes"], threads=s["threads"])
        measured = measure_until_done(conn, n, timeout_s=max(90.0, n / 40), alive=child.alive,
                                      python_cpu=lambda: tree_cpu(child), database=database)
        memory = rss_mb(worker_processes(child))
        child.stop()
        result = {
            **rates(conn),
            "wall_pps_including_startup": rounded(n / (measured["finished_at"] - started)),
            "enqueue_s": round(enqueue_s, 2),
            "cpu_ms_per_payment": measured["cpu_ms_per_payment"],
            "worker_rss": memory,
            "books": check_books(conn, n),
        }
    finally:
        conn.close()
        res.drop_database(database)
    return result


def run_baseline(res: Resources, scenario: str, n: int, s: dict[str, Any], rep: int, batch: int = 1) -> dict[str, Any]:
    database = res.create_database(f"apply_{scenario}_b{rep}_{batch}", template=fleet_template(res, s["drivers"]))
    ids = preload_inbox(database, n, hot=scenario == "hot", tag=f"{res.run_id[:4]}b{rep}", drivers=s["drivers"])
    env = fleetpay_env(res, database)
    conn = connect(database)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        started = time.monotonic()
        for p in range(s["processes"]):
            procs.append(subprocess.Popen(
                [PYTHON, "-m", "bench.apply_baseline", "--dsn", database_url(database), "--threads", str(s["threads"]),
                 "--ids", f"{ids[0]}-{ids[-1]}", "--modulo", str(s["processes"]), "--remainder", str(p),
                 "--timeout-s", str(max(90.0, n / 40)), "--hold-s", "30", "--batch", str(batch)],
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


def trace_actor(res: Resources, drivers: int) -> dict[str, Any]:
    """The statements the real actor issues for one payment (``bench.trace_actor``)."""
    database = res.create_database("apply_trace", template=fleet_template(res, drivers))
    try:
        ids = preload_inbox(database, 2, hot=False, tag="trace", drivers=drivers)
        out = subprocess.run(
            [PYTHON, "-m", "bench.trace_actor", str(ids[0]), str(ids[1])],
            env=fleetpay_env(res, database, FLEETPAY_INSTANT_PAYOUTS="false", FLEETPAY_LOG_LEVEL="WARNING"),
            cwd=res.tmp, capture_output=True, text=True, timeout=120, check=True,
        )
        statements = json.loads(out.stdout)["statements"]
    finally:
        res.drop_database(database)
    from bench.apply_baseline import STATEMENTS

    return {
        "actor_statements": statements,
        "actor_statement_count": len(statements),
        "baseline_statement_count": len(STATEMENTS) + 1,  # + COMMIT
        "not_in_trace": "psycopg2's implicit BEGIN (both sides) and SQLAlchemy's pool_pre_ping SELECT 1 "
        "on each connection checkout (workers only)",
    }


def run(res: Resources, *, quick: bool) -> dict[str, Any]:
    s = sizes(quick)
    trace = trace_actor(res, s["drivers"])
    say(f"apply: the actor issues {trace['actor_statement_count']} statements per payment (incl. COMMIT); "
        f"the baseline {trace['baseline_statement_count']}")
    sides = ("workers", "baseline", "baseline_group_commit")
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {sc: {side: [] for side in sides} for sc in ("spread", "hot")}
    for scenario in ("spread", "hot"):
        n = s[f"{scenario}_n"]
        for rep in range(s["reps"]):
            for side in sides:
                if side == "workers":
                    result = run_workers(res, scenario, n, s, rep)
                else:
                    batch = s["group_commit_batch"] if side == "baseline_group_commit" else 1
                    result = run_baseline(res, scenario, n, s, rep, batch=batch)
                runs[scenario][side].append(result)
                say(f"apply: {scenario:6s} rep {rep + 1}/{s['reps']} {side:8s} {result['steady_pps']:8.1f} payments/s "
                    f"(span {result['span_pps']}, wall {result['wall_pps_including_startup']}) "
                    f"cpu/payment py {result['cpu_ms_per_payment']['python']} ms pg {result['cpu_ms_per_payment']['postgres']} ms "
                    f"books {'ok' if result['books']['ok'] else result['books']}")

    def med(scenario: str, side: str) -> float:
        return median([r["steady_pps"] for r in runs[scenario][side]])

    spread_w, spread_b = med("spread", "workers"), med("spread", "baseline")
    hot_w, hot_b = med("hot", "workers"), med("hot", "baseline")
    spread_ratio = ratio(spread_w, spread_b)
    figures = {
        "workers": f"{s['processes']} processes x {s['threads']} threads",
        "spread": {
            "payments": s["spread_n"],
            "drivers": s["drivers"],
            "workers_pps": rounded(spread_w),
            "baseline_pps": rounded(spread_b),
            "ratio": spread_ratio,
            "per_rep_ratio": [ratio(w["steady_pps"], b["steady_pps"]) for w, b in zip(runs["spread"]["workers"], runs["spread"]["baseline"], strict=True)],
            "target": ">= 1000 payments/s and >= 0.50 of the baseline",
            "met": spread_w >= 1000 and (spread_ratio or 0) >= 0.5,
        },
        "hot": {
            "payments": s["hot_n"],
            "drivers": 1,
            "workers_pps": rounded(hot_w),
            "baseline_pps": rounded(hot_b),
            "ratio_to_baseline": ratio(hot_w, hot_b),
            "ratio_to_spread": ratio(hot_w, spread_w),
            "baseline_ratio_to_spread": ratio(hot_b, spread_b),
            "target": ">= 0.50 of the spread rate",
            "met": (ratio(hot_w, spread_w) or 0) >= 0.5,
        },
        "books_ok": all(r["books"]["ok"] for sc in runs.values() for side in sc.values() for r in side),
    }
    profile = profile_in_process(res, s, name=None if quick else "apply-profile.txt")
    say(f"apply: single-thread CPU per payment: actor body {profile['cpu_ms_per_payment']['actor_body']} ms, "
        f"plain SQL {profile['cpu_ms_per_payment']['baseline']} ms")
    diagnostics = {
        "what_if_group_commit": {
            "note": f"plain SQL, same statements, one COMMIT per {s['group_commit_batch']} payments (not the product)",
            "spread_pps": rounded(med("spread", "baseline_group_commit")),
            "hot_pps": rounded(med("hot", "baseline_group_commit")),
            "spread_ratio_to_baseline": ratio(med("spread", "baseline_group_commit"), spread_b),
            "hot_ratio_to_baseline": ratio(med("hot", "baseline_group_commit"), hot_b),
        },
        "cpu_ms_per_payment_median": {
            f"{scenario}_{side}": {key: median([r["cpu_ms_per_payment"][key] for r in runs[scenario][side]])
                                   for key in runs[scenario][side][0]["cpu_ms_per_payment"]}
            for scenario in runs for side in sides
        },
        "single_thread_profile": profile,
    }
    return {"sizes": s, "figures": figures, "diagnostics": diagnostics, "trace": trace, "runs": runs}


def profile_in_process(res: Resources, s: dict[str, Any], *, name: str | None) -> dict[str, Any]:
    """``bench.profile_apply``: single-thread CPU per payment of the actor body and of the plain
    SQL, and a cProfile of the actor (CPU clock), in a fresh database."""
    database = res.create_database("apply_profile", template=fleet_template(res, s["drivers"]))
    try:
        ids = preload_inbox(database, s["profile_n"], hot=False, tag=f"{res.run_id[:4]}p", drivers=s["drivers"])
        out = subprocess.run(
            [PYTHON, "-m", "bench.profile_apply", str(ids[0]), str(ids[-1])],
            env=fleetpay_env(res, database, FLEETPAY_INSTANT_PAYOUTS="false"),
            cwd=res.tmp, capture_output=True, text=True, timeout=600, check=True,
        )
        result = json.loads(out.stdout)
    finally:
        res.drop_database(database)
    text = result.pop("pstats_text")
    (res.tmp / "apply_profile.txt").write_text(text)
    from bench.common import RESULTS

    RESULTS.mkdir(parents=True, exist_ok=True)
    if name:  # the full run's profile is kept beside its results; a quick run's is not
        (RESULTS / name).write_text(text)
    result["pstats_file"] = f"bench/results/{name}" if name else None
    return result
