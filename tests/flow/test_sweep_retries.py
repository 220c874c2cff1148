"""A PostgreSQL blip does not dead-letter a sweep: each sweep actor is retried a few times, with
backoffs short enough that every retry is over before the scheduler's next sweep. The decision is
dramatiq's own (its Retries middleware reads these actor options; ``compute_backoff`` is its delay)."""

from __future__ import annotations

import pytest
from dramatiq.common import compute_backoff


@pytest.mark.parametrize("name", ["sweep_inbox", "sweep_payouts"])
def test_a_sweep_is_retried_quickly_before_it_is_dead_lettered(name: str, settings) -> None:  # type: ignore[no-untyped-def]
    from workers import runtime
    from workers import sweep_inbox, sweep_payouts  # noqa: F401 — declares the actors on the broker

    actor = runtime.broker.get_actor(name)
    retries = actor.options["max_retries"]
    assert retries >= 3  # one failed attempt (a restart, a failover) is not the end of it
    delays_ms = [
        compute_backoff(attempt, factor=actor.options["min_backoff"], max_backoff=actor.options["max_backoff"], jitter=False)[1]
        for attempt in range(retries)
    ]
    assert delays_ms[0] <= 1_000  # the first retry comes within a second
    assert sum(delays_ms) / 1000 < settings.schedule_sweep_s  # all over before the next scheduled sweep
