"""The database model: fleet, ledger, inbox and payouts (SQLAlchemy 2.0 typed mappings).

The invariants that matter for money are written into the schema itself (see the first migration):
entries are append-only, every posting balances, cached balances move only with their entries,
a deposit never goes negative. The application cannot forget them.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from fleetpay.notice_texts import LANGUAGES, NOTICE_KINDS
from fleetpay.payout_states import STATE_ORDER

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# received → processed | rejected (kept for review) | unmatched (money in suspense); conflict: a
# second, different body for a receipt already stored, kept beside the first and never applied.
INBOX_STATES = ("received", "processed", "rejected", "unmatched", "conflict")
PAYOUT_STATES = STATE_ORDER
DRIVER_ACCOUNT_KINDS = ("payable", "deposit", "target")
# Callbacks about our payouts (their results and timeouts, and the answers to our status queries).
PAYOUT_RESULT_KINDS = ("b2c_result", "b2c_timeout", "status_result", "status_timeout")
SYSTEM_ACCOUNT_KINDS = ("mpesa", "revenue", "suspense", "payouts_in_flight")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _now() -> Mapped[datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


class Driver(Base):
    __tablename__ = "drivers"
    __table_args__ = (
        CheckConstraint("fare_percent BETWEEN 1 AND 100", name="fare_percent_range"),
        CheckConstraint("daily_target_cents >= 0", name="target_not_negative"),
        CheckConstraint("consecutive_misses >= 0", name="misses_not_negative"),
        CheckConstraint("rollover_cents >= 0", name="rollover_not_negative"),
        CheckConstraint(_in("status", ("active", "flagged", "exited")), name="status_known"),
        CheckConstraint(_in("language", LANGUAGES), name="language_known"),
        Index("ix_drivers_msisdn", "msisdn"),  # USSD: who is calling
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    code: Mapped[str] = mapped_column(Text, unique=True)
    name: Mapped[str] = mapped_column(Text)
    msisdn: Mapped[str] = mapped_column(Text)
    daily_target_cents: Mapped[int | None] = mapped_column(BigInteger)
    fare_percent: Mapped[int | None] = mapped_column(Integer)
    target_sharing: Mapped[bool | None] = mapped_column(Boolean)
    instant_payouts: Mapped[bool | None] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(Text, server_default="active")
    consecutive_misses: Mapped[int] = mapped_column(Integer, server_default="0")
    # Outstanding shortfall carried into the next business day's target (docs/rules.md, daily close).
    rollover_cents: Mapped[int] = mapped_column(BigInteger, server_default="0")
    created_at: Mapped[datetime] = _now()
    # The language of their SMS and USSD screens (None: the fleet's default), and whether they opted
    # out of the optional notices (fleetpay.notice_texts.OPTIONAL_KINDS).
    language: Mapped[str | None] = mapped_column(Text)
    sms_opt_out: Mapped[bool] = mapped_column(Boolean, server_default="false")


class Vehicle(Base):
    __tablename__ = "vehicles"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    code: Mapped[str] = mapped_column(Text, unique=True)
    # A driver is the regular driver of at most one vehicle.
    regular_driver_id: Mapped[int | None] = mapped_column(ForeignKey("drivers.id"), unique=True)
    substitute_driver_id: Mapped[int | None] = mapped_column(ForeignKey("drivers.id"), index=True)
    created_at: Mapped[datetime] = _now()


class Account(Base):
    """A ledger account. Driver accounts carry a cached balance; system accounts do not.

    System accounts (``mpesa``, ``revenue`` …) take part in nearly every posting, so caching their
    balance would make one hot row serialise every worker: their balance is an aggregate.
    """

    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint(
            f"(driver_id IS NULL AND {_in('kind', SYSTEM_ACCOUNT_KINDS)}) OR "
            f"(driver_id IS NOT NULL AND {_in('kind', DRIVER_ACCOUNT_KINDS)})",
            name="kind_matches_owner",
        ),
        CheckConstraint("kind <> 'deposit' OR balance_cents >= 0", name="deposit_not_negative"),
        UniqueConstraint("driver_id", "kind"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    code: Mapped[str] = mapped_column(Text, unique=True)
    kind: Mapped[str] = mapped_column(Text)
    driver_id: Mapped[int | None] = mapped_column(ForeignKey("drivers.id"))
    balance_cents: Mapped[int] = mapped_column(BigInteger, server_default="0")


class Inbox(Base):
    """One row per distinct callback: the raw body exactly as it arrived, kept forever."""

    __tablename__ = "inbox"
    __table_args__ = (
        UniqueConstraint("kind", "external_id"),
        CheckConstraint(_in("status", INBOX_STATES), name="status_known"),
        # The sweeper's scan: rows still waiting for a worker, oldest first.
        Index("ix_inbox_received_at_pending", "received_at", postgresql_where=text("status = 'received'")),
        # A payout's evidence: the results naming it or its status queries (keys ``<id>#<digest>``).
        Index("ix_inbox_result_natural_id", text("split_part(external_id, '#', 1)"),
              postgresql_where=text(f"kind IN ({', '.join(repr(kind) for kind in PAYOUT_RESULT_KINDS)})")),
        Index("ix_inbox_payout_id", "payout_id", postgresql_where=text("payout_id IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(Text)
    external_id: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default="received", index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    source_ip: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = _now()
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    # The payout a result was taken to be about once applied (by our ids, or by the payout it names
    # for a query we never sent): its evidence. Not a foreign key: a hint, never a reason to lock.
    payout_id: Mapped[int | None] = mapped_column(BigInteger)
    # The sweeper's last re-enqueue and how many it made: it backs off, so a backlog in the
    # queue is not multiplied by duplicate messages.
    swept_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sweeps: Mapped[int] = mapped_column(Integer, server_default="0")
    # SHA-256 of the body's canonical JSON (``schemas.callbacks.body_digest``): tells a true
    # duplicate from a different body under the same receipt.
    body_digest: Mapped[str | None] = mapped_column(Text)


class Payout(Base):
    """One B2C payment to a driver, keyed by our own OriginatorConversationID."""

    __tablename__ = "payouts"
    __table_args__ = (
        CheckConstraint("amount_cents > 0 AND mod(amount_cents, 100) = 0", name="whole_shillings"),
        CheckConstraint(_in("state", PAYOUT_STATES), name="state_known"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    originator_conversation_id: Mapped[str] = mapped_column(Text, unique=True)
    # What created it (e.g. ``share:SHK3QX7T2M``): a redelivered cause cannot create a second payout.
    cause_key: Mapped[str] = mapped_column(Text, unique=True)
    driver_id: Mapped[int] = mapped_column(ForeignKey("drivers.id"), index=True)
    msisdn: Mapped[str] = mapped_column(Text)
    amount_cents: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(Text, server_default="pending", index=True)
    requires_approval: Mapped[bool] = mapped_column(Boolean, server_default="false")
    # A payout a person asked for (a deposit refund) names them; another person must approve it.
    requested_by: Mapped[str | None] = mapped_column(Text)
    approved_by: Mapped[str | None] = mapped_column(Text)
    conversation_id: Mapped[str | None] = mapped_column(Text)
    receipt: Mapped[str | None] = mapped_column(Text)
    # The payment's own outcome, as the HTTP answer, the B2C result or the status answer gave it.
    result_code: Mapped[str | None] = mapped_column(Text)
    result_desc: Mapped[str | None] = mapped_column(Text)
    # The ResultCode of the Transaction Status query that settled it (the query's, not the payment's).
    status_result_code: Mapped[str | None] = mapped_column(Text)
    # The callback (inbox row) that moved it last: the evidence of its settlement.
    settled_by_inbox_id: Mapped[int | None] = mapped_column(ForeignKey("inbox.id"))
    # Why an operator must look (a result that did not match what we asked, a payment after a
    # confirmed failure …); NULL when nothing needs a person.
    review_reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = _now()
    updated_at: Mapped[datetime] = _now()
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    status_checked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Transaction Status queries sent about it: each waits twice as long as the one before, and
    # past ``payout_status_queries_max`` the payout goes to review.
    status_queries: Mapped[int] = mapped_column(Integer, server_default="0")
    # A person asked for a status query (an approved ``payout_resolve``) that Daraja has not taken
    # yet: the sweep asks, whatever the state's usual rule, until it does (or refuses it for good).
    status_check_wanted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PayoutStatusQuery(Base):
    """A Transaction Status query we sent about a payout, by the id Daraja gave the query: a
    "not found" result carries nothing else that names the payout."""

    __tablename__ = "payout_status_queries"

    originator_conversation_id: Mapped[str] = mapped_column(Text, primary_key=True)
    payout_id: Mapped[int] = mapped_column(ForeignKey("payouts.id"), index=True)
    created_at: Mapped[datetime] = _now()


class Posting(Base):
    """A journal transaction: two or more entries summing to zero, unique by idempotency key."""

    __tablename__ = "postings"
    # By business day, then when made: a day's postings (statements, the chart) and the last
    # minutes' of today (the dashboard, ``db.statements._today``) from one index.
    __table_args__ = (Index("ix_postings_business_date_created_at", "business_date", "created_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(Text, unique=True)
    kind: Mapped[str] = mapped_column(Text)
    body_sha256: Mapped[str] = mapped_column(Text)
    business_date: Mapped[date] = mapped_column(Date)
    driver_id: Mapped[int | None] = mapped_column(ForeignKey("drivers.id"), index=True)
    inbox_id: Mapped[int | None] = mapped_column(ForeignKey("inbox.id"))
    payout_id: Mapped[int | None] = mapped_column(ForeignKey("payouts.id"))
    corrects_posting_id: Mapped[int | None] = mapped_column(ForeignKey("postings.id"))
    memo: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()


class Entry(Base):
    __tablename__ = "entries"
    __table_args__ = (CheckConstraint("amount_cents <> 0", name="amount_not_zero"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    posting_id: Mapped[int] = mapped_column(ForeignKey("postings.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), index=True)
    amount_cents: Mapped[int] = mapped_column(BigInteger)


class DriverDay(Base):
    """A driver's business day: the target in force and what was contributed towards it."""

    __tablename__ = "driver_days"
    __table_args__ = (
        CheckConstraint("target_cents >= 0 AND contributed_cents >= 0", name="not_negative"),
        # Days not closed yet: the gauge of days left open reads them at every scrape.
        Index("ix_driver_days_open", "business_date", postgresql_where=text("closed_at IS NULL")),
    )

    driver_id: Mapped[int] = mapped_column(ForeignKey("drivers.id"), primary_key=True)
    business_date: Mapped[date] = mapped_column(Date, primary_key=True)
    target_cents: Mapped[int] = mapped_column(BigInteger)
    contributed_cents: Mapped[int] = mapped_column(BigInteger, server_default="0")
    # Shortfall carried in from earlier days (already part of target_cents) and misses so far.
    carried_cents: Mapped[int] = mapped_column(BigInteger, server_default="0")
    misses_carried: Mapped[int] = mapped_column(Integer, server_default="0")
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    close_outcome: Mapped[str | None] = mapped_column(Text)
    # How many times its close was undone: a close after an undo keys its postings ``…/<n+1>``.
    reopened: Mapped[int] = mapped_column(Integer, server_default="0")
    # Whether its close flagged the driver for termination, and the vehicle that close freed: what
    # undoing the close restores.
    flagged: Mapped[bool] = mapped_column(Boolean, server_default="false")
    freed_vehicle_id: Mapped[int | None] = mapped_column(ForeignKey("vehicles.id"))


