"""What real Daraja deployments need, against the simulator over HTTP: status queries that back off
and end, Pull reconciliation that degrades to one line, one credential set per product, an
outbound rate limit, payouts above B2C's maximum split, and the B2C float checked."""

from __future__ import annotations

import json
import tempfile
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select, update

from db.models import Driver, FloatObservation, Payout
from tests.flow.test_payouts import pay_fares, queue_faults, settle, sim_payments
from tests.support import approve_request, fleetpay, serve, two_people, wait_until


@pytest.fixture(autouse=True)
def no_faults_left(simulator):  # type: ignore[no-untyped-def]
    """A fault queued for more requests than a test makes must not reach the next test."""
    yield
    httpx.delete(f"{simulator}/sim/faults", timeout=10)


def payout_of(sessions, payout_id: int) -> Payout:  # type: ignore[no-untyped-def]
    with sessions() as session:
        return session.get(Payout, payout_id)


def unknown_payout(ingest_url: str, simulator: str, sessions, vehicle: str) -> int:  # type: ignore[no-untyped-def]
    """A payout whose HTTP answer and result were both lost: only status queries can settle it."""
    queue_faults(simulator, {"mode": "http_timeout_after_accept", "hang_s": 3}, {"mode": "drop_callback"})
    [payout_id] = pay_fares(ingest_url, sessions, vehicle, 1)
    wait_until(lambda: payout_of(sessions, payout_id).state == "unknown", what="the payout to be unknown")
    return payout_id


def sweep(settings) -> None:  # type: ignore[no-untyped-def]
    from workers import runtime
    from workers.sweep_payouts import advance_open_payouts

    advance_open_payouts(runtime.sessions(), settings, age_s=1)


def test_status_queries_back_off_and_end_in_review(ingest_url, simulator, worker, sessions, settings, driver, database_url) -> None:  # type: ignore[no-untyped-def]
    _, vehicle = driver
    payout_id = unknown_payout(ingest_url, simulator, sessions, vehicle)
    queue_faults(simulator, {"mode": "drop_callback", "api": "transaction_status", "times": 10})  # never answered
    capped = settings.model_copy(update={"payout_status_queries_max": 3, "payout_status_backoff_max_s": 2})

    def reviewed() -> bool:
        sweep(capped)
        return payout_of(sessions, payout_id).state == "review"

    wait_until(reviewed, timeout_s=60, what="the payout to reach review")
    payout = payout_of(sessions, payout_id)
    assert (payout.status_queries, payout.review_reason) == (3, "status_queries_exhausted:3")
    listed = json.loads(fleetpay("payouts", "list", "--state", "review", "--json", database_url=database_url).stdout)
    assert payout_id in [p["id"] for p in listed["payouts"]]
    sweep(capped)  # review is never asked about again
    assert payout_of(sessions, payout_id).status_queries == 3
    resolve_as_an_operator(simulator, sessions, payout_id, database_url)


def resolve_as_an_operator(simulator: str, sessions, payout_id: int, database_url: str) -> None:  # type: ignore[no-untyped-def]
    """An operator asks to ask M-Pesa once more (its answers come through now), another person
    approves: it was paid."""
    httpx.delete(f"{simulator}/sim/faults", timeout=10)
    asker, approver = two_people(sessions)
    asked = fleetpay("payouts", "resolve", str(payout_id), "--reason", "the driver says it arrived", "--user", asker,
                     database_url=database_url)
    assert f"ask M-Pesa what became of payout {payout_id}" in asked.stdout
    assert payout_of(sessions, payout_id).status_check_wanted_at is None  # nothing asked before the approval
    approve_request(asked, approver, database_url)
    wait_until(lambda: payout_of(sessions, payout_id).state == "paid", what="the resolved payout to be paid")
    assert payout_of(sessions, payout_id).status_check_wanted_at is None  # the query was taken
    assert sim_payments(simulator)[payout_of(sessions, payout_id).originator_conversation_id] == 1


def test_a_status_query_refused_for_good_sends_the_payout_to_review_at_once(ingest_url, simulator, worker, sessions, settings, driver, database_url) -> None:  # type: ignore[no-untyped-def]
    _, vehicle = driver
    payout_id = unknown_payout(ingest_url, simulator, sessions, vehicle)
    queue_faults(simulator, {"mode": "result_failure", "api": "transaction_status", "result_code": 2001})
    sweep(settings)
    wait_until(lambda: payout_of(sessions, payout_id).state == "review", what="the payout to reach review")
    payout = payout_of(sessions, payout_id)
    assert (payout.status_queries, payout.review_reason) == (1, "status_query_error:2001")
    resolve_as_an_operator(simulator, sessions, payout_id, database_url)


