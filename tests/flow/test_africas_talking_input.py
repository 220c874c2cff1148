"""Africa's Talking's callbacks (USSD, SMS delivery reports) under bad and hostile input: the
documented answer, the refused body kept in the inbox, never a 5xx, and a USSD caller always gets a
screen."""

from __future__ import annotations

from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from sqlalchemy import func, select

from db.models import Inbox
from tests.support import AT_TOKEN, TOKEN

FORM = {"content-type": "application/x-www-form-urlencoded"}
USSD = {"sessionId": "ATUid_bad_input", "serviceCode": "*384*1234#", "phoneNumber": "+254799000001",
        "networkCode": "63902", "text": ""}


def kept(sessions, kind: str) -> int:  # type: ignore[no-untyped-def]
    with sessions() as session:
        return session.execute(select(func.count()).select_from(Inbox)
                               .where(Inbox.kind == kind, Inbox.status == "rejected")).scalar_one()


CASES = [
    # (case, route, token, content, headers, status, answer begins)
    ("wrong token", "ussd", "not-the-token", urlencode(USSD), FORM, 404, "Not Found"),
    ("the M-Pesa callback token", "ussd", TOKEN, urlencode(USSD), FORM, 404, "Not Found"),
    ("a NUL in the session id", "ussd", AT_TOKEN, urlencode({**USSD, "sessionId": "AT\x00x"}), FORM, 400,
     "Rejected: invalid_field:sessionId"),
    ("json, not a form", "ussd", AT_TOKEN, '{"sessionId": "x"}', {"content-type": "application/json"}, 415,
     "Rejected: content_type"),
    ("no phone number", "ussd", AT_TOKEN, urlencode({**USSD, "phoneNumber": ""}), FORM, 400,
     "Rejected: missing_field:phoneNumber"),
    ("a phone number that is not one", "ussd", AT_TOKEN, urlencode({**USSD, "phoneNumber": "<script>"}), FORM, 400,
     "Rejected: invalid_field:phoneNumber"),
    ("no session id", "ussd", AT_TOKEN, urlencode({**USSD, "sessionId": ""}), FORM, 400,
     "Rejected: missing_field:sessionId"),
    ("9 KiB form", "ussd", AT_TOKEN, urlencode({**USSD, "text": "1" * 9 * 1024}), FORM, 413, "Rejected: body_too_large"),
    ("not utf-8", "ussd", AT_TOKEN, b"text=\xff\xfe", FORM, 400, "Rejected: not_a_form"),
    ("report without id", "sms/delivery", AT_TOKEN, urlencode({"status": "Success"}), FORM, 400,
     "Rejected: missing_field:id"),
    ("report as json", "sms/delivery", AT_TOKEN, '{"id": "ATXid_1"}', {"content-type": "application/json"}, 415,
     "Rejected: content_type"),
]


@pytest.mark.parametrize(("case", "route", "token", "content", "headers", "status", "begins"), CASES,
                         ids=[c[0] for c in CASES])
def test_bad_input_gets_its_answer_and_is_kept(ingest_url, sessions, case, route, token, content, headers, status,
                                               begins) -> None:  # type: ignore[no-untyped-def]
    kind = "ussd" if route == "ussd" else "sms_delivery"
    before = kept(sessions, kind)
    answer = httpx.post(f"{ingest_url}/at/{token}/{route}", content=content, headers=headers, timeout=10)
    assert (answer.status_code, answer.text[: len(begins)]) == (status, begins)
    assert kept(sessions, kind) == before + (0 if status == 404 else 1)


def test_a_get_is_not_allowed_after_the_token(ingest_url) -> None:  # type: ignore[no-untyped-def]
    assert httpx.get(f"{ingest_url}/at/{AT_TOKEN}/ussd", timeout=10).status_code == 405
    assert httpx.get(f"{ingest_url}/at/wrong/ussd", timeout=10).status_code == 404


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200), phone=st.sampled_from(["+254799000001", "254799000002", "+2547", "0799000003"]),
       extra=st.dictionaries(st.text(max_size=10), st.text(max_size=30), max_size=5))
def test_any_ussd_input_gets_a_screen_or_a_clear_refusal_never_a_5xx(ingest_url, text, phone, extra) -> None:  # type: ignore[no-untyped-def]
    form = {**extra, **USSD, "phoneNumber": phone, "text": text}
    answer = httpx.post(f"{ingest_url}/at/{AT_TOKEN}/ussd", content=urlencode(form), headers=FORM, timeout=10)
    assert answer.status_code < 500
    if answer.status_code == 200:
        assert answer.text.startswith(("CON ", "END "))
    else:
        assert answer.status_code in (400, 413) and answer.text.startswith("Rejected: ")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=600))
def test_any_body_to_the_delivery_url_is_answered_never_with_a_5xx(ingest_url, raw) -> None:  # type: ignore[no-untyped-def]
    answer = httpx.post(f"{ingest_url}/at/{AT_TOKEN}/sms/delivery", content=raw, headers=FORM, timeout=10)
    assert answer.status_code in (200, 400), answer.text
