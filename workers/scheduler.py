"""The scheduler: enqueues the periodic actors; one instance active at a time.

Why APScheduler (3.x): interval and cron triggers with real time zones (the close runs at the
fleet's local close time, Africa/Nairobi), misfire handling, and fifteen years of maintenance.
periodiq, dramatiq's companion, has neither time zones nor a release since 2021. APScheduler only
decides *when*; the actors do the work, on the queue, with dramatiq's retries.

Exactly one scheduler is active: it holds a PostgreSQL advisory lock on a connection of its own
for as long as it lives. Others wait as standbys and take over when that connection dies (the
process was killed, the host vanished). The lock is a session's: behind PgBouncer in transaction
mode it is taken on ``database_direct_url`` (``db.engine.lock_engine``), PostgreSQL itself. Each
firing is also recorded under a unique (job, period) key before its message is sent, so a period
fires once even if two instances ever overlapped; and every scheduled actor is idempotent anyway.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import structlog
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.dialects.postgresql import insert as pg_insert

from db.engine import lock_engine
from db.models import SchedulerFiring
from fleetpay.settings import Settings
from workers.messages import (
    CHECK_FLOAT,
    CLOSE_DAY,
    RECONCILE_BOOKS,
    RECONCILE_MPESA,
    SWEEP_INBOX,
    SWEEP_NOTIFICATIONS,
    SWEEP_PAYOUTS,
)

log = structlog.get_logger("workers.scheduler")

LEADER_LOCK_ID = int.from_bytes(b"fleetpay", "big") >> 1  # one advisory lock id for the fleet


@dataclass(frozen=True)
class Job:
    name: str  # also the actor's name
    trigger: BaseTrigger
    period: Callable[[datetime], str]  # the period a firing at this moment belongs to


def _every(seconds: int) -> Callable[[datetime], str]:
    return lambda at: str(int(at.timestamp()) // seconds)


def jobs(settings: Settings) -> list[Job]:
    tz = ZoneInfo(settings.timezone)
    close_at = datetime.combine(datetime.now(tz).date(), settings.close_time, tz) + timedelta(seconds=settings.close_delay_s)
    return [
        Job(SWEEP_INBOX, IntervalTrigger(seconds=settings.schedule_sweep_s), _every(settings.schedule_sweep_s)),
        Job(SWEEP_PAYOUTS, IntervalTrigger(seconds=settings.schedule_sweep_s), _every(settings.schedule_sweep_s)),
        Job(SWEEP_NOTIFICATIONS, IntervalTrigger(seconds=settings.schedule_sweep_s), _every(settings.schedule_sweep_s)),
        Job(RECONCILE_BOOKS, IntervalTrigger(seconds=settings.schedule_reconcile_s), _every(settings.schedule_reconcile_s)),
        Job(RECONCILE_MPESA, IntervalTrigger(seconds=settings.schedule_mpesa_reconcile_s),
            _every(settings.schedule_mpesa_reconcile_s)),
        Job(CHECK_FLOAT, IntervalTrigger(seconds=settings.schedule_float_check_s), _every(settings.schedule_float_check_s)),
        Job(CLOSE_DAY, CronTrigger(hour=close_at.hour, minute=close_at.minute, second=close_at.second, timezone=tz),
            lambda at: at.astimezone(tz).date().isoformat()),
    ]


class Scheduler:
    """Parameters:
      settings: intervals, close time and time zone.
      engine: the database (the firing records; the leader lock too unless ``database_direct_url``).
      send: enqueues the actor named by a job (``broker.get_actor(name).send()`` in production).
    """

    def __init__(self, settings: Settings, engine: Engine, send: Callable[[str], None]) -> None:
        self.settings = settings
        self.engine = engine
        self.lock_engine = lock_engine(settings, engine)
        self.send = send
        self.instance = f"{socket.gethostname()}:{os.getpid()}"
        self.stopping = threading.Event()

    def run(self) -> None:
        """Wait to lead, lead until the lock's connection is lost or ``stop()``, and repeat."""
        while not self.stopping.is_set():
            try:
                with self.lock_engine.connect() as leader:
                    if leader.execute(text("SELECT pg_try_advisory_lock(:id)"), {"id": LEADER_LOCK_ID}).scalar_one():
                        leader.commit()
                        self._lead(leader)
                    else:
                        leader.rollback()
            except DBAPIError as error:  # PostgreSQL unreachable (restarting): keep trying
                log.warning("scheduler_waiting_for_database", error=str(error.orig))
            self.stopping.wait(self.settings.scheduler_standby_poll_s)

    def stop(self) -> None:
        self.stopping.set()

    def _lead(self, leader) -> None:  # type: ignore[no-untyped-def]
        log.info("scheduler_leading", instance=self.instance)
        scheduler = BackgroundScheduler(timezone=ZoneInfo(self.settings.timezone))
        for job in jobs(self.settings):
            scheduler.add_job(self.fire, job.trigger, args=[job], id=job.name, coalesce=True, max_instances=1,
                              misfire_grace_time=60)
        scheduler.start()
        try:
            while not self.stopping.wait(self.settings.scheduler_standby_poll_s):
                leader.execute(text("SELECT 1"))  # still holding the lock's session?
                leader.rollback()
        except Exception as error:  # noqa: BLE001 — the lock went with the connection: stand down
            log.error("scheduler_lost_leadership", error=str(error))
        finally:
            scheduler.shutdown(wait=False)

    def fire(self, job: Job) -> None:
        period = job.period(datetime.now(ZoneInfo(self.settings.timezone)))
        with self.engine.begin() as connection:
            fired = connection.execute(
                pg_insert(SchedulerFiring)
                .values(job=job.name, period=period, instance=self.instance)
                .on_conflict_do_nothing()
                .returning(SchedulerFiring.id)
            ).scalar_one_or_none()
        if fired is None:
            return  # this period fired already
        self.send(job.name)
        log.info("job_fired", job=job.name, period=period)
