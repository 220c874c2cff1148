"""undoing a close, reinstating a driver, rostered days off, and the record of what operators did

Revision ID: 0009
Revises: 0008
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision: str = "0009"
down_revision: Union[str, Sequence[str], None] = "0008"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.add_column("driver_days", sa.Column("reopened", sa.Integer(), server_default="0", nullable=False))
    op.add_column("driver_days", sa.Column("flagged", sa.Boolean(), server_default="false", nullable=False))
    op.add_column("driver_days", sa.Column("freed_vehicle_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key(op.f("fk_driver_days_freed_vehicle_id_vehicles"), "driver_days", "vehicles",
                          ["freed_vehicle_id"], ["id"])
    op.create_table(
        "days_off",
        sa.Column("driver_id", sa.BigInteger(), nullable=False),
        sa.Column("business_date", sa.Date(), nullable=False),
        sa.Column("operator", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["driver_id"], ["drivers.id"], name=op.f("fk_days_off_driver_id_drivers")),
        sa.PrimaryKeyConstraint("driver_id", "business_date", name=op.f("pk_days_off")),
    )
    op.create_table(
        "operator_actions",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("operator", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("detail", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_actions")),
    )
    # The record is append-only, like the ledger.
    op.execute("""
        CREATE FUNCTION operator_actions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'operator_actions is append-only'; END $$;
        CREATE TRIGGER operator_actions_append_only BEFORE UPDATE OR DELETE ON operator_actions
        FOR EACH ROW EXECUTE FUNCTION operator_actions_append_only();
    """)


def downgrade() -> None:
    op.execute("DROP TRIGGER operator_actions_append_only ON operator_actions;"
               " DROP FUNCTION operator_actions_append_only();")
    op.drop_table("operator_actions")
    op.drop_table("days_off")
    op.drop_constraint(op.f("fk_driver_days_freed_vehicle_id_vehicles"), "driver_days", type_="foreignkey")
    op.drop_column("driver_days", "freed_vehicle_id")
    op.drop_column("driver_days", "flagged")
    op.drop_column("driver_days", "reopened")
