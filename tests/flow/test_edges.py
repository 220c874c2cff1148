"""The ingest's edges over real HTTP, as Safaricom, a proxy, a stranger or a broken client reach them:

- the source-IP allowlist believes ``X-Forwarded-For`` only from ``FLEETPAY_TRUSTED_PROXIES``, never
  because uvicorn did (served exactly as ``fleetpay ingest`` serves it);
- numbers too long to parse, numbers no decimal holds and nesting deeper than any Daraja body get 400
  with a reason, on every callback route, and the body is kept; the admin API answers 400 to them;
- the confirmation refuses what the worker would refuse (the amount maximum, impossible years);
- an oversized body is kept as its first 4 KiB with its size;
- a client that hangs up mid-body costs one info line, no traceback;
- and, fuzzed: whatever an authenticated caller sends, nothing answers 5xx and every refused body is
  kept in the inbox as ``rejected``.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog
import uvicorn
from hypothesis import HealthCheck, given, settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import select

from db.models import Inbox
from ingest import serving
from ingest.app import CALLBACK_ROUTES, VALIDATION_KIND, build_app
from ingest.bodies import PREFIX_KEPT_BYTES, body_text
from tests.support import SAMPLES, TOKEN, c2b_body, free_port, next_receipt, wait_until

JSON = {"content-type": "application/json"}
SAFARICOM_IP = "196.201.214.200"  # on the default allowlist

KIND = {route.path: route.kind for route in CALLBACK_ROUTES} | {"c2b/validate": VALIDATION_KIND}
ROUTES = list(KIND)
SAMPLE = {
    "c2b/confirm": "c2b_confirmation.json",
    "c2b/validate": "c2b_validation.json",
    "stk/result": "stk_callback_success.json",
    "b2c/result": "b2c_result_success.json",
    "b2c/timeout": "b2c_queue_timeout.json",
    "status/result": "transaction_status_result.json",
    "status/timeout": "transaction_status_result.json",
    "balance/result": "account_balance_result.json",
    "balance/timeout": "b2c_queue_timeout.json",
}
# Where each route's sample holds a number (as a JSON number, or a string the parser reads as one).
NUMERIC_FIELD = {
    "c2b/confirm": ("TransAmount",),
    "c2b/validate": ("TransAmount",),
    "stk/result": ("Body", "stkCallback", "ResultCode"),
    "b2c/result": ("Result", "ResultCode"),
    "b2c/timeout": ("Result", "ResultCode"),
    "status/result": ("Result", "ResultCode"),
    "status/timeout": ("Result", "ResultCode"),
    "balance/result": ("Result", "ResultCode"),
    "balance/timeout": ("Result", "ResultCode"),
}


# --- helpers --------------------------------------------------------------------------------------


class Raw(str):
    """JSON text written into a body as it is: numbers ``json.dumps`` cannot write (or would not)."""


def render(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(key)}: {render(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(render(item) for item in value) + "]"
    return json.dumps(value)


def fresh_sample(path: str) -> dict[str, Any]:
    """The route's Daraja sample with ids no other test uses, paying no account that exists: a copy
    that is acknowledged can shadow no other test's callback, nor pay any driver."""
    body = json.loads((SAMPLES / SAMPLE[path]).read_text())
    tag = uuid.uuid4().hex[:12]
    if path.startswith("c2b/"):
        body.update(TransID=next_receipt("Z"), BillRefNumber=f"NOSUCH{tag[:6].upper()}")
    elif path == "stk/result":
        callback = body["Body"]["stkCallback"]
        callback.update(CheckoutRequestID=f"ws_CO_fz{tag}", MerchantRequestID=f"fz-{tag}")
        for item in callback["CallbackMetadata"]["Item"]:
            if item["Name"] == "MpesaReceiptNumber":
                item["Value"] = next_receipt("Z")
    else:
        body["Result"]["OriginatorConversationID"] = f"fz_{tag}"
        for parameter in body["Result"].get("ResultParameters", {}).get("ResultParameter", []):
            if parameter["Key"] == "OriginatorConversationID":
                parameter["Value"] = f"fz_{tag}_paid"
    return body


