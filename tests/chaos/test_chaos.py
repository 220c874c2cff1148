"""The chaos run at CI size: 1,000 callbacks while workers are killed, Redis flushed and
PostgreSQL restarted; and 500 on RabbitMQ, restarted too (``python -m tests.chaos`` runs the full
10,000)."""

from __future__ import annotations

import pytest

from launcher import rabbitmq_node
from tests.chaos.harness import ChaosConfig, chaos


@pytest.mark.slow
def test_chaos_loses_nothing_and_applies_nothing_twice() -> None:
    report = chaos(ChaosConfig(callbacks=1_000, traffic_s=10))
    print("\n" + report.table())
    assert not report.failures, report.table()


@pytest.mark.slow
@pytest.mark.skipif(not rabbitmq_node.available(), reason=rabbitmq_node.MISSING)
def test_chaos_on_rabbitmq_loses_nothing_and_applies_nothing_twice() -> None:
    report = chaos(ChaosConfig(callbacks=500, traffic_s=10, broker="rabbitmq"))
    print("\n" + report.table())
    assert not report.failures, report.table()
