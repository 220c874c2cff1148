"""business_day_totals keeps today's figures as its postings settle (shares_cents,
contributions_cents, folded_before); postings are indexed by (business_date, created_at), which
also serves what the business_date index did, to find the last minutes' of today (the console's
dashboard read today's 330,000 entries and 100,000 driver days on every view)

Revision ID: 0016
Revises: 0015
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0016"
down_revision: Union[str, Sequence[str], None] = "0015"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column("business_day_totals", sa.Column("shares_cents", sa.BigInteger(), server_default="0", nullable=False))
    op.add_column("business_day_totals", sa.Column("contributions_cents", sa.BigInteger(), server_default="0", nullable=False))
    op.add_column("business_day_totals", sa.Column("folded_before", sa.DateTime(timezone=True), nullable=True))
    # Built and dropped without blocking the payments that insert postings meanwhile.
    with op.get_context().autocommit_block():
        op.create_index("ix_postings_business_date_created_at", "postings", ["business_date", "created_at"],
                        postgresql_concurrently=True, if_not_exists=True)
        op.drop_index("ix_postings_business_date", table_name="postings", postgresql_concurrently=True, if_exists=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.create_index("ix_postings_business_date", "postings", ["business_date"], postgresql_concurrently=True,
                        if_not_exists=True)
        op.drop_index("ix_postings_business_date_created_at", table_name="postings", postgresql_concurrently=True,
                      if_exists=True)
    # Today's partial figures mean nothing to the older schema: it computes today live.
    op.execute("DELETE FROM business_day_totals WHERE folded_before IS NOT NULL")
    op.drop_column("business_day_totals", "folded_before")
    op.drop_column("business_day_totals", "contributions_cents")
    op.drop_column("business_day_totals", "shares_cents")
