"""Identifiers shaped like the ones Daraja mints.

Clients store, index and sometimes parse these (receipts in SMS, ``AG_…`` conversation IDs), so
their shapes follow production: a client that works here keeps working there.
"""

from __future__ import annotations

import secrets
import string
from datetime import datetime

from simulator.formats import EAT

_RECEIPT_ALPHABET = string.ascii_uppercase + string.digits
_TOKEN_ALPHABET = string.ascii_letters + string.digits


def receipt_prefix(moment: datetime) -> str:
    """The date part of an M-Pesa receipt: year letter (S = 2024), month letter, day character.

    Real receipts start this way (``SG6…`` was issued on 6 July 2024), which keeps simulated
    receipts sortable by day like real ones.
    """
    local = moment.astimezone(EAT)
    year = string.ascii_uppercase[(local.year - 2006) % 26]
    month = string.ascii_uppercase[local.month - 1]
    day = (string.digits[1:] + string.ascii_uppercase)[local.day - 1]
    return f"{year}{month}{day}"


def new_receipt(moment: datetime) -> str:
    """A 10-character uppercase alphanumeric receipt (uniqueness is the state's job)."""
    return receipt_prefix(moment) + "".join(secrets.choice(_RECEIPT_ALPHABET) for _ in range(7))


def zero_receipt(moment: datetime) -> str:
    """The zero-filled ``TransactionID`` of results that move no money (``SG70000000``)."""
    return receipt_prefix(moment) + "0000000"


def new_conversation_id(moment: datetime) -> str:
    """``AG_20240706_20106e9209f64bebd05b``: Daraja's ConversationID."""
    return f"AG_{moment.astimezone(EAT):%Y%m%d}_2010{secrets.token_hex(8)}"


def new_originator_conversation_id() -> str:
    """``53e3-4aa8-9fe0-8fb5e4092cdd3533373``: the gateway-generated ID of v2/v3 APIs."""
    hexes = secrets.token_hex(12)
    digits = "".join(secrets.choice(string.digits) for _ in range(7))
    return f"{hexes[:4]}-{hexes[4:8]}-{hexes[8:12]}-{hexes[12:]}{digits}"


def new_merchant_request_id() -> str:
    """``f1e2-4b95-a71d-b30d3cdbb7a7942864``: M-Pesa Express's MerchantRequestID (same shape)."""
    return new_originator_conversation_id()


def new_checkout_request_id(moment: datetime, msisdn: str) -> str:
    """``ws_CO_21072024125243250722943992``: ``ws_CO_``, ddMMyyyyHHmmss (EAT), three digits and
    the MSISDN without ``254`` (uniqueness is the state's job)."""
    return (f"ws_CO_{moment.astimezone(EAT):%d%m%Y%H%M%S}{secrets.randbelow(1000):03d}"
            f"{msisdn[3:]}")


def new_legacy_originator_conversation_id() -> str:
    """``16740-34861180-1``: the gateway-generated ID of v1 APIs."""
    return f"{secrets.randbelow(90000) + 10000}-{secrets.randbelow(90_000_000) + 10_000_000}-1"


def new_request_id() -> str:
    """``11728-2929992-1``: the ``requestId`` of a gateway error envelope."""
    return f"{secrets.randbelow(90000) + 10000}-{secrets.randbelow(9_000_000) + 1_000_000}-1"


def new_access_token() -> str:
    """A 28-character alphanumeric token like ``c9SQxWWhmdVRlyh0zh8gZDTkubVF``."""
    return "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(28))


def is_receipt_like(value: str) -> bool:
    """10 uppercase alphanumerics: the shape C2B ``TransID`` always has."""
    return len(value) == 10 and all(ch in _RECEIPT_ALPHABET for ch in value)
