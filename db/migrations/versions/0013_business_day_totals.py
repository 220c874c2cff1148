"""business_day_totals: a past business day's takings and payouts, computed once for the console's
chart (summing a month of the ledger on every page view cost seconds on a big fleet)

Revision ID: 0013
Revises: 0012
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0013"
down_revision: Union[str, Sequence[str], None] = "0012"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "business_day_totals",
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("takings_cents", sa.BigInteger(), nullable=False),
        sa.Column("paid_out_cents", sa.BigInteger(), nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("business_date", name=op.f("pk_business_day_totals")),
    )


def downgrade() -> None:
    op.drop_table("business_day_totals")
