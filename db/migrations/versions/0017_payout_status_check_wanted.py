"""payouts.status_check_wanted_at: a Transaction Status query a person asked for (an approved
``payout_resolve`` request) and Daraja has not taken yet; the payout sweep asks until it does.
vehicles.substitute_driver_id is indexed (the drivers page joins each driver's vehicles by it);
results about payouts are indexed by the id they name, and remember the payout they were taken to be
about (inbox.payout_id): a payout's page lists its evidence

Revision ID: 0017
Revises: 0016
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0017"
down_revision: Union[str, Sequence[str], None] = "0016"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

RESULTS = "kind IN ('b2c_result', 'b2c_timeout', 'status_result', 'status_timeout')"  # db.models.PAYOUT_RESULT_KINDS


def upgrade() -> None:
    op.add_column("payouts", sa.Column("status_check_wanted_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("inbox", sa.Column("payout_id", sa.BigInteger(), nullable=True))  # no default: no rewrite
    with op.get_context().autocommit_block():
        op.create_index("ix_vehicles_substitute_driver_id", "vehicles", ["substitute_driver_id"],
                        postgresql_concurrently=True, if_not_exists=True)
        op.create_index("ix_inbox_result_natural_id", "inbox", [sa.text("split_part(external_id, '#', 1)")],
                        postgresql_where=sa.text(RESULTS), postgresql_concurrently=True, if_not_exists=True)
        op.create_index("ix_inbox_payout_id", "inbox", ["payout_id"], postgresql_where=sa.text("payout_id IS NOT NULL"),
                        postgresql_concurrently=True, if_not_exists=True)


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index("ix_inbox_payout_id", table_name="inbox", postgresql_concurrently=True, if_exists=True)
        op.drop_index("ix_inbox_result_natural_id", table_name="inbox", postgresql_concurrently=True, if_exists=True)
        op.drop_index("ix_vehicles_substitute_driver_id", table_name="vehicles", postgresql_concurrently=True, if_exists=True)
    op.drop_column("inbox", "payout_id")
    op.drop_column("payouts", "status_check_wanted_at")