class DayOff(Base):
    """A rostered day off: the close counts no miss for it (docs/rules.md, daily close)."""

    __tablename__ = "days_off"

    driver_id: Mapped[int] = mapped_column(ForeignKey("drivers.id"), primary_key=True)
    business_date: Mapped[date] = mapped_column(Date, primary_key=True)
    operator: Mapped[str] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()


class OperatorAction(Base):
    """What a person did by hand that changed money or a driver's standing (an undone close, a
    reinstatement, a withdrawn payout …): who, why and when. Append-only (migration 0009)."""

    __tablename__ = "operator_actions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    action: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    operator: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()


class DailyClose(Base):
    """A business day the daily close has run for: what the scheduler catches up from, and the
    record of a close an operator forced (with the reason)."""

    __tablename__ = "daily_closes"

    business_date: Mapped[date] = mapped_column(Date, primary_key=True)
    closed_at: Mapped[datetime] = _now()
    forced_reason: Mapped[str | None] = mapped_column(Text)


class FloatQuery(Base):
    """An Account Balance query we sent, by the id Daraja gave it: only an answer to one of these
    is believed."""

    __tablename__ = "float_queries"

    originator_conversation_id: Mapped[str] = mapped_column(Text, primary_key=True)
    created_at: Mapped[datetime] = _now()


