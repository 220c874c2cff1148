"""The simulator's logs never show a callback token: the URLs it posts to carry the client's secret
path segment (``/cb/<token>/…``), in its own lines and in httpx's ``HTTP Request: POST …`` line."""

from __future__ import annotations

import logging

import pytest
import structlog
from sim_harness import Daraja, Reply, wait_until

from simulator.callbacks import redact_callback_token


def test_a_refused_callback_is_logged_without_its_token(daraja: Daraja, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="httpx")
    daraja.reply("c2b/confirm", Reply(status=500, body={"ResultCode": 1}))
    with structlog.testing.capture_logs() as events:
        assert daraja.register_urls().status_code == 200
        assert daraja.simulate_c2b(amount=200).status_code == 200
        daraja.wait_for("c2b/confirm")
        wait_until(lambda: any(e["event"] == "callback not acknowledged" for e in events))
        wait_until(lambda: any("HTTP Request" in r.getMessage() and "/c2b/confirm" in r.getMessage()
                               for r in caplog.records))

    refused = [e for e in events if e["event"] == "callback not acknowledged"]
    assert refused and "/cb/[redacted]/c2b/confirm" in refused[0]["url"]
    lines = [repr(e) for e in events] + [r.getMessage() for r in caplog.records]
    assert [line for line in lines if daraja.tag in line] == []
    posted = [r.getMessage() for r in caplog.records if r.name == "httpx" and "/c2b/confirm" in r.getMessage()]
    assert posted and all("/cb/[redacted]/c2b/confirm" in line for line in posted)


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("http://127.0.0.1:8000/cb/s3cret/c2b/confirm", "http://127.0.0.1:8000/cb/[redacted]/c2b/confirm"),
        ("https://pay.example.com/cb/abc/b2c/result?x=1", "https://pay.example.com/cb/[redacted]/b2c/result?x=1"),
        ('POST http://h/cb/tok/stk/result "HTTP/1.1 500"', 'POST http://h/cb/[redacted]/stk/result "HTTP/1.1 500"'),
        ("http://h/healthz", "http://h/healthz"),
    ],
)
def test_redact_callback_token(text: str, redacted: str) -> None:
    assert redact_callback_token(text) == redacted
