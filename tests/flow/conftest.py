"""The money path over real HTTP, a real Redis queue and real dramatiq worker threads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dramatiq
import httpx
import pytest

from fleetpay.settings import Settings
from tests.support import TOKEN, add_driver_with_vehicle, next_driver_code, serve


@pytest.fixture(scope="session")
def settings() -> Settings:
    """The settings the workers run with (from the environment ``tests/conftest.py`` set)."""
    return Settings()


@pytest.fixture(scope="session")
def simulator(servers, settings: Settings) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The Daraja simulator, where the workers' settings expect it; its certificate is written
    where ``FLEETPAY_DARAJA_CERTIFICATE_PATH`` points."""
    from simulator import SimulatorConfig, build_app

    config = SimulatorConfig(result_delay_ms=20, sms_api_key=settings.sms_api_key.get_secret_value())
    with serve(build_app(config), port=servers.simulator_port) as url:
        Path(settings.daraja_certificate_path or "").write_bytes(httpx.get(f"{url}/sim/cert.pem").content)
        yield url


@pytest.fixture(scope="session")
def broker():  # type: ignore[no-untyped-def]
    from workers import all as _actors  # noqa: F401 — declares every actor on the broker
    from workers import runtime

    return runtime.broker


@pytest.fixture(scope="session")
def ingest_url(servers, settings: Settings, engine, broker) -> Iterator[str]:  # type: ignore[no-untyped-def]
    from ingest.app import build_app

    with serve(build_app(settings, engine=engine, broker=broker), port=servers.ingest_port) as url:
        yield url


@pytest.fixture(scope="session")
def worker(broker, simulator, ingest_url) -> Iterator[dramatiq.Worker]:  # type: ignore[no-untyped-def]
    """Four real dramatiq worker threads consuming the test Redis, for the whole session; payouts
    go to the simulator, whose results come back through the ingest."""
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


@pytest.fixture
def driver(sessions):  # type: ignore[no-untyped-def]
    """A driver of their own vehicle, unique to the test: (code, vehicle code)."""
    code = next_driver_code()
    with sessions.begin() as session:
        vehicle = add_driver_with_vehicle(session, driver_code=code, msisdn="254722000111")
    return code, vehicle
