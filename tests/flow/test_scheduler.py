"""Two schedulers: one leads, the other waits; each job fires once per period; when the leader
is killed, the standby takes over."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter

from sqlalchemy import select

from db.models import SchedulerFiring
from tests.support import fleetpay_argv, wait_until


def test_one_scheduler_leads_and_a_standby_takes_over(database_url, redis_url, sessions, worker) -> None:  # type: ignore[no-untyped-def]
    env = {
        **os.environ,
        "FLEETPAY_DATABASE_URL": database_url,
        "FLEETPAY_REDIS_URL": redis_url,
        "FLEETPAY_SCHEDULE_SWEEP_S": "1",
        "FLEETPAY_SCHEDULE_RECONCILE_S": "3600",
        "FLEETPAY_SCHEDULE_MPESA_RECONCILE_S": "3600",
        "FLEETPAY_SCHEDULER_STANDBY_POLL_S": "0.3",
        "FLEETPAY_LOG_LEVEL": "WARNING",
    }
    started = time.time()

    def firings() -> list[tuple[str, str, str]]:
        with sessions() as session:
            return [tuple(row) for row in session.execute(  # type: ignore[misc]
                select(SchedulerFiring.job, SchedulerFiring.period, SchedulerFiring.instance)
                .where(SchedulerFiring.job == "sweep_inbox", SchedulerFiring.period >= str(int(started)))
            ).all()]

    schedulers = [
        subprocess.Popen(fleetpay_argv("scheduler"), env=env, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(2)
    ]
    try:
        wait_until(lambda: len(firings()) >= 4, timeout_s=30, what="four sweep periods")
        seen = firings()
        assert len({period for _, period, _ in seen}) == len(seen)  # once per period
        [(leader, _)] = Counter(instance for _, _, instance in seen).most_common()  # one instance fired them all
        leader_pid = int(leader.rsplit(":", 1)[1])
        os.killpg(leader_pid, signal.SIGKILL)

        wait_until(lambda: any(instance != leader for _, _, instance in firings()), timeout_s=30, what="the standby")
        after = firings()
        assert len({period for _, period, _ in after}) == len(after)
    finally:
        for process in schedulers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=15)
