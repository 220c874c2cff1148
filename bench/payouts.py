"""Payouts bench: B2C payouts settled (paid) per second against the Daraja simulator.

fleetpay side, per measurement: a fresh database (copy of the fleet template); the real ingest
(it receives the simulator's result callbacks), ``fleetpay worker --processes W --threads T`` and
the simulator (``fleetpay simulator --result-delay-ms 10``). Drivers are funded the real way
(one C2B confirmation each, applied by the workers; instant payouts off so nothing is paid
yet), then P payouts of KES 10 are created with ``money.payouts.create_payout`` and one
``send_payout`` message each is enqueued. A payout is settled when the worker has processed its
B2C result (``paid``, ``completed_at`` set). Checks: every payout paid, the simulator paid each
OriginatorConversationID exactly once and P in all, ``payouts_in_flight`` back to zero.

Baseline, same run: the simulator alone. W processes of ``bench.payouts_baseline`` with T threads
send the same B2C requests straight to it, result callbacks to ``bench.callback_sink``; settled =
result callback received. Rates: events between the 5th and 95th percentile of their completion
times over that span.
"""

from __future__ import annotations

import contextlib
import math
import subprocess
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from bench.apply import (
    connect,
    driver_code,
    enqueue,
    fleet_template,
    preload_inbox,
    start_workers,
    wait_all_processed,
)
from bench.common import (
    PYTHON,
    TOKEN,
    Resources,
    database_url,
    fleetpay_env,
    free_port,
    median,
    ratio,
    rounded,
    say,
    steady_rates,
    wait_http,
    wait_until,
)

HOST = "127.0.0.1"
RESULT_DELAY_MS = 10
PAYOUT_CENTS = 1000  # KES 10, the B2C minimum


def sizes(quick: bool) -> dict[str, Any]:
    from bench.apply import sizes as apply_sizes

    fleet = apply_sizes(quick)["drivers"]  # the apply bench's fleet template, shared
    if quick:
        return {"reps": 1, "processes": 2, "threads": 4, "payouts": 200, "drivers": 100, "fleet": fleet}
    return {"reps": 3, "processes": 2, "threads": 4, "payouts": 1000, "drivers": 200, "fleet": fleet}


def create_payouts(database: str, drivers: int, per_driver: int) -> list[int]:
    """``per_driver`` pending payouts of KES 10 for each of the first ``drivers`` drivers, through
    ``money.payouts.create_payout`` under each driver's lock (reserving from ``payable``)."""
    from sqlalchemy import select

    from db import fleet
    from db.engine import make_engine, make_sessionmaker
    from db.models import Driver
    from money import payouts

    today = datetime.now(ZoneInfo("Africa/Nairobi")).date()
    engine = make_engine(database_url(database), pool_size=1)
    ids: list[int] = []
    try:
        with make_sessionmaker(engine).begin() as session:
            for d in range(drivers):
                driver_id = session.execute(select(Driver.id).where(Driver.code == driver_code(d))).scalar_one()
                driver = fleet.lock_driver(session, driver_id)
                for k in range(per_driver):
                    payout = payouts.create_payout(
                        session, driver=driver, amount_cents=PAYOUT_CENTS, cause_key=f"bench:{d}:{k}", business_date=today
                    )
                    ids.append(payout.id)
    finally:
        engine.dispose()
    return ids


def enqueue_payouts(res: Resources, ids: list[int]) -> None:
    from dramatiq import Message

    from fleetpay.settings import Settings
    from workers.broker import build_broker, close
    from workers.messages import SEND_PAYOUT

    settings = Settings(redis_url=res.redis_url(), database_url="postgresql://unused/x")
    broker = build_broker(settings)
    for payout_id in ids:
        broker.enqueue(Message(queue_name=settings.payout_queue_name, actor_name=SEND_PAYOUT, args=(payout_id,), kwargs={}, options={}))
    close(broker)


def paid_count(conn) -> int:  # type: ignore[no-untyped-def]
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM payouts WHERE state IN ('paid', 'failed')")
        return cur.fetchone()[0]