def reconcile_mpesa(database_url: str, **env: str):  # type: ignore[no-untyped-def]
    import os

    environment = {**os.environ, "FLEETPAY_LOG_JSON": "false", "FLEETPAY_DATABASE_URL": database_url, **env}
    return fleetpay("reconcile", "--mpesa", "--json", env=environment, check=False)


def test_pull_reconciliation_off_or_refused_is_one_line_and_a_documented_exit(fresh_sessions, simulator, worker) -> None:  # type: ignore[no-untyped-def]
    from simulator import DarajaApp, SimulatorConfig, build_app

    database_url = fresh_sessions.kw["bind"].url.render_as_string(hide_password=False)
    off = reconcile_mpesa(database_url)
    assert off.returncode == 4 and json.loads(off.stdout)["ok"] is True
    assert off.stderr.strip().count("\n") == 0 and "FLEETPAY_PULL_ENABLED" in off.stderr

    no_pull = SimulatorConfig(apps=(DarajaApp("sim-consumer-key", "sim-consumer-secret", products=frozenset({"b2c"})),))
    with serve(build_app(no_pull)) as url:
        refused = reconcile_mpesa(database_url, FLEETPAY_PULL_ENABLED="true", FLEETPAY_DARAJA_BASE_URL=url)
    assert refused.returncode == 4, refused.stderr
    assert refused.stderr.strip().count("\n") == 0 and "401.003.01" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    assert "401.003.01" in json.loads(refused.stdout)["mpesa"]["error"]

    with serve(build_app(SimulatorConfig())) as url:
        ran = reconcile_mpesa(database_url, FLEETPAY_PULL_ENABLED="true", FLEETPAY_DARAJA_BASE_URL=url)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["mpesa"]["listed_by_mpesa"] == 0


C2B_APP = ("c2b-app-key", "c2b-app-secret")
B2C_APP = ("b2c-app-key", "b2c-app-secret")


@pytest.fixture
def two_apps(settings, redis_url):  # type: ignore[no-untyped-def]
    """A Daraja with one app per product, and fleetpay's settings for it."""
    from simulator import DarajaApp, SimulatorConfig, build_app

    config = SimulatorConfig(
        apps=(DarajaApp(*C2B_APP, products=frozenset({"c2b"})), DarajaApp(*B2C_APP, products=frozenset({"b2c"}))),
        short_code="4165253", b2c_short_code="600100", result_delay_ms=20,
    )
    with serve(build_app(config)) as url, tempfile.TemporaryDirectory() as folder:
        certificate = Path(folder) / "cert.pem"
        certificate.write_bytes(httpx.get(f"{url}/sim/cert.pem").content)
        yield url, settings.model_copy(update={
            "daraja_base_url": url, "daraja_certificate_path": str(certificate),
            "daraja_c2b_consumer_key": SecretStr(C2B_APP[0]), "daraja_c2b_consumer_secret": SecretStr(C2B_APP[1]),
            "daraja_c2b_short_code": "4165253",
            "daraja_b2c_consumer_key": SecretStr(B2C_APP[0]), "daraja_b2c_consumer_secret": SecretStr(B2C_APP[1]),
            "daraja_b2c_short_code": "600100",
        })


def client_for(settings, redis_url: str):  # type: ignore[no-untyped-def]
    import redis

    from workers.daraja.client import DarajaClient

    return DarajaClient(settings, redis.Redis.from_url(redis_url))


def test_each_product_uses_its_own_app_and_shortcode(two_apps, redis_url) -> None:  # type: ignore[no-untyped-def]
    from workers.daraja.outcomes import Outcome

    url, settings = two_apps
    daraja = client_for(settings, redis_url)
    occ = f"fp_two_{uuid.uuid4().hex[:10]}"
    paid = daraja.b2c_payment(originator_conversation_id=occ, msisdn="254722000777", amount_cents=1_000, remarks="two apps")
    assert paid.outcome is Outcome.ACCEPTED, paid
    assert daraja.transaction_status(originator_conversation_id=occ).outcome is Outcome.ACCEPTED
    assert daraja.account_balance().outcome is Outcome.ACCEPTED
    assert daraja.register_c2b_urls().outcome is Outcome.ACCEPTED
    [request] = [r for r in httpx.get(f"{url}/sim/b2c").json()["requests"] if r["originator_conversation_id"] == occ]
    assert request["status"] == "completed"  # PartyA was the B2C shortcode, paid from the B2C app

    # One app's credentials used for the other's product: refused at once, with Daraja's code.
    crossed = settings.model_copy(update={"daraja_b2c_consumer_key": SecretStr(C2B_APP[0]),
                                          "daraja_b2c_consumer_secret": SecretStr(C2B_APP[1])})
    refused = client_for(crossed, redis_url).b2c_payment(
        originator_conversation_id=f"fp_x_{uuid.uuid4().hex[:10]}", msisdn="254722000777", amount_cents=1_000, remarks="x")
    assert (refused.outcome, refused.code) == (Outcome.REJECTED, "401.003.01")


