"""What a stored result about a payout says, as a person reads it (the payout's page, ``fleetpay
payouts show``). Pure: a kept body in, the fields that decide a payout out. A body that cannot be
read says why instead; reading never raises."""

from __future__ import annotations

from typing import Any

from schemas.callbacks import parse_b2c_result, parse_status_result
from schemas.json_body import decode_json


def read_result(kind: str, body: str) -> dict[str, Any]:
    """``kind`` is a payout result kind (``b2c_result``, ``b2c_timeout``, ``status_result``,
    ``status_timeout``); the answer's keys are the same for all, None where the body says nothing."""
    try:
        decoded = decode_json(body.encode("utf-8", errors="surrogatepass"))
        if kind.startswith("status_"):
            status = parse_status_result(decoded)
            return {"result_code": str(status.result_code), "result_desc": status.result_desc, "receipt": status.receipt,
                    "amount_cents": status.amount_cents, "transaction_status": status.transaction_status,
                    "payee": status.credit_party, "payer": status.debit_party,
                    "about": status.original_originator_conversation_id, "unreadable": None}
        result = parse_b2c_result(decoded)
        return {"result_code": str(result.result_code), "result_desc": result.result_desc, "receipt": result.receipt,
                "amount_cents": result.amount_cents, "transaction_status": None, "payee": result.receiver,
                "payer": None, "about": result.originator_conversation_id, "unreadable": None}
    except ValueError as error:  # InvalidCallback, or a value no field takes
        return {key: None for key in ("result_code", "result_desc", "receipt", "amount_cents", "transaction_status",
                                      "payee", "payer", "about")} | {"unreadable": getattr(error, "reason", str(error))[:200]}
