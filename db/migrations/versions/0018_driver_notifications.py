"""notifications: the SMS outbox (one row per event that concerns a driver, keyed by the event);
drivers.language and drivers.sms_opt_out; drivers are found by their M-Pesa number (USSD)

Revision ID: 0018
Revises: 0017
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision: str = "0018"
down_revision: Union[str, Sequence[str], None] = "0017"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

KINDS = ("payment", "payout_paid", "payout_delayed", "daily_summary", "termination_warning", "deposit_refund",
         "statement")  # fleetpay.notice_texts.NOTICE_KINDS
STATES = ("pending", "sending", "sent", "failed", "unknown", "skipped")  # db.models.NOTIFICATION_STATES


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def upgrade() -> None:
    op.add_column("drivers", sa.Column("language", sa.Text(), nullable=True))
    op.add_column("drivers", sa.Column("sms_opt_out", sa.Boolean(), server_default="false", nullable=False))
    op.create_check_constraint(op.f("ck_drivers_language_known"), "drivers", "language IN ('en', 'sw')")
    op.create_table(
        "notifications",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("driver_id", sa.BigInteger(), nullable=False),
        sa.Column("facts", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("state", sa.Text(), server_default="pending", nullable=False),
        sa.Column("msisdn", sa.Text(), nullable=True),
        sa.Column("language", sa.Text(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("segments", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("answers_lost", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("provider_message_id", sa.Text(), nullable=True),
        sa.Column("provider_status", sa.Text(), nullable=True),
        sa.Column("delivery_status", sa.Text(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint(_in("state", STATES), name=op.f("ck_notifications_state_known")),
        sa.CheckConstraint(_in("kind", KINDS), name=op.f("ck_notifications_kind_known")),
        sa.ForeignKeyConstraint(["driver_id"], ["drivers.id"], name=op.f("fk_notifications_driver_id_drivers")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
        sa.UniqueConstraint("kind", "subject", name=op.f("uq_notifications_kind_subject")),
    )
    op.create_index("ix_notifications_driver_id", "notifications", ["driver_id"])
    op.create_index("ix_notifications_due", "notifications", ["next_attempt_at"],
                    postgresql_where=sa.text("state IN ('pending', 'sending')"))
    op.create_index("ix_notifications_sent_at", "notifications", ["sent_at"], postgresql_where=sa.text("state = 'sent'"))
    op.create_index("ix_notifications_provider_message_id", "notifications", ["provider_message_id"],
                    postgresql_where=sa.text("provider_message_id IS NOT NULL"))
    with op.get_context().autocommit_block():
        op.create_index("ix_drivers_msisdn", "drivers", ["msisdn"], postgresql_concurrently=True, if_not_exists=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_drivers_msisdn", table_name="drivers", postgresql_concurrently=True, if_exists=True)
    op.drop_table("notifications")
    op.drop_constraint(op.f("ck_drivers_language_known"), "drivers", type_="check")
    op.drop_column("drivers", "sms_opt_out")
    op.drop_column("drivers", "language")
