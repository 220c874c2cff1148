"""money_requests.state 'running': an approved request whose movement runs in transactions of its
own (undoing a close, a reconciliation fix), between its approval and its outcome

Revision ID: 0014
Revises: 0013
"""
from typing import Sequence, Union

from alembic import op

revision: str = "0014"
down_revision: Union[str, Sequence[str], None] = "0013"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

NAME = "ck_money_requests_state_known"


def upgrade() -> None:
    op.drop_constraint(op.f(NAME), "money_requests", type_="check")
    op.create_check_constraint(op.f(NAME), "money_requests", "state IN ('pending', 'running', 'done', 'rejected', 'failed')")


def downgrade() -> None:
    # A request still running is recorded as failed: the older schema has no word for it.
    op.execute("UPDATE money_requests SET state = 'failed', outcome = '{\"error\": \"interrupted\"}' WHERE state = 'running'")
    op.drop_constraint(op.f(NAME), "money_requests", type_="check")
    op.create_check_constraint(op.f(NAME), "money_requests", "state IN ('pending', 'done', 'rejected', 'failed')")
