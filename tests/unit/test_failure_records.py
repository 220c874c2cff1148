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


def test_a_batch_message_names_each_of_its_rows() -> None:
    from workers.failures import message_reference, row_references

    assert message_reference("apply_callbacks", [[7, 8, 9]], {}) == "inbox:7,8,9"
    assert row_references("inbox:7,8,9") == ["inbox:7", "inbox:8", "inbox:9"]
    assert message_reference("process_callback", [7], {}) == "inbox:7"
    assert row_references(message_reference("apply_callbacks", [[]], {})) == []


def test_only_the_message_that_holds_a_row_lets_it_go(redis_url: str, unique: str) -> None:
    """A row handed on from its batch to a message of its own stays held by that message when the
    batch later succeeds, is purged or is requeued (real Redis)."""
    import redis

    from workers.failures import FailureKeys, failing, release

    client = redis.Redis.from_url(redis_url)
    namespace = f"test_release_{unique}"
    keys = FailureKeys(namespace)
    client.set(keys.failing("inbox:1"), "batch", px=60_000)
    client.set(keys.failing("inbox:2"), "alone", px=60_000)  # handed on: its own message holds it now
    release(client, keys, ["inbox:1", "inbox:2"], "batch", keep_ms=None)
    assert failing(client, namespace, "inbox", [1, 2]) == {2}
    release(client, keys, ["inbox:2"], "batch", keep_ms=5)  # a requeue of the batch: not its row
    assert client.pttl(keys.failing("inbox:2")) > 1_000
    release(client, keys, ["inbox:2"], "alone", keep_ms=None)
    assert failing(client, namespace, "inbox", [1, 2]) == set()


def test_while_redis_does_not_answer_the_sweeps_leave_every_row_for_later() -> None:
    """Not knowing which rows have a message failing, a sweep sends none of them: sending them all
    would make one more dead letter each round for a row that keeps failing."""
    import redis

    from workers.failures import failing

    unreachable = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    assert failing(unreachable, "fleetpay", "inbox", [3, 4]) == {3, 4}
