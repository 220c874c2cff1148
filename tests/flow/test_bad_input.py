"""Bad input gets its documented answer, nothing is posted, nothing answers 500, and every
authenticated rejection is kept in the inbox for review."""

from __future__ import annotations

import json

import httpx
import pytest
from sqlalchemy import func, select

from db.models import Inbox, Posting
from tests.support import TOKEN, c2b_body, next_receipt, pending_count, wait_until

JSON = {"content-type": "application/json"}


def body(**changes: object) -> bytes:
    payment = c2b_body(next_receipt("B"), "200.00", "025")
    payment.update(changes)
    return json.dumps({k: v for k, v in payment.items() if v is not None}).encode()


CASES = [
    # (case, route token, content, headers, confirm status, validation ResultCode or status)
    ("empty", TOKEN, b"", JSON, 400, 400),
    ("not json", TOKEN, b"{not json", JSON, 400, 400),
    ("array", TOKEN, b"[1, 2]", JSON, 400, "C2B00016"),
    ("missing TransID", TOKEN, body(TransID=None), JSON, 400, "C2B00016"),
    ("amount abc", TOKEN, body(TransAmount="abc"), JSON, 400, "C2B00013"),
    ("amount -5", TOKEN, body(TransAmount="-5"), JSON, 400, "C2B00013"),
    ("amount 0", TOKEN, body(TransAmount="0"), JSON, 400, "C2B00013"),
    ("amount 1e9", TOKEN, body(TransAmount="1e9"), JSON, 400, "C2B00013"),
    ("amount as NaN", TOKEN, body().replace(b'"200.00"', b"NaN"), JSON, 400, 400),
    ("70 KiB body", TOKEN, body(InvoiceNumber="x" * 70 * 1024), JSON, 413, 413),
    ("wrong token", "not-the-token", body(), JSON, 404, 404),
    ("wrong content type", TOKEN, body(), {"content-type": "text/plain"}, 415, 415),
]


@pytest.mark.parametrize(("case", "token", "content", "headers", "confirm", "validate"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_kept(ingest_url, sessions, case, token, content, headers, confirm, validate) -> None:  # type: ignore[no-untyped-def]
    with sessions() as session:
        postings_before = session.execute(select(func.count()).select_from(Posting)).scalar_one()
        kept_before = session.execute(select(func.count()).select_from(Inbox).where(Inbox.status == "rejected")).scalar_one()

    with httpx.Client(base_url=f"{ingest_url}/cb/{token}", timeout=10) as http:
        answer = http.post("c2b/confirm", content=content, headers=headers)
        assert answer.status_code == confirm, answer.text
        if confirm == 404:
            assert answer.text == "Not Found"  # the same as any unknown URL
        else:
            assert answer.json()["ResultCode"] == 1 and answer.json()["ResultDesc"].startswith("Rejected: ")

        checked = http.post("c2b/validate", content=content, headers=headers)
        if isinstance(validate, int):
            assert checked.status_code == validate, checked.text
        else:
            assert checked.status_code == 200 and checked.json() == {"ResultCode": validate, "ResultDesc": "Rejected"}

    with sessions() as session:
        assert session.execute(select(func.count()).select_from(Posting)).scalar_one() == postings_before
        kept = session.execute(select(func.count()).select_from(Inbox).where(Inbox.status == "rejected")).scalar_one()
    if confirm != 404:  # authenticated rejections are kept (a refused stranger is only logged)
        assert kept > kept_before


def test_a_malformed_copy_does_not_shadow_the_real_callback(http, worker, sessions) -> None:  # type: ignore[no-untyped-def]
    receipt = next_receipt("S")
    bad = c2b_body(receipt, "abc", "NOSUCH")
    good = c2b_body(receipt, "120.00", "NOSUCH")
    assert http.post("c2b/confirm", json=bad).status_code == 400
    assert http.post("c2b/confirm", json=good).status_code == 200
    wait_until(lambda: pending_count(sessions, [receipt]) == 0, what="the good copy")
    with sessions() as session:
        rows = session.execute(select(Inbox.external_id, Inbox.status).where(Inbox.body.contains(receipt))).all()
    kept = {status for external_id, status in rows if external_id.startswith("rejected:")}
    real = {status for external_id, status in rows if external_id == receipt}
    assert kept == {"rejected"} and real == {"unmatched"}  # the money of the good copy is real