def replaced(body: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    node: Any = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return body


def stored_as(raw: bytes) -> str:
    """The inbox text of a body: UTF-8 as it came, other bytes escaped, NUL spelled out."""
    return body_text(raw).replace("\x00", "\\x00")


def kept(sessions, kind: str, raw: bytes, *, status: str = "rejected") -> list[tuple[str, str | None]]:  # type: ignore[no-untyped-def]
    """The (status, reason) of every inbox row of ``kind`` that holds exactly this body."""
    with sessions() as session:
        return [
            tuple(row)
            for row in session.execute(
                select(Inbox.status, Inbox.reason).where(
                    Inbox.kind == kind, Inbox.status == status, Inbox.body == stored_as(raw)
                )
            ).all()
        ]


def post(base_url: str, path: str, raw: bytes, **headers: str) -> httpx.Response:
    with httpx.Client(base_url=base_url, timeout=30) as http:
        return http.post(f"/cb/{TOKEN}/{path}", content=raw, headers={**JSON, **headers})


@pytest.fixture(scope="module")
def admin_headers(settings) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {"Authorization": f"Bearer {settings.admin_token.get_secret_value()}"}


@pytest.fixture
def production_like(settings, engine, broker):  # type: ignore[no-untyped-def]
    """Serve an ingest built from ``settings`` with the uvicorn configuration ``fleetpay ingest``
    uses (``ingest.serving``), in a thread; yields a function that starts one and returns its URL."""
    started: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**changes: Any) -> str:
        app = build_app(settings.model_copy(update=changes), engine=engine, broker=broker)
        port = free_port()
        server = uvicorn.Server(serving.uvicorn_config(app, host="127.0.0.1", port=port))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_until(lambda: server.started or not thread.is_alive(), timeout_s=15, what="the ingest to start")
        assert server.started
        started.append((server, thread))
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in started:
        server.should_exit = True
        thread.join(timeout=15)


# --- 1. the allowlist and X-Forwarded-For ---------------------------------------------------------


def test_a_local_proxy_cannot_pass_the_allowlist_by_naming_a_safaricom_address(production_like) -> None:  # type: ignore[no-untyped-def]
    url = production_like(ip_allowlist_enabled=True, trusted_proxies=())
    forged = post(url, "c2b/confirm", b"{}", **{"X-Forwarded-For": SAFARICOM_IP})
    assert (forged.status_code, forged.text) == (403, "Forbidden")
    assert post(url, "c2b/validate", b"{}", **{"X-Forwarded-For": SAFARICOM_IP}).status_code == 403
    assert post(url, "c2b/confirm", b"{}", **{"Forwarded": f"for={SAFARICOM_IP}"}).status_code == 403


def test_a_configured_trusted_proxy_still_forwards_the_callers_address(production_like) -> None:  # type: ignore[no-untyped-def]
    url = production_like(ip_allowlist_enabled=True, trusted_proxies=("127.0.0.1",))
    assert post(url, "c2b/confirm", b"{}").status_code == 403  # the proxy itself is not Safaricom
    through = post(url, "c2b/confirm", b"{}", **{"X-Forwarded-For": SAFARICOM_IP})
    assert through.status_code == 400, through.text  # past the allowlist: refused for its content only


# --- 3. numbers and nesting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "reason"),
    [("1" * 5000, "number_too_long"), ("9" * 4000 + ".5", "number_too_long"), ("1E+9999999999999999999", "number_out_of_range")],
    ids=["5000 digits", "4000 digits and a decimal", "exponent past any decimal"],
)
@pytest.mark.parametrize("path", ROUTES)
def test_a_number_no_daraja_field_holds_is_refused_and_kept(ingest_url: str, sessions, path: str, number: str, reason: str) -> None:  # type: ignore[no-untyped-def]
    raw = render(replaced(fresh_sample(path), NUMERIC_FIELD[path], Raw(number))).encode()
    answer = post(ingest_url, path, raw)
    assert (answer.status_code, answer.json()) == (400, {"ResultCode": 1, "ResultDesc": f"Rejected: {reason}"})
    assert kept(sessions, KIND[path], raw) == [("rejected", reason)]


