"""The money path over real HTTP, a real Redis queue and real dramatiq worker threads."""

from __future__ import annotations

from collections.abc import Iterator

import dramatiq
import httpx
import pytest
from pydantic import SecretStr

from fleetpay.settings import Settings
from tests.support import TOKEN, serve


@pytest.fixture(scope="session")
def settings(database_url: str, redis_url: str) -> Settings:
    return Settings(database_url=database_url, redis_url=redis_url, callback_token=SecretStr(TOKEN))


@pytest.fixture(scope="session")
def broker():  # type: ignore[no-untyped-def]
    from workers import all as _actors  # noqa: F401 — declares every actor on the broker
    from workers import runtime

    return runtime.broker


@pytest.fixture(scope="session")
def ingest_url(settings: Settings, engine, broker) -> Iterator[str]:  # type: ignore[no-untyped-def]
    from ingest.app import build_app

    with serve(build_app(settings, engine=engine, broker=broker)) as url:
        yield url


@pytest.fixture(scope="session")
def worker(broker) -> Iterator[dramatiq.Worker]:  # type: ignore[no-untyped-def]
    """Four real dramatiq worker threads consuming the test Redis, for the whole session."""
    broker.flush_all()
    worker = dramatiq.Worker(broker, worker_threads=4, worker_timeout=100)
    worker.start()
    yield worker
    worker.stop(timeout=10_000)
    broker.flush_all()


@pytest.fixture
def http(ingest_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{ingest_url}/cb/{TOKEN}", timeout=10) as client:
        yield client
