"""``fleetpay ingest --workers N`` is one Prometheus target: every scrape, whichever worker answers
it, counts every worker's requests, also those of a worker that died and was replaced; the gauges
read from the database and Redis appear once, not once per worker."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import fleetpay_argv, free_port, wait_until

WORKERS = 2
WRONG_TOKEN = "not-the-token-0123456789abcdef0123456789"  # refused (404): nothing is stored
ROUTES = ("c2b/confirm", "stk/result")
# Read from the database or Redis at each scrape: one value for the server, whatever its workers.
READ_ON_SCRAPE = {"fleetpay_postings_created": [], "fleetpay_overpaid_cents": [], "fleetpay_driver_days_left_open": [],
                  "fleetpay_dlq_depth": ["queue"]}


class Ingest:
    """``fleetpay ingest --workers 2`` on a loopback port, its temporary files under ``tmp``."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = tmp
        self.sent: Counter[str] = Counter()  # requests sent, by route
        env = os.environ | {"FLEETPAY_LOG_JSON": "false", "TMPDIR": str(tmp)}
        argv = fleetpay_argv("ingest", "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(WORKERS))
        self.process = subprocess.Popen(argv, env=env, cwd=tmp, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def metrics_dirs(self) -> list[Path]:
        return list(self.tmp.glob("fleetpay-metrics-*"))

    def counting_pids(self) -> set[int]:
        """The workers that have counted a request: each writes ``counter_<pid>.db``."""
        return {int(path.stem.removeprefix("counter_")) for d in self.metrics_dirs() for path in d.glob("counter_*.db")}

    def healthy(self) -> bool:
        assert self.process.poll() is None, self.process.stderr.read() if self.process.stderr else ""
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def post_batch(self, size: int = 16) -> None:
        """``size`` refused callbacks at once, each on a connection of its own, so that the
        kernel hands them to different workers."""
        routes = [ROUTES[i % len(ROUTES)] for i in range(size)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(self.post, routes))
        assert statuses == [404] * size
        self.sent.update(routes)

    def post(self, route: str) -> int:
        return httpx.post(f"{self.url}/cb/{WRONG_TOKEN}/{route}", json={}, timeout=10).status_code

    def scrape(self) -> dict[str, list]:  # type: ignore[type-arg]
        """Each family's samples, as one scrape on a new connection (any worker) shows them."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        families: dict[str, list] = {}  # type: ignore[type-arg]
        for family in text_string_to_metric_families(text):
            assert family.name not in families, f"{family.name} is exported twice"
            families[family.name] = family.samples
        return families

    def assert_every_scrape_counts_everything(self, scrapes: int = 12) -> None:
        for _ in range(scrapes):
            families = self.scrape()
            counted = {s.labels["route"]: s.value for s in families["fleetpay_ingest_requests"]
                       if s.name == "fleetpay_ingest_requests_total" and s.labels["outcome"] == "refused"}
            assert counted == dict(self.sent)
            timed = {s.labels["route"]: s.value for s in families["fleetpay_ingest_request_seconds"]
                     if s.name == "fleetpay_ingest_request_seconds_count"}
            assert timed == dict(self.sent)
            for name, label_names in READ_ON_SCRAPE.items():
                keys = [tuple(s.labels[label] for label in label_names) for s in families[name]]
                assert keys and len(keys) == len(set(keys)), (name, families[name])  # no pid label, no copies
                assert all(sorted(s.labels) == label_names for s in families[name]), families[name]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.fixture
def ingest(tmp_path: Path) -> Iterator[Ingest]:
    server = Ingest(tmp_path)
    try:
        wait_until(server.healthy, timeout_s=60, what="fleetpay ingest --workers 2 to serve")
        yield server
    finally:
        server.stop()


def post_until_every_worker_counted(ingest: Ingest) -> set[int]:
    def all_counted() -> bool:
        ingest.post_batch()
        return len(ingest.counting_pids()) >= WORKERS

    wait_until(all_counted, timeout_s=60, what="both workers to answer a callback")
    return ingest.counting_pids()


def test_every_scrape_adds_up_every_worker(ingest: Ingest) -> None:
    [directory] = ingest.metrics_dirs()
    post_until_every_worker_counted(ingest)
    ingest.assert_every_scrape_counts_everything()

    ingest.stop()
    assert not directory.exists()  # the server's own directory goes with it


def test_a_dead_workers_counts_stay_in_the_sum(ingest: Ingest) -> None:
    first = post_until_every_worker_counted(ingest)
    os.kill(min(first), signal.SIGKILL)  # uvicorn replaces it

    def replaced() -> bool:
        ingest.post_batch()
        return len(ingest.counting_pids() - first) >= 1

    wait_until(replaced, timeout_s=60, what="uvicorn to replace the killed worker and it to answer")
    ingest.assert_every_scrape_counts_everything()
