"""the business days the daily close has run for

Revision ID: 0007
Revises: 0006
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0007"
down_revision: Union[str, Sequence[str], None] = "0006"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "daily_closes",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("forced_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("business_date", name=op.f("pk_daily_closes")),
    )
    # Days closed before this table existed: every day some driver's day was closed.
    op.execute(
        "INSERT INTO daily_closes (business_date, closed_at)"
        " SELECT business_date, max(closed_at) FROM driver_days WHERE closed_at IS NOT NULL GROUP BY business_date"
    )


def downgrade() -> None:
    op.drop_table("daily_closes")
