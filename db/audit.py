"""The record of what people did by hand (``operator_actions``, append-only): who, why, when."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from db.models import OperatorAction
from fleetpay.people import operator_name


def record_action(
    session: Session, *, action: str, subject: str, operator: str, reason: str, detail: dict[str, Any] | None = None
) -> int:
    """Record an operator's action in the caller's transaction (it commits with what it did);
    the name as ``fleetpay.people.operator_name`` spells it (``BadName`` otherwise)."""
    if not reason.strip():
        raise ValueError("an operator's action says why")
    row = OperatorAction(action=action, subject=subject, operator=operator_name(operator), reason=reason, detail=detail)
    session.add(row)
    session.flush()
    return row.id


def recent_actions(session: Session, *, limit: int = 100) -> list[dict[str, Any]]:
    """The newest actions first."""
    rows = session.execute(select(OperatorAction).order_by(OperatorAction.id.desc()).limit(limit)).scalars()
    return [
        {"id": r.id, "at": r.created_at.isoformat(), "action": r.action, "subject": r.subject,
         "operator": r.operator, "reason": r.reason, "detail": r.detail}
        for r in rows
    ]
