"""Fixtures: the simulator and a callback receiver, served by uvicorn on free ports (real HTTP)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sim_harness import Daraja, Receiver, ServerThread

from simulator import SimulatorConfig, build_app
from simulator.credentials import SimulatorCredentials, generate_credentials


# --- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def credentials() -> SimulatorCredentials:
    """One key pair for every simulator in the run (generating one per app is wasted time)."""
    return generate_credentials()


@pytest.fixture(scope="session")
def _receiver_server() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.server.start()
    yield receiver
    receiver.server.stop()


@pytest.fixture
def receiver(_receiver_server: Receiver) -> Receiver:
    _receiver_server.clear()
    return _receiver_server


# Fast defaults for tests: callbacks after 20 ms, short hangs.
TEST_CONFIG = SimulatorConfig(result_delay_ms=20, hang_s=2.0, slow_callback_delay_ms=600,
                              queue_timeout_result_delay_ms=100, validation_timeout_s=1.0)


@pytest.fixture(scope="session")
def _default_sim(credentials: SimulatorCredentials) -> Iterator[ServerThread]:
    server = ServerThread(build_app(TEST_CONFIG, credentials=credentials)).start()
    yield server
    server.stop()


@pytest.fixture
def daraja(_default_sim: ServerThread, receiver: Receiver) -> Iterator[Daraja]:
    """A client of the shared simulator, reset to a blank record for this test."""
    client = Daraja(_default_sim.url, TEST_CONFIG, receiver)
    assert client.http.post("/sim/reset").status_code == 200  # also cancels pending callbacks
    receiver.clear()  # again: a previous test's callback may have landed before the reset
    yield client
    client.close()


@pytest.fixture
def make_daraja(credentials: SimulatorCredentials, receiver: Receiver) -> Iterator[Callable[..., Daraja]]:
    """A factory for a dedicated simulator with its own config (stopped after the test)."""
    started: list[tuple[ServerThread, Daraja]] = []

    def make(**overrides: Any) -> Daraja:
        settings = {"result_delay_ms": 20, "hang_s": 2.0, "slow_callback_delay_ms": 600,
                    "queue_timeout_result_delay_ms": 100, "validation_timeout_s": 1.0, **overrides}
        config = SimulatorConfig(**settings)
        server = ServerThread(build_app(config, credentials=credentials)).start()
        client = Daraja(server.url, config, receiver)
        started.append((server, client))
        return client

    yield make
    for server, client in started:
        client.close()
        server.stop()
