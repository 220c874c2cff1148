"""The simulator's own routes: record, callbacks, reset, certificate, admin token, shutdown."""

from __future__ import annotations

import time

from cryptography import x509
from sim_harness import Daraja, Receiver, Reply, ServerThread, wait_until

from simulator import SimulatorConfig, build_app
from simulator.credentials import SimulatorCredentials


def test_healthz_and_certificate(daraja: Daraja) -> None:
    assert daraja.http.get("/healthz").json() == {"status": "ok"}
    cert = daraja.http.get("/sim/cert.pem")
    assert cert.headers["content-type"].startswith("application/x-pem-file")
    assert x509.load_pem_x509_certificate(cert.content).public_key().key_size == 2048


def test_callbacks_are_recorded_with_their_http_status(daraja: Daraja) -> None:
    daraja.reply("b2c/result", Reply(status=503, body={"busy": True}))
    body, _ = daraja.pay_b2c()
    attempts = wait_until(lambda: daraja.http.get(
        "/sim/callbacks", params={"ref": body["OriginatorConversationID"]}).json()["callbacks"])
    assert attempts[0]["kind"] == "b2c_result"
    assert attempts[0]["status_code"] == 503
    assert attempts[0]["url"].endswith(f"/cb/{daraja.tag}/b2c/result")


def test_unreachable_callback_url_is_recorded_as_an_error(daraja: Daraja) -> None:
    daraja.pay_b2c(ResultURL="http://127.0.0.1:9/cb/x/b2c/result")
    attempt = wait_until(lambda: daraja.http.get("/sim/callbacks").json()["callbacks"])[0]
    assert attempt["status_code"] is None and attempt["error"]


def test_replay_a_callback(daraja: Daraja) -> None:
    daraja.pay_b2c()
    first = daraja.wait_for("b2c/result")[0]
    # The receiver can see the POST before the simulator has recorded its answer: wait for it.
    attempt_id = wait_until(lambda: daraja.http.get("/sim/callbacks").json()["callbacks"])[0]["id"]
    replayed = daraja.http.post(f"/sim/callbacks/{attempt_id}/replay").json()["callback"]
    assert replayed["status_code"] == 200
    second = daraja.wait_for("b2c/result", count=2)[1]
    assert second.body == first.body
    assert daraja.sim_payments()["count"] == 1


def test_reset_forgets_everything(daraja: Daraja) -> None:
    body, _ = daraja.pay_b2c()
    daraja.simulate_c2b()
    daraja.faults({"mode": "http_5xx"})
    assert daraja.http.post("/sim/reset").json() == {"reset": True}
    assert daraja.sim_payments()["count"] == 0
    assert daraja.http.get("/sim/c2b").json()["payments"] == []
    assert daraja.http.get("/sim/faults").json()["faults"] == []
    assert daraja.http.get("/sim/balances").json()["utility"] == "1000000.00"
    daraja.forget_token()  # tokens were forgotten too
    assert daraja.post("/mpesa/b2c/v3/paymentrequest", body).status_code == 200  # ID is new again


def test_admin_token(make_daraja) -> None:
    daraja = make_daraja(admin_token="s3cret")
    assert daraja.http.get("/sim/payments").status_code == 401
    ok = daraja.http.get("/sim/payments", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    assert daraja.http.get("/sim/cert.pem").status_code == 200  # clients need it


def test_shutdown_cancels_pending_callbacks(credentials: SimulatorCredentials,
                                            receiver: Receiver) -> None:
    config = SimulatorConfig(slow_callback_delay_ms=60_000)
    server = ServerThread(build_app(config, credentials=credentials)).start()
    daraja = Daraja(server.url, config, receiver)
    try:
        daraja.faults({"mode": "slow_callback"})
        daraja.pay_b2c()
        assert daraja.http.get("/sim/callbacks").json()["pending"] == 1
    finally:
        daraja.close()
        started = time.monotonic()
        server.stop()
    assert time.monotonic() - started < 3