def run_fleetpay(res: Resources, sim_url: str, s: dict[str, Any], rep: int) -> dict[str, Any]:
    httpx.post(f"{sim_url}/sim/reset", timeout=10).raise_for_status()
    database = res.create_database(f"payouts_w{rep}", template=fleet_template(res, s["fleet"]))
    res.reset_redis()
    ingest_port = free_port()
    ingest_url = f"http://{HOST}:{ingest_port}"
    env = {"FLEETPAY_PUBLIC_BASE_URL": ingest_url, "FLEETPAY_DARAJA_BASE_URL": sim_url}
    ingest = res.start(f"ingest-payouts-{rep}", [PYTHON, "-m", "cli", "ingest", "--host", HOST, "--port", str(ingest_port)],
                       fleetpay_env(res, database, **env))
    workers = start_workers(res, database, processes=s["processes"], threads=s["threads"], **env)
    conn = connect(database)
    try:
        wait_http(f"{ingest_url}/readyz", ingest)
        per_driver = math.ceil(s["payouts"] / s["drivers"])
        # Fund: one fare per driver whose 50 % share covers its payouts (target not met yet).
        fare = f"{2 * per_driver * PAYOUT_CENTS // 100}.00"
        funding = preload_inbox(database, s["drivers"], hot=False, tag=f"{res.run_id[:4]}f{rep}", amount=fare,
                                spread=False, drivers=s["fleet"])
        enqueue(res, funding)
        wait_all_processed(conn, len(funding), timeout_s=120, alive=workers.alive)
        ids = create_payouts(database, s["drivers"], per_driver)[: s["payouts"]]
        cpu0 = {"workers": workers.cpu_seconds(), "ingest": ingest.cpu_seconds()}
        started = time.monotonic()
        enqueue_payouts(res, ids)
        wait_until(lambda: paid_count(conn) >= len(ids) or not workers.alive(), timeout_s=max(120.0, len(ids) / 5),
                   what="every payout settled", poll_s=0.2)
        finished = time.monotonic()
        cpu = {"workers": workers.cpu_seconds() - cpu0["workers"], "ingest": ingest.cpu_seconds() - cpu0["ingest"]}
        with conn.cursor() as cur:
            cur.execute("SELECT extract(epoch FROM completed_at)::float8 FROM payouts WHERE state = 'paid' ORDER BY completed_at")
            stamps = [t for (t,) in cur.fetchall()]
            cur.execute("SELECT state, count(*) FROM payouts GROUP BY state")
            states = dict(cur.fetchall())
            cur.execute("SELECT originator_conversation_id FROM payouts")
            ours = {ocid for (ocid,) in cur.fetchall()}
            cur.execute(
                "SELECT coalesce(sum(e.amount_cents), 0) FROM entries e JOIN accounts a ON a.id = e.account_id "
                "WHERE a.kind = 'payouts_in_flight'"
            )
            in_flight = int(cur.fetchone()[0])
        sim = httpx.get(f"{sim_url}/sim/payments", timeout=30).json()
        paid_once = all(sim["counts"].get(ocid) == 1 for ocid in ours)
        checks = {
            "ok": states.get("paid") == len(ids) and sim["count"] == len(ids) and paid_once and in_flight == 0,
            "states": states,
            "simulator_payments": sim["count"],
            "each_paid_exactly_once": paid_once,
            "payouts_in_flight_cents": in_flight,
        }
        return {
            **steady_rates(stamps, "per_s"),
            "wall_per_s": rounded(len(ids) / (finished - started)),
            "cpu_ms_per_payout": {k: round(v * 1000 / len(ids), 2) for k, v in cpu.items()},
            "checks": checks,
        }
    finally:
        conn.close()
        workers.stop()
        ingest.stop()
        res.drop_database(database)


