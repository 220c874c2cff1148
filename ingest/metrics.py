"""Prometheus metrics of the HTTP edge."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "fleetpay_ingest_requests_total",
    "Callback requests by route and outcome (accepted, duplicate, rejected, refused, unavailable).",
    ["route", "outcome"],
)
LATENCY = Histogram(
    "fleetpay_ingest_request_seconds",
    "Time from request to answer, by route.",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