class FloatObservation(Base):
    """M-Pesa's own word on the B2C shortcode's accounts (an Account Balance answer), and what the
    ledger said M-Pesa held for us when it was recorded."""

    __tablename__ = "float_observations"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    inbox_id: Mapped[int] = mapped_column(ForeignKey("inbox.id"), unique=True)
    observed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # M-Pesa's BOCompletedTime
    utility_available_cents: Mapped[int] = mapped_column(BigInteger)
    working_available_cents: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = _now()


class ReconciliationRun(Base):
    """One reconciliation: a check (never changes money) or a fix (by the operator named)."""

    __tablename__ = "reconciliation_runs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(Text)  # check | fix | mpesa
    operator: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = _now()
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    discrepancies: Mapped[int] = mapped_column(Integer, server_default="0")
    fixed: Mapped[int] = mapped_column(Integer, server_default="0")
    # Why the run could not do its work (e.g. Pull Transactions refused), in one line.
    error: Mapped[str | None] = mapped_column(Text)


class ReconciliationDiscrepancy(Base):
    """One difference a reconciliation found: what the ledger says, what the cache or the
    payout (or M-Pesa) says, and the difference."""

    __tablename__ = "reconciliation_discrepancies"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("reconciliation_runs.id"), index=True)
    kind: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    expected_cents: Mapped[int | None] = mapped_column(BigInteger)
    actual_cents: Mapped[int | None] = mapped_column(BigInteger)
    difference_cents: Mapped[int | None] = mapped_column(BigInteger)


