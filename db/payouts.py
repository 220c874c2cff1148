"""Payout rows and the ledger moves that go with them (DESIGN.md §3).

Creating a payout moves its amount ``payable → payouts_in_flight`` in the same transaction, so the
money owed and the money on its way always add up. The payout is keyed by our own
OriginatorConversationID, minted once here and never again for the same payout while an earlier
attempt may have paid.
"""

from __future__ import annotations

import secrets
from datetime import date

from sqlalchemy.orm import Session

from db import ledger
from db.models import Driver, Payout


def new_originator_conversation_id() -> str:
    # Unique across databases too (a restored or re-created database must not reuse an id
    # Safaricom has already seen): random, not a sequence.
    return f"fp_{secrets.token_hex(10)}"


def create_payout(
    session: Session,
    *,
    driver: Driver,
    amount_cents: int,
    cause_key: str,
    business_date: date,
    requires_approval: bool = False,
) -> Payout:
    """A ``pending`` payout of ``amount_cents`` to ``driver``, reserved from their payable account.

    Call under the driver's lock. ``cause_key`` is unique: the same cause cannot pay twice.
    """
    assert amount_cents > 0 and amount_cents % 100 == 0, amount_cents
    payout = Payout(
        originator_conversation_id=new_originator_conversation_id(),
        cause_key=cause_key,
        driver_id=driver.id,
        msisdn=driver.msisdn,
        amount_cents=amount_cents,
        requires_approval=requires_approval,
    )
    session.add(payout)
    session.flush()
    accounts = ledger.driver_accounts(session, driver.id)
    ledger.post(
        session,
        key=f"payout:{payout.id}:reserve",
        kind="payout_reserve",
        business_date=business_date,
        driver_id=driver.id,
        payout_id=payout.id,
        legs=[
            (accounts.payable, -amount_cents),
            (ledger.system_accounts(session).payouts_in_flight, amount_cents),
        ],
    )
    return payout
