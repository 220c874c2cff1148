"""payouts reopened: a failed payout a matching success named, its money back in flight until our
own status query answers

Revision ID: 0008
Revises: 0007
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0008"
down_revision: Union[str, Sequence[str], None] = "0007"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

OLD = "state IN ('pending', 'submitting', 'submitted', 'unknown', 'failure_reported', 'review', 'paid', 'failed')"
NEW = (
    "state IN ('pending', 'submitting', 'submitted', 'unknown', 'failure_reported', 'review', 'reopened', 'paid',"
    " 'failed')"
)


def upgrade() -> None:
    op.drop_constraint(op.f("ck_payouts_state_known"), "payouts", type_="check")
    op.create_check_constraint(op.f("ck_payouts_state_known"), "payouts", sa.text(NEW))


def downgrade() -> None:
    op.drop_constraint(op.f("ck_payouts_state_known"), "payouts", type_="check")
    op.create_check_constraint(op.f("ck_payouts_state_known"), "payouts", sa.text(OLD))
