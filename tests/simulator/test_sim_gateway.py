"""Unknown paths and wrong methods get the gateway's JSON envelope, not Starlette's plain text."""

from __future__ import annotations

import pytest
from sim_harness import Daraja

ENVELOPE = {"requestId", "errorCode", "errorMessage"}


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/"),
    ("POST", "/mpesa/b2c/v2/paymentrequest"),
    ("POST", "/mpesa/stkpush/v2/processrequest"),
    ("POST", "/mpesa/transactionstatus/v1/registerurl"),
    ("GET", "/oauth/v2/generate"),
])
def test_unknown_paths_are_404_001_01(daraja: Daraja, method: str, path: str) -> None:
    response = daraja.http.request(method, path, headers={"Authorization": f"Bearer {daraja.token()}"})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == ENVELOPE
    assert (body["errorCode"], body["errorMessage"]) == ("404.001.01", "Resource not found")


@pytest.mark.parametrize(("method", "path"), [
    ("PUT", "/mpesa/b2c/v3/paymentrequest"),
    ("DELETE", "/mpesa/stkpush/v1/processrequest"),
    ("PATCH", "/mpesa/stkpushquery/v1/query"),
    ("POST", "/oauth/v1/generate"),
])
def test_wrong_methods_are_405_001(daraja: Daraja, method: str, path: str) -> None:
    response = daraja.http.request(method, path, headers={"Authorization": f"Bearer {daraja.token()}"})
    assert response.status_code == 405
    body = response.json()
    assert set(body) == ENVELOPE
    assert (body["errorCode"], body["errorMessage"]) == ("405.001", f"{method} Method Not Allowed")
    allowed = {m.strip() for m in response.headers["allow"].split(",")}
    assert allowed == ({"GET", "HEAD"} if "oauth" in path else {"POST"})


def test_get_on_a_post_api_stays_404_001_04(daraja: Daraja) -> None:
    response = daraja.http.get("/mpesa/stkpush/v1/processrequest",
                               headers={"Authorization": f"Bearer {daraja.token()}"})
    assert (response.status_code, response.json()["errorCode"]) == (404, "404.001.04")


def test_the_simulators_own_routes_keep_their_plain_answers(daraja: Daraja) -> None:
    missing = daraja.http.get("/sim/nothing-here")
    assert (missing.status_code, missing.text) == (404, "Not Found")
    wrong = daraja.http.delete("/healthz")
    assert (wrong.status_code, wrong.text) == (405, "Method Not Allowed")
    assert daraja.http.put("/sim/payments").status_code == 405