def run_baseline(res: Resources, sim_url: str, sink_url: str, credential: str, s: dict[str, Any], rep: int) -> dict[str, Any]:
    httpx.post(f"{sim_url}/sim/reset", timeout=10).raise_for_status()
    httpx.post(f"{sink_url}/reset", timeout=10).raise_for_status()
    token = httpx.get(f"{sim_url}/oauth/v1/generate?grant_type=client_credentials",
                      auth=("sim-consumer-key", "sim-consumer-secret"), timeout=10).json()["access_token"]
    total = s["payouts"]
    counts = [total // s["processes"] + (1 if p < total % s["processes"] else 0) for p in range(s["processes"])]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        started = time.monotonic()
        for p, count in enumerate(counts):
            procs.append(subprocess.Popen(
                [PYTHON, "-m", "bench.payouts_baseline", "--simulator", sim_url,
                 "--result-url", f"{sink_url}/cb/{TOKEN}/b2c/result", "--token", token, "--credential", credential,
                 "--prefix", f"{res.run_id}_{rep}_{p}", "--count", str(count), "--threads", str(s["threads"])],
                cwd=res.tmp, stdout=subprocess.PIPE, env=fleetpay_env(res, "postgres"),
            ))

        def all_back() -> bool:
            if any(p.poll() not in (None, 0) for p in procs):
                raise RuntimeError("a baseline client failed")
            return httpx.get(f"{sink_url}/stats", timeout=10).json()["count"] >= total

        wait_until(all_back,
                   timeout_s=max(120.0, total / 5), what="every baseline result callback", poll_s=0.2)
        finished = time.monotonic()
        outcomes: dict[str, int] = {}
        import json

        for proc in procs:
            out, _ = proc.communicate(timeout=60)
            for key, value in json.loads(out or b"{}").items():
                outcomes[key] = outcomes.get(key, 0) + value
        stamps = sorted(httpx.get(f"{sink_url}/stats?all=1", timeout=10).json()["arrivals"])
        sim = httpx.get(f"{sim_url}/sim/payments", timeout=30).json()
        return {
            **steady_rates(stamps, "per_s"),
            "wall_per_s": rounded(total / (finished - started)),
            "checks": {"ok": outcomes.get("accepted") == total and sim["count"] == total,
                       "accepted": outcomes.get("accepted"), "simulator_payments": sim["count"]},
        }
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def run(res: Resources, *, quick: bool) -> dict[str, Any]:
    from workers.daraja.credential import security_credential

    s = sizes(quick)
    assert s["drivers"] <= s["fleet"]
    sim_port, sink_port = free_port(), free_port()
    sim_url, sink_url = f"http://{HOST}:{sim_port}", f"http://{HOST}:{sink_port}"
    env = fleetpay_env(res, fleet_template(res, s["fleet"]))
    simulator = res.start("simulator", [PYTHON, "-m", "cli", "simulator", "--host", HOST, "--port", str(sim_port),
                                        "--result-delay-ms", str(RESULT_DELAY_MS)], env)
    sink = res.start("sink", [PYTHON, "-m", "bench.callback_sink", "--host", HOST, "--port", str(sink_port)], env)
    wait_http(f"{sim_url}/healthz", simulator)
    wait_http(f"{sink_url}/healthz", sink)
    cert = httpx.get(f"{sim_url}/sim/cert.pem", timeout=10).content
    (res.tmp / "simulator-cert.pem").write_bytes(cert)
    credential = security_credential("sim-initiator-password", cert)

    runs: dict[str, list[dict[str, Any]]] = {"fleetpay": [], "baseline": []}
    try:
        for rep in range(s["reps"]):
            for side in ("fleetpay", "baseline"):
                sim_cpu0 = simulator.cpu_seconds()
                if side == "fleetpay":
                    result = run_fleetpay(res, sim_url, s, rep)
                else:
                    result = run_baseline(res, sim_url, sink_url, credential, s, rep)
                result["simulator_cpu_ms_per_payout_incl_setup"] = round((simulator.cpu_seconds() - sim_cpu0) * 1000 / s["payouts"], 2)
                runs[side].append(result)
                say(f"payouts: rep {rep + 1}/{s['reps']} {side:8s} {result['steady_per_s']:7.1f} settled/s "
                    f"(span {result['span_per_s']}, wall {result['wall_per_s']}) checks {'ok' if result['checks']['ok'] else result['checks']}")
    finally:
        with contextlib.suppress(Exception):
            simulator.stop()
            sink.stop()

    settled = median([r["steady_per_s"] for r in runs["fleetpay"]])
    baseline = median([r["steady_per_s"] for r in runs["baseline"]])
    return {
        "sizes": {**s, "result_delay_ms": RESULT_DELAY_MS},
        "figures": {
            "payouts": s["payouts"],
            "workers": f"{s['processes']} processes x {s['threads']} threads",
            "settled_per_s": rounded(settled),
            "baseline_per_s": rounded(baseline),
            "ratio": ratio(settled, baseline),
            "per_rep_ratio": [ratio(f["steady_per_s"], b["steady_per_s"]) for f, b in zip(runs["fleetpay"], runs["baseline"], strict=True)],
            "checks_ok": all(r["checks"]["ok"] for side in runs.values() for r in side),
        },
        "runs": runs,
    }
