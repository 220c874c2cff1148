"""``/metrics`` serves the ingest's own counters and the books' gauges read at scrape time."""

from __future__ import annotations

import httpx


def test_metrics_show_the_edge_and_the_books(ingest_url, http, worker) -> None:  # type: ignore[no-untyped-def]
    http.post("c2b/confirm", content=b"not json", headers={"content-type": "application/json"})
    body = httpx.get(f"{ingest_url}/metrics", timeout=10).text
    for name in (
        'fleetpay_ingest_requests_total{outcome="rejected",route="c2b/confirm"}',
        "fleetpay_ingest_request_seconds_bucket",
        'fleetpay_inbox_rows{status="rejected"}',
        "fleetpay_postings_created",
        "fleetpay_driver_days_left_open",
        "fleetpay_dlq_depth",
        'fleetpay_queue_messages{queue="fleetpay",state="ready"}',
        'fleetpay_queue_messages{queue="fleetpay",state="delayed"}',
    ):
        assert name in body, name
    assert httpx.get(f"{ingest_url}/healthz", timeout=10).json() == {"status": "ok"}
    ready = httpx.get(f"{ingest_url}/readyz", timeout=10).json()
    assert ready == {"ready": True, "checks": {"postgres": True, "redis": True}}