@pytest.mark.parametrize("depth", [40, 30_000], ids=["past the bound", "past the recursion limit"])
@pytest.mark.parametrize("path", ROUTES)
def test_deep_nesting_is_refused_and_kept(ingest_url: str, sessions, path: str, depth: int) -> None:  # type: ignore[no-untyped-def]
    body = fresh_sample(path)
    raw = render(body)[:-1].encode() + b', "Nested": ' + b"[" * depth + b"]" * depth + b"}"
    answer = post(ingest_url, path, raw)
    assert (answer.status_code, answer.json()) == (400, {"ResultCode": 1, "ResultDesc": "Rejected: too_deep"})
    assert kept(sessions, KIND[path], raw) == [("rejected", "too_deep")]


@pytest.mark.parametrize(
    "body",
    [
        {"older_than": "9" * 40 + "d"},
        {"older_than": "9" * 5000 + "d"},
        {"older_than": "99999999999w"},
        {"older_than": "1d" * 2000},
        {"older_than": "999999w" * 400},
    ],
    ids=["40 digits", "5000 digits", "past timedelta", "long", "long and past timedelta"],
)
def test_the_admin_api_refuses_an_overlong_duration_with_400(ingest_url: str, admin_headers, body) -> None:  # type: ignore[no-untyped-def]
    answer = httpx.post(f"{ingest_url}/admin/dlq/purge", json=body, headers=admin_headers, timeout=30)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "bad_request"


@pytest.mark.parametrize(
    "raw",
    [
        b'{"ids": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        b'{"ids": ' + b"[" * 40 + b"]" * 40 + b"}",
        b'{"ids": ["' + b"x" + b'"], "all": ' + b"1" * 5000 + b"}",
        b'{"all": 1E+9999999999999999999}',
    ],
    ids=["deeper than recursion", "deeper than any request", "5000 digits", "exponent past any decimal"],
)
@pytest.mark.parametrize("route", ["/admin/dlq/requeue", "/admin/dlq/purge"])
def test_the_admin_api_refuses_unbounded_json_with_400(ingest_url: str, admin_headers, route: str, raw: bytes) -> None:  # type: ignore[no-untyped-def]
    answer = httpx.post(f"{ingest_url}{route}", content=raw, headers={**admin_headers, **JSON}, timeout=30)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] == "bad_request"


def test_the_admin_api_refuses_an_overlong_limit_with_400(ingest_url: str, admin_headers) -> None:  # type: ignore[no-untyped-def]
    for limit in ("9" * 5000, "9" * 30, "-1"):
        answer = httpx.get(f"{ingest_url}/admin/dlq", params={"limit": limit}, headers=admin_headers, timeout=30)
        assert answer.status_code == 400, answer.text


# --- 4. the confirmation refuses what the worker would --------------------------------------------


def test_a_confirmation_over_the_amount_maximum_is_refused_at_the_edge(ingest_url: str, sessions, settings) -> None:  # type: ignore[no-untyped-def]
    over = settings.amount_max_cents + 100  # KES 250,001 with the default maximum
    raw = json.dumps(c2b_body(next_receipt("A"), f"{over // 100}.00", "NOSUCH")).encode()
    answer = post(ingest_url, "c2b/confirm", raw)
    assert (answer.status_code, answer.json()["ResultDesc"]) == (400, "Rejected: amount_too_large")
    assert kept(sessions, "c2b_confirmation", raw) == [("rejected", "amount_too_large")]
    big = json.dumps(c2b_body(next_receipt("A"), "300000.00", "NOSUCH")).encode()
    assert post(ingest_url, "c2b/confirm", big).json()["ResultDesc"] == "Rejected: amount_too_large"


