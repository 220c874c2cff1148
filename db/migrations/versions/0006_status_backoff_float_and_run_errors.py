"""status query backoff, the B2C float's observations, reconciliation run errors

Revision ID: 0006
Revises: 0005
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0006"
down_revision: Union[str, Sequence[str], None] = "0005"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column("payouts", sa.Column("status_queries", sa.Integer(), server_default="0", nullable=False))
    op.add_column("reconciliation_runs", sa.Column("error", sa.Text(), nullable=True))
    op.create_table(
        "float_queries",
        sa.Column("originator_conversation_id", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("originator_conversation_id", name=op.f("pk_float_queries")),
    )
    op.create_table(
        "float_observations",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("inbox_id", sa.BigInteger(), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("utility_available_cents", sa.BigInteger(), nullable=False),
        sa.Column("working_available_cents", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["inbox_id"], ["inbox.id"], name=op.f("fk_float_observations_inbox_id_inbox")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_float_observations")),
        sa.UniqueConstraint("inbox_id", name=op.f("uq_float_observations_inbox_id")),
    )


def downgrade() -> None:
    op.drop_table("float_observations")
    op.drop_table("float_queries")
    op.drop_column("reconciliation_runs", "error")
    op.drop_column("payouts", "status_queries")