def test_the_workers_never_exceed_the_rate_limit_under_a_burst(settings, simulator, redis_url) -> None:  # type: ignore[no-untyped-def]
    from workers.daraja.outcomes import Outcome

    limited = settings.model_copy(update={"daraja_requests_per_second": 4})
    clients = [client_for(limited, redis_url) for _ in range(3)]  # three workers, one limit in Redis
    occs = [f"fp_rl_{uuid.uuid4().hex[:10]}" for _ in range(24)]
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(
            lambda n: clients[n % 3].b2c_payment(originator_conversation_id=occs[n], msisdn="254722000778",
                                                 amount_cents=1_000, remarks="burst"),
            range(len(occs)),
        ))
    assert {answer.outcome for answer in answers} == {Outcome.ACCEPTED}
    received = [r["received_at"] for r in httpx.get(f"{simulator}/sim/b2c").json()["requests"] if r["originator_conversation_id"] in occs]
    per_second = Counter(int(datetime.fromisoformat(at).timestamp()) for at in received)
    assert len(received) == 24 and max(per_second.values()) <= 4, per_second


def test_a_payout_above_the_b2c_maximum_goes_out_in_parts_each_paid_once(ingest_url, simulator, worker, sessions, driver, database_url) -> None:  # type: ignore[no-untyped-def]
    import os

    code, vehicle = driver
    with sessions.begin() as session:
        session.execute(update(Driver).where(Driver.code == code).values(instant_payouts=False))
    assert pay_fares(ingest_url, sessions, vehicle, 2, amount="250.00") == []  # accrued: KES 250
    env = {**os.environ, "FLEETPAY_LOG_JSON": "false", "FLEETPAY_B2C_MAXIMUM_CENTS": "10000"}  # KES 100 a payment
    fleetpay("payouts", "send", "--driver", code, database_url=database_url, env=env)
    with sessions() as session:
        payouts = session.execute(
            select(Payout).join(Driver, Driver.id == Payout.driver_id).where(Driver.code == code).order_by(Payout.id)
        ).scalars().all()
    assert [p.amount_cents for p in payouts] == [10_000, 10_000, 5_000]
    assert len({p.originator_conversation_id for p in payouts}) == 3
    settle(sessions, [p.id for p in payouts])
    paid = sim_payments(simulator)
    assert [paid[p.originator_conversation_id] for p in payouts] == [1, 1, 1]


def test_the_float_is_asked_shown_and_low_before_payouts_fail(simulator, worker, sessions, ingest_url, fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    import os

    from workers.check_float import check_float

    check_float.send()
    wait_until(lambda: _observations(sessions) > 0, what="M-Pesa's Account Balance answer")
    utility_kes = httpx.get(f"{simulator}/sim/balances").json()["utility"]
    with sessions() as session:
        observed = session.execute(
            select(FloatObservation.utility_available_cents).order_by(FloatObservation.id.desc()).limit(1)
        ).scalar_one()
    assert abs(observed - int(Decimal(utility_kes) * 100)) < 100_000_00  # the same account (payouts may move it)
    assert "fleetpay_mpesa_utility_available_cents" in httpx.get(f"{ingest_url}/metrics").text

    database_url = sessions.kw["bind"].url.render_as_string(hide_password=False)
    low = fleetpay("reconcile", database_url=database_url, check=False,
                   env={**os.environ, "FLEETPAY_LOG_JSON": "false", "FLEETPAY_FLOAT_LOW_CENTS": str(10**15)})
    assert "utility account is low" in low.stderr
    report = json.loads(fleetpay("reconcile", "--json", database_url=database_url, check=False).stdout)
    assert report["float"]["utility_available_cents"] > 0 and report["float"]["low"] is False


def _observations(sessions) -> int:  # type: ignore[no-untyped-def]
    with sessions() as session:
        return len(session.execute(select(FloatObservation.id)).all())
