"""fleetpay benchmarks: one command, one JSON document.

    .venv/bin/python -m bench [ingest|apply|e2e|payouts|memory|reconcile|console|ussd|all] [--quick]

Prints ONE JSON document on stdout (progress on stderr) and saves it as
``bench/results/<name>.json`` (``<name>-quick.json`` with ``--quick``). Every figure comes with a
baseline measured in the same run and their ratio; see docs/benchmarks.md.

Needs: the venv of the project (``pip install -e '.[dev]'``: uvicorn, starlette, dramatiq, httpx,
psycopg2, psutil come with it), a PostgreSQL the admin URL ``FLEETPAY_BENCH_ADMIN_URL`` can
create databases on (default ``postgresql://postgres@127.0.0.1:5432/postgres``), a Redis at
``FLEETPAY_BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379``) with one empty db among 10–14.
No other tool: the HTTP load generator is pure Python. ``reconcile`` is ``bench.reconcile`` at its
defaults (100,000 drivers / 10,000,000 entries; with ``--quick`` 5,000 / 100,000); its own command
takes more options. It creates databases ``fpbench_<run>_*`` and
drops them, and flushes the Redis db it used, also after a failure.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

from bench.common import Resources, machine, resources, save, say

BENCHES = ("ingest", "apply", "e2e", "payouts", "memory", "reconcile", "console", "ussd")
RECONCILE_QUICK = ["--drivers", "5000", "--entries-per-driver", "20", "--baseline-sample", "500", "--check-runs", "1"]


def run_reconcile(quick: bool) -> dict[str, Any]:
    from bench import reconcile

    parser = argparse.ArgumentParser()
    reconcile.add_arguments(parser)
    return reconcile.run(parser.parse_args([*(RECONCILE_QUICK if quick else []), "--no-explain", "--output", "-"]))


def run_one(name: str, res: Resources, quick: bool) -> dict[str, Any]:
    started = time.monotonic()
    if name == "reconcile":
        say(f"=== reconcile ({'quick' if quick else 'full'}) ===")
        result = run_reconcile(quick)
        result["elapsed_s"] = round(time.monotonic() - started, 1)
        return result
    if name == "ingest":
        from bench import ingest as module
    elif name == "apply":
        from bench import apply as module  # type: ignore[no-redef]
    elif name == "e2e":
        from bench import e2e as module  # type: ignore[no-redef]
    elif name == "payouts":
        from bench import payouts as module  # type: ignore[no-redef]
    elif name == "console":
        from bench import console as module  # type: ignore[no-redef]
    elif name == "ussd":
        from bench import ussd as module  # type: ignore[no-redef]
    else:
        from bench import memory as module  # type: ignore[no-redef]
    say(f"=== {name} ({'quick' if quick else 'full'}) ===")
    result = module.run(res, quick=quick)
    result["elapsed_s"] = round(time.monotonic() - started, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("bench", nargs="?", default="all", choices=(*BENCHES, "all"))
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition: a smoke run (about a minute)")
    args = parser.parse_args(argv)

    def stop(signum: int, _frame: object) -> None:
        # Unwind through the finally blocks: children stopped, databases dropped, Redis flushed.
        raise SystemExit(f"stopped by signal {signum}")

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, stop)

    names = BENCHES if args.bench == "all" else (args.bench,)
    document: dict[str, Any] = {
        "command": "python -m bench " + args.bench + (" --quick" if args.quick else ""),
        "mode": "quick" if args.quick else "full",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "results": {},
    }
    status = 0
    with resources() as res:
        for name in names:
            try:
                document["results"][name] = run_one(name, res, args.quick)
            except Exception as error:  # noqa: BLE001 — report it, go on with the next bench
                import traceback

                say(f"{name} failed: {error!r}")
                traceback.print_exc(file=sys.stderr)
                for child in res.processes:
                    say(f"--- last lines of {child.name} ---\n{child.tail(15)}")
                document["results"][name] = {"error": repr(error)}
                status = 1
            finally:
                for child in list(res.processes):
                    child.stop()
                res.processes.clear()
    document["summary"] = summary(document["results"])
    out = save(f"{args.bench}{'-quick' if args.quick else ''}", document)
    say(f"saved {out}")
    json.dump(document, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    return status


def summary(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The table of docs/benchmarks.md: figure, value, baseline, ratio, target, met."""
    rows: list[dict[str, Any]] = []

    def row(figure: str, value: Any, baseline: Any, ratio: Any, target: str, met: bool | None) -> None:
        rows.append({"figure": figure, "value": value, "baseline": baseline, "ratio": ratio, "target": target, "met": met})

    ingest = results.get("ingest", {}).get("figures")
    if ingest:
        m, o = ingest["max_rate"], ingest["offered_rate"]
        row(f"ingest max-rate throughput, req/s ({m['connections']} conns)", m["ingest_rps"], m["bare_rps"], m["ratio"],
            "ratio >= 0.40", m["met"])
        for q in ("p50", "p95", "p99"):
            row(f"ingest latency {q} at {o['rate_rps']} req/s, ms", o[f"ingest_{q}_ms"], o[f"bare_{q}_ms"], o[f"ratio_{q}_ms"],
                "< 25 ms" if q == "p99" else "-", o["met"] if q == "p99" else None)
    apply = results.get("apply", {}).get("figures")
    if apply:
        sp, hot = apply["spread"], apply["hot"]
        row(f"apply (workers only), spread over {sp['drivers']} drivers, payments/s ({apply['workers']})",
            sp["workers_pps"], sp["limit_pps"], sp["ratio_to_limit"], "ratio to the plain-SQL limit >= 0.50", sp["met"])
        if sp.get("workers_rabbitmq_pps") is not None:
            row("apply (workers only), spread, RabbitMQ as the broker, payments/s", sp["workers_rabbitmq_pps"],
                sp["workers_pps"], sp["rabbitmq_ratio_to_redis"], "- (context: baseline is Redis)", None)
        row("apply (workers only), instant payouts on, payments/s", sp["workers_payouts_on_pps"], sp["limit_pps"],
            sp["payouts_on_ratio_to_limit"], "- (context)", None)
        row("apply (workers only), one hot driver, payments/s", hot["workers_pps"], sp["workers_pps"],
            hot["ratio_to_spread"], "ratio to spread >= 0.50", hot["met"])
    e2e = results.get("e2e", {}).get("figures")
    if e2e:
        for rate, at in e2e["offered"].items():
            row(f"end to end at {rate}/s offered: ack p99 / receipt-to-applied p99, ms",
                f"{at['ack_p99_ms']} / {at['applied_p99_ms']}", None, None, "< 25 / < 1000", None)
        row("end to end, highest rate sustained, payments/s", e2e["max_sustained_rps"], e2e["webhook_applied_pps"],
            e2e["ratio_to_webhook"], ">= 1000/s and >= 3x the synchronous webhook", e2e["met"])
    payouts = results.get("payouts", {}).get("figures")
    if payouts:
        row("payouts settled (paid) per second", payouts["settled_per_s"], payouts["baseline_per_s"], payouts["ratio"],
            "- (no target)", None)
    memory = results.get("memory", {}).get("figures")
    if memory:
        row("worker RSS after load, MB (largest process)", memory["max_worker_rss_mb"], memory["max_idle_rss_mb"],
            memory["ratio_to_idle"], "< 150 MB", memory["met"])
    reconcile = results.get("reconcile", {})
    if "check" in reconcile:
        dataset, met = reconcile["dataset"], reconcile["targets_met"]
        row(f"reconcile check, s ({dataset['drivers']:,} drivers, "
            f"{dataset['entries']:,} entries)", reconcile["check"]["best_s"], reconcile["baseline"]["extrapolated_s"],
            reconcile["ratio_baseline_over_check"], "< 60 s and >= 20x faster",
            met["check_under_60_s"] and met["ratio_at_least_20"] and reconcile["check"]["found_exactly_the_planted"])
    ussd = results.get("ussd", {})
    if "ussd" in ussd:
        row(f"USSD answer p99, ms ({ussd['dataset']['drivers']:,} drivers, {ussd['clients']} at once)",
            ussd["ussd"]["p99_ms"], ussd["floor_http_healthz"]["p99_ms"], None, f"< {ussd['target_p99_ms']:.0f} ms",
            ussd["under_target"])
    return rows


if __name__ == "__main__":
    sys.exit(main())
