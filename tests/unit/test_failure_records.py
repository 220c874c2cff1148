"""How long the sweeps leave a failing row to its own retry (``workers.failures``)."""

from __future__ import annotations


def test_a_failing_row_is_left_to_its_retry_only_as_long_as_dramatiq_can_wait_for_it() -> None:
    """The sweeps leave a row whose message waits for a retry (``workers.failures``) no longer
    than the longest backoff dramatiq may draw for that retry, plus a minute: a retry lost with a
    restarted Redis does not hold the row back for long."""
    from dramatiq.common import compute_backoff

    from workers.failures import RETRY_GRACE_MS, retry_wait_ms

    for retries in range(12):
        longest = max(compute_backoff(retries, factor=500, max_backoff=60_000)[1] for _ in range(300))
        bound = retry_wait_ms(retries, min_backoff_ms=500, max_backoff_ms=60_000)
        assert longest <= bound - RETRY_GRACE_MS <= 60_000