@pytest.mark.parametrize("when", ["00010101000000", "99991231235959"], ids=["year 1", "year 9999"])
def test_a_confirmation_from_an_impossible_year_is_refused_at_the_edge(ingest_url: str, sessions, when: str) -> None:  # type: ignore[no-untyped-def]
    raw = json.dumps(c2b_body(next_receipt("Y"), "200.00", "NOSUCH", at=when)).encode()
    answer = post(ingest_url, "c2b/confirm", raw)
    assert (answer.status_code, answer.json()["ResultDesc"]) == (400, "Rejected: time_out_of_range")
    assert kept(sessions, "c2b_confirmation", raw) == [("rejected", "time_out_of_range")]
    stk = fresh_sample("stk/result")
    for item in stk["Body"]["stkCallback"]["CallbackMetadata"]["Item"]:
        if item["Name"] == "TransactionDate":
            item["Value"] = when if when.startswith("0") else Raw(when)  # a JSON number has no leading 0
    assert post(ingest_url, "stk/result", render(stk).encode()).json()["ResultDesc"] == "Rejected: time_out_of_range"


# --- 5. oversized bodies ----------------------------------------------------------------------------


def test_an_oversized_body_is_kept_as_its_prefix_and_its_size(ingest_url: str, sessions, settings) -> None:  # type: ignore[no-untyped-def]
    body = c2b_body(next_receipt("O"), "200.00", "NOSUCH")
    body["InvoiceNumber"] = "x" * (settings.body_max_bytes + 1000)
    raw = json.dumps(body).encode()
    answer = post(ingest_url, "c2b/confirm", raw)
    assert (answer.status_code, answer.json()) == (413, {"ResultCode": 1, "ResultDesc": "Rejected: body_too_large"})
    assert kept(sessions, "c2b_confirmation", raw[:PREFIX_KEPT_BYTES]) == [("rejected", f"body_too_large:{len(raw)}")]


def test_an_oversized_chunked_body_is_kept_as_its_prefix(ingest_url: str, sessions, settings) -> None:  # type: ignore[no-untyped-def]
    body = c2b_body(next_receipt("O"), "200.00", "NOSUCH")
    body["InvoiceNumber"] = "y" * (settings.body_max_bytes * 3)
    raw = json.dumps(body).encode()

    def chunks() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding: chunked
        for start in range(0, len(raw), 1000):
            yield raw[start : start + 1000]

    with httpx.Client(base_url=ingest_url, timeout=30) as http:
        answer = http.post(f"/cb/{TOKEN}/c2b/confirm", content=chunks(), headers=JSON)
    assert (answer.status_code, answer.json()["ResultDesc"]) == (413, "Rejected: body_too_large")
    assert kept(sessions, "c2b_confirmation", raw[:PREFIX_KEPT_BYTES]) == [
        ("rejected", f"body_too_large:>{settings.body_max_bytes}")
    ]


# --- 6. a client gone mid-body ----------------------------------------------------------------------


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("path", ["c2b/confirm", "c2b/validate"])
def test_a_client_that_hangs_up_mid_body_costs_one_info_line(ingest_url: str, path: str) -> None:
    port = int(ingest_url.rsplit(":", 1)[1])
    uvicorn_errors = Records()
    logging.getLogger("uvicorn.error").addHandler(uvicorn_errors)
    try:
        with structlog.testing.capture_logs() as events:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(
                    f"POST /cb/{TOKEN}/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    "Content-Length: 5000\r\n\r\n".encode()
                    + b'{"TransID": "'
                )
                time.sleep(0.2)  # the app is reading the body
            wait_until(
                lambda: any(e["event"] == "callback_client_disconnected" for e in events) or uvicorn_errors.records,
                timeout_s=10,
                what="the ingest to notice the hang-up",
            )
    finally:
        logging.getLogger("uvicorn.error").removeHandler(uvicorn_errors)
    assert [record.getMessage() for record in uvicorn_errors.records if record.levelno >= logging.WARNING] == []
    gone = [e for e in events if e["event"] == "callback_client_disconnected"]
    assert len(gone) == 1 and gone[0]["log_level"] == "info" and "exc_info" not in gone[0]


# --- 9. fuzzing every route ---------------------------------------------------------------------------

NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=1, max_value=6000).map(lambda n: Raw("9" * n)),
    st.decimals(allow_nan=False, allow_infinity=False).map(lambda d: Raw(str(d))),
    st.sampled_from(["1E+9999999999999999999", "-0", "1e-400", "0.000000000000000000001", "1E400"]).map(Raw),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=40))
VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
NESTED = st.integers(min_value=1, max_value=25_000).map(lambda depth: Raw("[" * depth + "]" * depth))
INVALID_UTF8 = st.sampled_from([b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x00", b"\x80"])


def leaf_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a body a value can be swapped for another (but what must stay unique, or must
    not name an account that exists)."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return [prefix]
    paths = [prefix] if prefix else []
    for key, item in items:
        if key != "BillRefNumber":
            paths += leaf_paths(item, (*prefix, key))
    return paths


@st.composite
def bodies(draw: st.DrawFn, path: str) -> bytes:
    """Anything an authenticated caller might send to ``path``: random JSON, the route's real sample
    with fields of random types, deep nesting, or broken UTF-8 bytes in either."""
    shape = draw(st.sampled_from(["random json", "sample with random fields", "deep", "broken bytes"]))
    if shape == "random json":
        return render(draw(VALUES)).encode()
    body = fresh_sample(path)
    if shape == "deep":
        return render(replaced(body, draw(st.sampled_from(leaf_paths(body))), draw(NESTED))).encode()
    for place in draw(st.lists(st.sampled_from(leaf_paths(body)), min_size=1, max_size=3, unique=True)):
        try:
            replaced(body, place, draw(VALUES))
        except (KeyError, IndexError, TypeError):
            pass  # an earlier swap removed this place
    raw = render(body).encode()
    if shape == "broken bytes":
        at = draw(st.integers(min_value=0, max_value=len(raw)))
        raw = raw[:at] + draw(INVALID_UTF8) + raw[at:]
    return raw


def refused(path: str, answer: httpx.Response) -> bool:
    if answer.status_code != 200:
        return True
    return path == "c2b/validate" and answer.json()["ResultCode"] != "0"


@pytest.mark.parametrize("path", ROUTES)
def test_fuzz_no_body_gets_a_5xx_and_every_refused_body_is_kept(ingest_url: str, sessions, path: str) -> None:  # type: ignore[no-untyped-def]
    http = httpx.Client(base_url=f"{ingest_url}/cb/{TOKEN}", timeout=30)

    @hypothesis_settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(raw=bodies(path))
    def one(raw: bytes) -> None:
        answer = http.post(path, content=raw, headers=JSON)
        assert answer.status_code < 500, (answer.status_code, answer.text, raw[:300])
        if refused(path, answer):
            rows = kept(sessions, KIND[path], raw if answer.status_code != 413 else raw[:PREFIX_KEPT_BYTES])
            assert rows, f"refused ({answer.status_code} {answer.text}) but not kept: {raw[:300]!r}"
            if answer.status_code == 400:
                reason = answer.json()["ResultDesc"].removeprefix("Rejected: ")
                assert ("rejected", reason) in rows

    try:
        one()
    finally:
        http.close()


@pytest.mark.parametrize("path", ROUTES)
def test_fuzz_anything_but_json_content_is_refused_and_kept(ingest_url: str, sessions, path: str) -> None:  # type: ignore[no-untyped-def]
    http = httpx.Client(base_url=f"{ingest_url}/cb/{TOKEN}", timeout=30)

    @hypothesis_settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    @given(raw=st.binary(max_size=600))
    def one(raw: bytes) -> None:
        answer = http.post(path, content=raw, headers=JSON)
        assert answer.status_code < 500, (answer.status_code, answer.text, raw)
        if refused(path, answer):
            assert kept(sessions, KIND[path], raw), raw[:300]

    try:
        one()
    finally:
        http.close()


def test_every_route_is_fuzzed() -> None:
    assert set(ROUTES) == {route.path for route in CALLBACK_ROUTES} | {"c2b/validate"} and len(ROUTES) == 9
