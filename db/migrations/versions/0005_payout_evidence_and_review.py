"""payout evidence, review and confirmed failures; conflicting duplicate callbacks kept

Payouts gain the states ``failure_reported`` (a failure result waits for our own status query to
confirm it) and ``review`` (a result did not match what we asked), the evidence of what settled
them, and a review reason. Inbox rows gain the body's digest and the status ``conflict``.

Revision ID: 0005
Revises: 0004
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0005"
down_revision: Union[str, Sequence[str], None] = "0004"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

OLD_PAYOUT_STATES = "state IN ('pending', 'submitting', 'submitted', 'paid', 'failed', 'unknown')"
PAYOUT_STATES = (
    "state IN ('pending', 'submitting', 'submitted', 'unknown', 'failure_reported', 'review', 'paid', 'failed')"
)
OLD_INBOX_STATES = "status IN ('received', 'processed', 'rejected', 'unmatched')"
INBOX_STATES = "status IN ('received', 'processed', 'rejected', 'unmatched', 'conflict')"


def upgrade() -> None:
    op.drop_constraint(op.f("ck_payouts_state_known"), "payouts", type_="check")
    op.create_check_constraint(op.f("ck_payouts_state_known"), "payouts", sa.text(PAYOUT_STATES))
    op.add_column("payouts", sa.Column("status_result_code", sa.Text(), nullable=True))
    op.add_column("payouts", sa.Column("settled_by_inbox_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key(op.f("fk_payouts_settled_by_inbox_id_inbox"), "payouts", "inbox", ["settled_by_inbox_id"], ["id"])
    op.add_column("payouts", sa.Column("review_reason", sa.Text(), nullable=True))
    op.drop_constraint(op.f("ck_inbox_status_known"), "inbox", type_="check")
    op.create_check_constraint(op.f("ck_inbox_status_known"), "inbox", sa.text(INBOX_STATES))
    op.add_column("inbox", sa.Column("body_digest", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("inbox", "body_digest")
    op.drop_constraint(op.f("ck_inbox_status_known"), "inbox", type_="check")
    op.create_check_constraint(op.f("ck_inbox_status_known"), "inbox", sa.text(OLD_INBOX_STATES))
    op.drop_column("payouts", "review_reason")
    op.drop_constraint(op.f("fk_payouts_settled_by_inbox_id_inbox"), "payouts", type_="foreignkey")
    op.drop_column("payouts", "settled_by_inbox_id")
    op.drop_column("payouts", "status_result_code")
    op.drop_constraint(op.f("ck_payouts_state_known"), "payouts", type_="check")
    op.create_check_constraint(op.f("ck_payouts_state_known"), "payouts", sa.text(OLD_PAYOUT_STATES))
