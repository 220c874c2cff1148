"""Where a worker's CPU goes when it applies a payment: single-thread, in-process, CPU time.

Run in a subprocess whose ``FLEETPAY_*`` environment points at a bench database holding
received C2B rows with ids ``FIRST..LAST`` (``workers`` reads its settings at import). One third
of the rows each:

1. the actor's body as ``process_callback`` runs it (``sessions.begin()`` + ``apply_inbox_row``),
   without dramatiq; its logs go where this process's stderr goes;
2. the same under cProfile with a CPU-time clock (the top functions are reported);
3. ``bench.apply_baseline.apply_one`` on one psycopg2 connection.

CPU time is this thread's (``time.thread_time``), so other processes on the machine do not
inflate it the way they inflate wall time. Prints one JSON document.

    python -m bench.profile_apply FIRST LAST
"""

from __future__ import annotations

import cProfile
import io
import json
import os
import pstats
import sys
import time


def main() -> None:
    import psycopg2

    from bench.apply_baseline import apply_one
    from money.callbacks import apply_inbox_row
    from workers.runtime import sessions, settings

    first, last = int(sys.argv[1]), int(sys.argv[2])
    ids = list(range(first, last + 1))
    third = len(ids) // 3
    actor_ids, profiled_ids, baseline_ids = ids[:third], ids[third : 2 * third], ids[2 * third :]
    maker = sessions()

    def actor(inbox_id: int) -> None:
        with maker.begin() as session:
            apply_inbox_row(session, inbox_id, settings)

    # warm-up: caches, compiled statements, the pool's connection
    for inbox_id in actor_ids[:20]:
        actor(inbox_id)
    measured = actor_ids[20:]
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    for inbox_id in measured:
        actor(inbox_id)
    actor_cpu, actor_wall = time.thread_time() - cpu0, time.perf_counter() - wall0

    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    for inbox_id in profiled_ids:
        actor(inbox_id)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]

    def top(key: int, n: int, only_ours: bool = False) -> list[dict[str, object]]:
        rows = []
        for (filename, line, name), (cc, nc, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
            where = filename.split("site-packages/")[-1].replace("/work/main/", "")
            if only_ours and not where.startswith(("workers/", "db/", "schemas/", "fleetpay/")):
                continue
            rows.append({"function": f"{where}:{line}({name})", "self_pct": round(100 * tt / total, 1),
                         "cumulative_pct": round(100 * ct / total, 1), "calls_per_payment": round(nc / len(profiled_ids), 1)})
        rows.sort(key=lambda r: -r["cumulative_pct" if key else "self_pct"])  # type: ignore[operator]
        return rows[:n]

    def by_package() -> dict[str, float]:
        out: dict[str, float] = {}
        for (filename, _, _), (_, _, tt, _, _) in stats.stats.items():  # type: ignore[attr-defined]
            if "site-packages/" in filename:
                package = filename.split("site-packages/")[1].split("/")[0]
            elif filename.startswith("/work/main/"):
                package = "fleetpay (" + filename.replace("/work/main/", "").split("/")[0] + "/)"
            elif filename == "~":
                package = "builtins (C: psycopg2 calls, json, …)"
            else:
                package = "python stdlib"
            out[package] = out.get(package, 0.0) + tt
        return {k: round(100 * v / total, 1) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}

    conn = psycopg2.connect(os.environ["FLEETPAY_DATABASE_URL"])
    cur = conn.cursor()
    cur.execute("SELECT id FROM accounts WHERE driver_id IS NULL AND kind = 'mpesa'")
    mpesa = cur.fetchone()[0]
    conn.commit()
    for inbox_id in baseline_ids[:20]:
        apply_one(cur, inbox_id, mpesa)
        conn.commit()
    measured_b = baseline_ids[20:]
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    for inbox_id in measured_b:
        apply_one(cur, inbox_id, mpesa)
        conn.commit()
    base_cpu, base_wall = time.thread_time() - cpu0, time.perf_counter() - wall0
    conn.close()

    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(40)
    json.dump({
        "payments_each": {"actor": len(measured), "profiled": len(profiled_ids), "baseline": len(measured_b)},
        "cpu_ms_per_payment": {"actor_body": round(actor_cpu * 1000 / len(measured), 3),
                               "baseline": round(base_cpu * 1000 / len(measured_b), 3)},
        "wall_ms_per_payment_single_thread": {"actor_body": round(actor_wall * 1000 / len(measured), 3),
                                              "baseline": round(base_wall * 1000 / len(measured_b), 3)},
        "profile_self_cpu_by_package_pct": by_package(),
        "profile_top_cumulative_ours": top(1, 25, only_ours=True),
        "profile_top_self": top(0, 25),
        "pstats_text": out.getvalue(),
    }, sys.stdout)


if __name__ == "__main__":
    main()
