"""The chaos run at CI size: 1,000 callbacks while workers are killed, Redis flushed and
PostgreSQL restarted (``python -m tests.chaos`` runs the full 10,000)."""

from __future__ import annotations

import pytest

from tests.chaos.harness import ChaosConfig, chaos


@pytest.mark.slow
def test_chaos_loses_nothing_and_applies_nothing_twice() -> None:
    report = chaos(ChaosConfig(callbacks=1_000, traffic_s=10))
    print("\n" + report.table())
    assert not report.failures, report.table()
