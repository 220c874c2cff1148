"""The routing edges a stranger can reach, over real HTTP: no URL is ever redirected (a redirect to
the caller's own ``Host`` would carry the secret token in its ``Location``), and a wrong callback
token gets exactly the answer of an unknown URL, whatever the method and whether or not the path
ends in a slash (a 405 or a 307 would tell a prober that the path exists)."""

from __future__ import annotations

import string

import httpx
import pytest
from hypothesis import HealthCheck, given, settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from db.models import Inbox
from ingest.app import CALLBACK_ROUTES
from tests.support import TOKEN, c2b_body, next_receipt

CALLBACK_PATHS = [route.path for route in CALLBACK_ROUTES] + ["c2b/validate"]
# Methods uvicorn's parser takes; every one must get the same answer as on an unknown URL.
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND"]
WRONG_TOKEN = "not-the-callback-token-but-just-as-long"
UNKNOWN_URL = "/no/such/page"
ATTACKER_HOST = "attacker.example"


def answer_shape(answer: httpx.Response) -> tuple[int, bytes, dict[str, str]]:
    """What a caller can compare between two answers: status, body and headers (but the date)."""
    headers = {name: value for name, value in answer.headers.items() if name != "date"}
    return answer.status_code, answer.content, headers


def kept_with(sessions, marker: str) -> int:  # type: ignore[no-untyped-def]
    """How many inbox rows, of any status, hold a body containing ``marker``."""
    with sessions() as session:
        return session.execute(select(func.count()).select_from(Inbox).where(Inbox.body.contains(marker))).scalar_one()


@pytest.mark.parametrize("path", CALLBACK_PATHS)
@pytest.mark.parametrize("token", [TOKEN, WRONG_TOKEN], ids=["right token", "wrong token"])
@pytest.mark.parametrize("method", ["POST", "GET", "PUT"])
def test_a_trailing_slash_is_never_redirected(ingest_url: str, path: str, token: str, method: str) -> None:
    payment = c2b_body(next_receipt("E"), "100.00", "025")
    with httpx.Client(base_url=ingest_url, timeout=10, follow_redirects=False) as http:
        answer = http.request(method, f"/cb/{token}/{path}/", json=payment, headers={"Host": ATTACKER_HOST})
    assert "location" not in answer.headers
    assert (answer.status_code, answer.text) == (404, "Not Found")  # an unknown URL, as any other
    assert token not in str(answer.headers)


@pytest.mark.parametrize("path", ["/healthz/", "/readyz/", "/metrics/", "/admin/dlq/", "/admin/dlq/requeue/", "/admin"])
def test_no_other_url_is_redirected_either(ingest_url: str, path: str) -> None:
    with httpx.Client(base_url=ingest_url, timeout=10, follow_redirects=False) as http:
        answer = http.get(path, headers={"Host": ATTACKER_HOST})
    assert "location" not in answer.headers
    assert (answer.status_code, answer.text) == (404, "Not Found")


@pytest.mark.parametrize("path", CALLBACK_PATHS)
@pytest.mark.parametrize("method", METHODS)
def test_a_wrong_token_is_answered_as_an_unknown_url(ingest_url: str, path: str, method: str) -> None:
    with httpx.Client(base_url=ingest_url, timeout=10, follow_redirects=False) as http:
        unknown = answer_shape(http.request(method, UNKNOWN_URL, content=b"{}"))
        assert unknown[0] == 404
        for url in (f"/cb/{WRONG_TOKEN}/{path}", f"/cb/{WRONG_TOKEN}/{path}/"):
            assert answer_shape(http.request(method, url, content=b"{}")) == unknown, (method, url)


@pytest.mark.parametrize("path", CALLBACK_PATHS)
@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE", "OPTIONS"])
def test_the_right_token_with_another_method_gets_405(ingest_url: str, sessions, path: str, method: str) -> None:  # type: ignore[no-untyped-def]
    receipt = next_receipt("M")  # a well-formed payment: only the method is wrong
    with httpx.Client(base_url=ingest_url, timeout=10, follow_redirects=False) as http:
        answer = http.request(method, f"/cb/{TOKEN}/{path}", json=c2b_body(receipt, "100.00", "025"))
    assert (answer.status_code, answer.headers["allow"]) == (405, "POST")
    assert method == "HEAD" or answer.text == "Method Not Allowed"
    assert kept_with(sessions, receipt) == 0  # the body was never read, nothing was stored


TOKEN_CHARS = string.ascii_letters + string.digits + "-_~"


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    token=st.text(TOKEN_CHARS, min_size=1, max_size=64).filter(lambda t: t != TOKEN),
    method=st.sampled_from(METHODS),
    path=st.sampled_from(CALLBACK_PATHS),
    suffix=st.sampled_from(["", "/", "//", "/x", "?a=1", "/?a=1"]),
)
def test_any_wrong_token_any_method_any_suffix_is_an_unknown_url(
    ingest_url: str, token: str, method: str, path: str, suffix: str
) -> None:
    with httpx.Client(base_url=ingest_url, timeout=10, follow_redirects=False) as http:
        unknown = answer_shape(http.request(method, UNKNOWN_URL + suffix, content=b"{}"))
        answer = http.request(method, f"/cb/{token}/{path}{suffix}", content=b"{}", headers={"Host": ATTACKER_HOST})
    assert answer_shape(answer) == unknown
    assert answer.status_code == 404 and "location" not in answer.headers