class ReconciliationFix(Base):
    """A correction an operator's fix made: keyed by the discrepancy, so it is made once."""

    __tablename__ = "reconciliation_fixes"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    key: Mapped[str] = mapped_column(Text, unique=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("reconciliation_runs.id"))
    kind: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    delta_cents: Mapped[int] = mapped_column(BigInteger)
    operator: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()


class SchedulerFiring(Base):
    """A scheduled job fired for one period: the unique key makes each period fire once."""

    __tablename__ = "scheduler_firings"
    __table_args__ = (UniqueConstraint("job", "period"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    job: Mapped[str] = mapped_column(Text)
    period: Mapped[str] = mapped_column(Text)
    instance: Mapped[str] = mapped_column(Text)
    fired_at: Mapped[datetime] = _now()


USER_ROLES = ("viewer", "operator", "approver", "admin")
REQUEST_STATES = ("pending", "running", "done", "rejected", "failed")


class User(Base):
    """A person who uses the console (and names themselves in the CLI): a role, an argon2id hash."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_in("role", USER_ROLES), name="role_known"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    username: Mapped[str] = mapped_column(Text, unique=True)
    role: Mapped[str] = mapped_column(Text)
    password_hash: Mapped[str] = mapped_column(Text)
    disabled: Mapped[bool] = mapped_column(Boolean, server_default="false")
    failed_logins: Mapped[int] = mapped_column(Integer, server_default="0")
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Bumped by a logout and a password change: every session cookie issued before is void.
    session_version: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[datetime] = _now()


class ApiToken(Base):
    """A user's token for the ``/admin`` JSON API: the user's role and name go with every call.
    Only its SHA-256 is kept (the token is 256 random bits, shown once when it is made)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    name: Mapped[str] = mapped_column(Text)
    token_sha256: Mapped[str] = mapped_column(Text, unique=True)
    created_at: Mapped[datetime] = _now()
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MoneyRequest(Base):
    """A money movement a person asked for, waiting for another person's approval (four eyes):
    what (``kind`` and ``params``), who asked and why, who decided, and what came of it."""

    __tablename__ = "money_requests"
    __table_args__ = (
        CheckConstraint(_in("state", REQUEST_STATES), name="state_known"),
        Index("ix_money_requests_pending", "id", postgresql_where=text("state = 'pending'")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB)
    reason: Mapped[str] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(Text, server_default="pending")
    decided_by: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = _now()


class BusinessDayTotals(Base):
    """A business day's takings and payouts, for the console's chart and dashboard: a past day's
    computed once, when the day is ``SETTLED_AFTER_DAYS`` old (``db.statements``), since summing a
    month of the ledger on every page view cost seconds on a big fleet; today's added to as its
    postings settle (``folded_before``: today's postings made before it are counted here, with
    the drivers' shares and contributions). Not money: a cache a person reads."""

    __tablename__ = "business_day_totals"

    business_date: Mapped[date] = mapped_column(Date, primary_key=True)
    takings_cents: Mapped[int] = mapped_column(BigInteger)
    paid_out_cents: Mapped[int] = mapped_column(BigInteger)
    shares_cents: Mapped[int] = mapped_column(BigInteger, server_default="0")
    contributions_cents: Mapped[int] = mapped_column(BigInteger, server_default="0")
    folded_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    computed_at: Mapped[datetime] = _now()


# pending → sending (claimed, one attempt) → sent | pending (not sent: tried again) | failed (the
# provider refused this number for good) | unknown (its answer was lost twice: not sent again);
# skipped: turned off, opted out, or no usable number (never sent).
NOTIFICATION_STATES = ("pending", "sending", "sent", "failed", "unknown", "skipped")


class Notification(Base):
    """One SMS a driver is owed, written in the same transaction as the money it describes and
    keyed by that event (``kind``, ``subject``: a redelivered message never writes a second one).
    ``facts`` are what the text says; ``message`` is the text, made once at the first attempt."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("kind", "subject"),
        CheckConstraint(_in("state", NOTIFICATION_STATES), name="state_known"),
        CheckConstraint(_in("kind", NOTICE_KINDS), name="kind_known"),
        Index("ix_notifications_due", "next_attempt_at", postgresql_where=text("state IN ('pending', 'sending')")),
        Index("ix_notifications_sent_at", "sent_at", postgresql_where=text("state = 'sent'")),
        Index("ix_notifications_provider_message_id", "provider_message_id",
              postgresql_where=text("provider_message_id IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(Text)
    subject: Mapped[str] = mapped_column(Text)
    driver_id: Mapped[int] = mapped_column(ForeignKey("drivers.id"), index=True)
    facts: Mapped[dict[str, Any]] = mapped_column(JSONB)
    state: Mapped[str] = mapped_column(Text, server_default="pending")
    msisdn: Mapped[str | None] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(Text)
    message: Mapped[str | None] = mapped_column(Text)
    segments: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    answers_lost: Mapped[int] = mapped_column(Integer, server_default="0")
    next_attempt_at: Mapped[datetime] = _now()
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    provider_message_id: Mapped[str | None] = mapped_column(Text)
    provider_status: Mapped[str | None] = mapped_column(Text)
    delivery_status: Mapped[str | None] = mapped_column(Text)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()
