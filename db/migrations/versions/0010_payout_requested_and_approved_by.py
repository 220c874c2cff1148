"""payouts: who asked for a payout made by hand, and who approved it (four eyes)

Revision ID: 0010
Revises: 0009
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0010"
down_revision: Union[str, Sequence[str], None] = "0009"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column("payouts", sa.Column("requested_by", sa.Text(), nullable=True))
    op.add_column("payouts", sa.Column("approved_by", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("payouts", "approved_by")
    op.drop_column("payouts", "requested_by")
