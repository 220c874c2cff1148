"""Rotating the callback token: while ``FLEETPAY_CALLBACK_TOKEN_PREVIOUS`` is set, callbacks to the
old URL are still accepted (so nothing Safaricom sends during the switch is refused); only the new
token is ever handed out; any other token is a stranger."""

from __future__ import annotations

import httpx
from pydantic import SecretStr

from tests.support import TOKEN, c2b_body, next_receipt, pending_count, serve, wait_until

NEW = "rotated-callback-token-0123456789"


def test_the_previous_token_is_accepted_during_a_rotation(settings, engine, sessions, worker) -> None:  # type: ignore[no-untyped-def]
    from ingest.app import build_app
    from workers import runtime

    rotating = settings.model_copy(update={"callback_token": SecretStr(NEW), "callback_token_previous": SecretStr(TOKEN)})
    assert f"/cb/{NEW}/c2b/confirm" in rotating.callback_url("c2b/confirm")
    old_url, new_url = next_receipt("T"), next_receipt("T")
    with serve(build_app(rotating, engine=engine, broker=runtime.broker)) as url, httpx.Client(timeout=10) as http:
        for token, receipt in ((TOKEN, old_url), (NEW, new_url)):
            answer = http.post(f"{url}/cb/{token}/c2b/confirm", json=c2b_body(receipt, "150.00", "NOSUCH"))
            assert answer.json() == {"ResultCode": 0, "ResultDesc": "Success"}
        stranger = http.post(f"{url}/cb/not-a-token/c2b/confirm", json=c2b_body(next_receipt("T"), "150.00", "NOSUCH"))
        assert (stranger.status_code, stranger.text) == (404, "Not Found")
    wait_until(lambda: pending_count(sessions, [old_url, new_url]) == 0, what="both payments")


def test_without_a_previous_token_only_the_current_one_is_accepted(settings) -> None:  # type: ignore[no-untyped-def]
    assert settings.accepted_callback_tokens() == (TOKEN,)
