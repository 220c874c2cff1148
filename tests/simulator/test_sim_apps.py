"""Daraja apps and products: a token works only on the APIs of its own app's products."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from sim_harness import Daraja

from simulator import DarajaApp, SimulatorConfig

C2B_APP = DarajaApp("c2b-key", "c2b-secret", products=frozenset({"c2b"}))
B2C_APP = DarajaApp("b2c-key", "b2c-secret", products=frozenset({"b2c"}))
EXPRESS_APP = DarajaApp("stk-key", "stk-secret", products=frozenset({"express"}))
NO_PRODUCT = {"requestId", "errorCode", "errorMessage"}


def _calls(daraja: Daraja) -> dict[str, Callable[[str], httpx.Response]]:
    """One call per API, each made with the given token."""
    short_code = daraja.config.short_code
    pull = {"ShortCode": short_code, "StartDate": "2024-08-04 08:36:00",
            "EndDate": "2024-08-05 08:36:00", "OffSetValue": "0"}
    register = {"ShortCode": short_code, "ResponseType": "Completed",
                "ConfirmationURL": daraja.cb("c2b/confirm"), "ValidationURL": daraja.cb("c2b/validate")}
    simulate = {"ShortCode": short_code, "CommandID": "CustomerPayBillOnline", "Amount": 10,
                "Msisdn": "254708374149", "BillRefNumber": "025"}
    pull_register = {"ShortCode": short_code, "RequestType": "Pull",
                     "NominatedNumber": "254708374149", "CallBackURL": daraja.cb("pull")}
    return {
        "c2b registerurl": lambda t: daraja.post("/mpesa/c2b/v2/registerurl", register, token=t),
        "c2b simulate": lambda t: daraja.post("/mpesa/c2b/v2/simulate", simulate, token=t),
        "pull register": lambda t: daraja.post("/pulltransactions/v1/register", pull_register, token=t),
        "pull query": lambda t: daraja.post("/pulltransactions/v1/query", pull, token=t),
        "b2c": lambda t: daraja.post("/mpesa/b2c/v3/paymentrequest", daraja.b2c_body(), token=t),
        "transaction status": lambda t: daraja.post(
            "/mpesa/transactionstatus/v1/query",
            daraja.org_query_body("TransactionStatusQuery", "status", TransactionID="SZZ0000000"),
            token=t),
        "account balance": lambda t: daraja.post(
            "/mpesa/accountbalance/v1/query", daraja.org_query_body("AccountBalance", "balance"),
            token=t),
        "stk push": lambda t: daraja.stk_push(token=t)[1],
        "stk query": lambda t: daraja.stk_query("ws_CO_010120240000000000000000", token=t),
    }


PRODUCT_OF = {"c2b registerurl": "c2b", "c2b simulate": "c2b", "pull register": "c2b",
              "pull query": "c2b", "b2c": "b2c", "transaction status": "b2c",
              "account balance": "b2c", "stk push": "express", "stk query": "express"}


def _assert_no_product(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    body = response.json()
    assert set(body) == NO_PRODUCT
    assert body["errorCode"] == "401.003.01"
    assert body["errorMessage"] == ("Error Occurred - Invalid Access Token - "
                                    "Invalid API call as no apiproduct match found")


@pytest.mark.parametrize("app", [C2B_APP, B2C_APP, EXPRESS_APP], ids=lambda a: a.consumer_key)
def test_each_app_reaches_exactly_its_products(make_daraja, app: DarajaApp) -> None:
    daraja = make_daraja(apps=(C2B_APP, B2C_APP, EXPRESS_APP))
    token = daraja.token_for(app.consumer_key, app.consumer_secret)
    (product,) = app.products
    for name, call in _calls(daraja).items():
        response = call(token)
        if PRODUCT_OF[name] == product:
            # Reached the API: whatever it answers, it is not the gateway's product refusal.
            assert response.status_code != 401, f"{name}: {response.text}"
            assert response.json().get("errorCode") != "401.003.01", name
        else:
            _assert_no_product(response)


def test_the_default_app_keeps_every_product(make_daraja) -> None:
    daraja = make_daraja(apps=(C2B_APP, B2C_APP))
    token = daraja.token()  # sim-consumer-key / sim-consumer-secret
    for name, call in _calls(daraja).items():
        response = call(token)
        assert response.status_code != 401 and response.json().get("errorCode") != "401.003.01", name


def test_an_app_listing_the_default_key_replaces_the_default_app(make_daraja) -> None:
    restricted = DarajaApp("sim-consumer-key", "sim-consumer-secret", products=frozenset({"express"}))
    daraja = make_daraja(apps=(restricted,))
    assert daraja.config.daraja_apps == (restricted,)
    _assert_no_product(daraja.pay_b2c()[1])
    assert daraja.stk_push()[1].status_code == 200


def test_refusal_order_method_then_token_then_product(make_daraja) -> None:
    daraja = make_daraja(apps=(C2B_APP,))
    token = daraja.token_for(C2B_APP.consumer_key, C2B_APP.consumer_secret)
    as_get = daraja.http.get("/mpesa/b2c/v3/paymentrequest", headers={"Authorization": f"Bearer {token}"})
    assert as_get.json()["errorCode"] == "404.001.04"
    assert daraja.post("/mpesa/b2c/v3/paymentrequest", daraja.b2c_body(),
                       token="unknown-token").json()["errorCode"] == "404.001.03"
    daraja.http.post("/sim/tokens/expire")
    expired = daraja.post("/mpesa/b2c/v3/paymentrequest", daraja.b2c_body(), token=token)
    assert expired.json()["errorCode"] == "404.001.03"  # a dead token is refused as such
    assert daraja.sim_payments()["count"] == 0


def test_tokens_are_single_active_per_app(make_daraja) -> None:
    daraja = make_daraja(apps=(C2B_APP, B2C_APP))
    c2b_first = daraja.token_for(C2B_APP.consumer_key, C2B_APP.consumer_secret)
    b2c_token = daraja.token_for(B2C_APP.consumer_key, B2C_APP.consumer_secret)
    # Another app's new token leaves this one alone...
    assert daraja.post("/mpesa/c2b/v2/registerurl", {
        "ShortCode": daraja.config.short_code, "ResponseType": "Completed",
        "ConfirmationURL": daraja.cb("c2b/confirm"), "ValidationURL": daraja.cb("c2b/validate"),
    }, token=c2b_first).status_code == 200
    # ...while the same app's new token supersedes it.
    c2b_second = daraja.token_for(C2B_APP.consumer_key, C2B_APP.consumer_secret)
    simulate = {"ShortCode": daraja.config.short_code, "CommandID": "CustomerPayBillOnline",
                "Amount": 10, "Msisdn": "254708374149", "BillRefNumber": "025"}
    stale = daraja.post("/mpesa/c2b/v2/simulate", simulate, token=c2b_first)
    assert (stale.status_code, stale.json()["errorCode"]) == (404, "404.001.03")
    assert daraja.post("/mpesa/c2b/v2/simulate", simulate, token=c2b_second).status_code == 200
    assert daraja.post("/mpesa/b2c/v3/paymentrequest", daraja.b2c_body(),
                       token=b2c_token).status_code == 200


def test_oauth_needs_a_matching_key_and_secret(make_daraja) -> None:
    daraja = make_daraja(apps=(C2B_APP, B2C_APP))
    crossed = daraja.fetch_token(C2B_APP.consumer_key, B2C_APP.consumer_secret)
    assert (crossed.status_code, crossed.json()["errorCode"]) == (400, "400.008.01")
    assert daraja.fetch_token(B2C_APP.consumer_key, B2C_APP.consumer_secret).status_code == 200


@pytest.mark.parametrize("build", [
    lambda: SimulatorConfig(apps=(C2B_APP, DarajaApp("c2b-key", "other", products=frozenset({"b2c"})))),
    lambda: DarajaApp("k", "s", products=frozenset({"stk"})),
    lambda: DarajaApp("k", "s", products="c2b"),
    lambda: DarajaApp("k", "s", products=frozenset()),
    lambda: DarajaApp("", "s"),
    lambda: SimulatorConfig(apps=("c2b-key",)),
])
def test_bad_app_configs_are_refused(build: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        build()


def test_apps_accept_any_iterable_and_default_to_every_product() -> None:
    config = SimulatorConfig(apps=[DarajaApp("k", "s", products=["c2b", "b2c"]), DarajaApp("k2", "s2")])
    assert isinstance(config.apps, tuple)
    assert config.apps[0].products == frozenset({"c2b", "b2c"})
    assert config.apps[1].products == frozenset({"c2b", "b2c", "express"})
    assert [app.consumer_key for app in config.daraja_apps] == ["sim-consumer-key", "k", "k2"]
