"""Prometheus metrics of the HTTP edge.

One ingest process counts in memory and ``/metrics`` reads the global ``REGISTRY``. Under
``fleetpay ingest --workers N`` every worker counts into a file of prometheus-client's multiprocess
directory (``ingest.serving.shared_metrics_dir``) and ``/metrics`` sums the files: a scrape shows
the whole server whichever worker answers it. The gauges read from shared state at scrape time
(``ingest.books_metrics``, the dead-letter depth) are not counted here: the answering worker reads
them once.
"""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.multiprocess import MultiProcessCollector

from ingest.serving import MULTIPROCESS_DIR_VARIABLE

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


def edge_registry() -> CollectorRegistry:
    """Where ``/metrics`` reads the counters above: this process's ``REGISTRY``, or, in multiprocess
    mode, every worker's files summed (read anew at each scrape; a dead worker's counts included).

    Multiprocess mode drops the per-process collectors (``process_*``, ``python_gc_*``): any one
    worker's would stand for the whole server."""
    directory = os.environ.get(MULTIPROCESS_DIR_VARIABLE)
    if directory is None:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    return registry
