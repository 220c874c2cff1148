"""Typed parsing of whole Daraja callback bodies (already-decoded JSON) into frozen dataclasses.

Bodies must be decoded with ``json.loads(raw, parse_float=Decimal)``: amounts are refused as floats.
Every rejection is an `InvalidCallback` whose ``reason`` is a short code (kept on the inbox row) and
whose ``result_code`` is the C2B validation reject code that fits (docs/daraja.md §2.3).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from schemas.parsing import (
    InvalidField,
    normalise_msisdn,
    parse_account_balances,
    parse_amount_cents,
    parse_b2c_completed_time,
    parse_mpesa_time,
)

_TRANS_ID = re.compile(r"[A-Za-z0-9]{1,20}")
# Conversation and checkout ids: visible ASCII, bounded, so that one can be a unique database key.
_ID = re.compile(r"[\x21-\x7e]{1,100}")
_C2B_REJECT_BY_FIELD = {"TransAmount": "C2B00013", "BillRefNumber": "C2B00012"}
_C2B_OTHER_ERROR = "C2B00016"


class InvalidCallback(ValueError):
    """A callback body that cannot be applied; it is kept for review, never posted."""

    def __init__(self, reason: str, result_code: str = _C2B_OTHER_ERROR) -> None:
        super().__init__(reason)
        self.reason = reason
        self.result_code = result_code


@dataclass(frozen=True)
class C2BPayment:
    """A C2B validation or confirmation: the payer's money, addressed by ``bill_ref``."""

    trans_id: str
    trans_time: datetime
    amount_cents: int
    bill_ref: str
    short_code: str
    msisdn_raw: str  # masked or hashed on v2/v1: kept for the record, never used to match a payer
    first_name: str


@dataclass(frozen=True)
class StkResult:
    """An STK push outcome; the payment fields are set only when ``result_code == 0``."""

    checkout_request_id: str
    merchant_request_id: str
    result_code: int | str
    result_desc: str
    receipt: str | None
    amount_cents: int | None
    paid_at: datetime | None
    phone: str | None


@dataclass(frozen=True)
class B2CResult:
    """A B2C result (or queue timeout: same envelope); a receipt only when ``result_code == 0``."""

    originator_conversation_id: str
    conversation_id: str | None
    result_code: int | str
    result_desc: str
    receipt: str | None
    amount_cents: int | None
    completed_at: datetime | None
    receiver: str | None = None  # ReceiverPartyPublicName, e.g. "254705912645 - NAME" (may be masked)


@dataclass(frozen=True)
class TransactionStatusResult:
    """A Transaction Status answer about the payout ``original_originator_conversation_id``."""

    originator_conversation_id: str  # the status query's own id
    conversation_id: str | None
    result_code: int | str
    result_desc: str
    receipt: str | None
    amount_cents: int | None
    transaction_status: str | None
    original_originator_conversation_id: str | None
    debit_party: str | None = None  # DebitPartyName, e.g. "600997 - COMPANY": who paid
    credit_party: str | None = None  # CreditPartyName, e.g. "254708374149 - NAME": who was paid


@dataclass(frozen=True)
class BalanceResult:
    """An Account Balance answer: each account's available balance, by name (docs/daraja.md §5.2)."""

    originator_conversation_id: str  # the balance query's own id
    result_code: int | str
    result_desc: str
    available_cents: Mapping[str, int]  # e.g. {"Utility Account": 22803700, "Working Account": …}
    completed_at: datetime | None


def parse_balance_result(body: object) -> BalanceResult:
    """An Account Balance result: ``AccountBalance`` is one string, accounts split by ``&`` and
    fields by ``|`` (``Name|Currency|Current|Available|Reserved|Uncleared``)."""
    with _rejecting():
        result = _mapping(_mapping(body, "body").get("Result"), "Result")
        result_code = _result_code(result)
        available: dict[str, int] = {}
        completed_at: datetime | None = None
        if result_code == 0:
            params = _pairs(result, "ResultParameters", "ResultParameter", "Key")
            available = parse_account_balances(_required(params, "AccountBalance"))
            if "BOCompletedTime" in params:
                completed_at = parse_mpesa_time(params["BOCompletedTime"], field="BOCompletedTime")
        return BalanceResult(
            originator_conversation_id=_identifier(result, "OriginatorConversationID"),
            result_code=result_code,
            result_desc=_optional(result, "ResultDesc") or "",
            available_cents=available,
            completed_at=completed_at,
        )


def parse_c2b(body: object, *, max_amount_cents: int = 50_000_000) -> C2BPayment:
    """A C2B validation or confirmation body (both share one shape, docs/daraja.md §2.2)."""
    with _rejecting():
        fields = _mapping(body, "body")
        trans_id = _required(fields, "TransID")
        if not _TRANS_ID.fullmatch(trans_id):
            raise InvalidField("TransID", "invalid_field:TransID")
        return C2BPayment(
            trans_id=trans_id,
            trans_time=parse_mpesa_time(_present(fields, "TransTime"), field="TransTime"),
            amount_cents=parse_amount_cents(
                _present(fields, "TransAmount"), field="TransAmount", max_cents=max_amount_cents
            ),
            bill_ref=_required(fields, "BillRefNumber"),
            short_code=_optional(fields, "BusinessShortCode") or "",
            msisdn_raw=_optional(fields, "MSISDN") or "",
            first_name=_optional(fields, "FirstName") or "",
        )


def parse_stk(body: object) -> StkResult:
    """An STK callback; metadata items are looked up by Name, never by position (docs/daraja.md §3)."""
    with _rejecting():
        callback = _mapping(_mapping(body, "body").get("Body"), "Body")
        callback = _mapping(callback.get("stkCallback"), "stkCallback")
        result_code = _result_code(callback)
        receipt: str | None = None
        amount_cents: int | None = None
        paid_at: datetime | None = None
        phone: str | None = None
        if result_code == 0:  # failure callbacks carry no CallbackMetadata at all
            _present(callback, "CallbackMetadata")
            items = _pairs(callback, "CallbackMetadata", "Item", "Name")
            receipt = _required(items, "MpesaReceiptNumber")
            amount_cents = parse_amount_cents(_present(items, "Amount"), field="Amount")
            paid_at = parse_mpesa_time(_present(items, "TransactionDate"), field="TransactionDate")
            phone = normalise_msisdn(items.get("PhoneNumber"))
        return StkResult(
            checkout_request_id=_identifier(callback, "CheckoutRequestID"),
            merchant_request_id=_required(callback, "MerchantRequestID"),
            result_code=result_code,
            result_desc=_optional(callback, "ResultDesc") or "",
            receipt=receipt,
            amount_cents=amount_cents,
            paid_at=paid_at,
            phone=phone,
        )


def parse_b2c_result(body: object) -> B2CResult:
    """A B2C result or queue-timeout body. Which of the two it is comes from the URL, not the body.

    A failed result may carry a TransactionID; it is not a receipt and is ignored (docs/daraja.md §4.3).
    """
    with _rejecting():
        result = _mapping(_mapping(body, "body").get("Result"), "Result")
        result_code = _result_code(result)
        receipt: str | None = None
        amount_cents: int | None = None
        completed_at: datetime | None = None
        receiver: str | None = None
        if result_code == 0:
            params = _pairs(result, "ResultParameters", "ResultParameter", "Key")
            receipt = _optional(params, "TransactionReceipt") or _required(result, "TransactionID")
            amount_cents = _optional_amount(params, "TransactionAmount")
            receiver = _optional(params, "ReceiverPartyPublicName")
            if "TransactionCompletedDateTime" in params:
                completed_at = parse_b2c_completed_time(params["TransactionCompletedDateTime"])
        return B2CResult(
            originator_conversation_id=_identifier(result, "OriginatorConversationID"),
            conversation_id=_optional(result, "ConversationID"),
            result_code=result_code,
            result_desc=_optional(result, "ResultDesc") or "",
            receipt=receipt,
            amount_cents=amount_cents,
            completed_at=completed_at,
            receiver=receiver,
        )


def parse_status_result(body: object) -> TransactionStatusResult:
    """A Transaction Status result; older key spellings with spaces are accepted (docs/daraja.md §5.1).

    Its parameters describe the *queried* transaction; whether that one paid is for the caller to
    decide from ``result_code`` and ``transaction_status`` together.
    """
    with _rejecting():
        result = _mapping(_mapping(body, "body").get("Result"), "Result")
        params = _pairs(result, "ResultParameters", "ResultParameter", "Key")
        return TransactionStatusResult(
            originator_conversation_id=_identifier(result, "OriginatorConversationID"),
            conversation_id=_optional(result, "ConversationID"),
            result_code=_result_code(result),
            result_desc=_optional(result, "ResultDesc") or "",
            receipt=_optional(params, "ReceiptNo"),
            amount_cents=_optional_amount(params, "Amount"),
            transaction_status=_optional(params, "TransactionStatus"),
            original_originator_conversation_id=_optional(params, "OriginatorConversationID"),
            debit_party=_optional(params, "DebitPartyName"),
            credit_party=_optional(params, "CreditPartyName"),
        )


_EXTERNAL_ID_PATH: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "c2b_validation": ("", ("TransID",)),
    "c2b_confirmation": ("", ("TransID",)),
    "stk_result": ("", ("Body", "stkCallback", "CheckoutRequestID")),
    "b2c_result": ("", ("Result", "OriginatorConversationID")),
    "b2c_timeout": ("timeout:", ("Result", "OriginatorConversationID")),
    "status_result": ("", ("Result", "OriginatorConversationID")),
    "status_timeout": ("timeout:", ("Result", "OriginatorConversationID")),
    "balance_result": ("", ("Result", "OriginatorConversationID")),
    "balance_timeout": ("timeout:", ("Result", "OriginatorConversationID")),
}


def external_id(kind: str, body: object) -> str:
    """The inbox dedupe key of a callback: a redelivery of the same callback gets the same key.

    Timeouts are prefixed so that a timeout and the final result for the same request are two
    inbox rows (a timeout may come first, docs/daraja.md §4.6). Cheap: the ingest calls it per request.
    """
    if kind not in _EXTERNAL_ID_PATH:
        raise ValueError(f"unknown callback kind {kind!r}")  # a bug in the caller, not the body
    if not isinstance(body, Mapping):
        raise InvalidCallback("not_an_object")
    prefix, path = _EXTERNAL_ID_PATH[kind]
    node: object = body
    for key in path:
        node = node.get(key) if isinstance(node, Mapping) else None
    field = path[-1]
    if node is None or node == "":
        raise InvalidCallback(f"missing_field:{field}")
    pattern = _TRANS_ID if field == "TransID" else _ID
    if not isinstance(node, str) or not pattern.fullmatch(node):
        raise InvalidCallback(f"invalid_field:{field}")
    return prefix + node


# Results about our payouts: every distinct body is its own inbox row (a failure and the real success
# for the same payout must both be seen); receipts are keyed by their id alone, the first body wins.
RESULT_KINDS = frozenset(
    {"b2c_result", "b2c_timeout", "status_result", "status_timeout", "balance_result", "balance_timeout"}
)
_DIGEST_CHARS_IN_KEY = 24


def body_digest(body: object) -> str:
    """SHA-256 of the body's canonical JSON (keys sorted, no spacing): the same callback sent again
    with other whitespace or key order has the same digest; any other content has another."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8", errors="surrogatepass")).hexdigest()


def inbox_key(kind: str, body: object, digest: str) -> str:
    """The inbox dedupe key: the callback's ``external_id``, and for results also its body digest,
    so that identical copies are stored once and every different body beside the first."""
    key = external_id(kind, body)
    return with_digest(key, digest) if kind in RESULT_KINDS else key


def with_digest(key: str, digest: str) -> str:
    """``key`` made distinct per body: results' keys, and a receipt's conflicting bodies."""
    return f"{key}#{digest[:_DIGEST_CHARS_IN_KEY]}"


def natural_id(key: str) -> str:
    """The external id a stored inbox key was made from (``inbox_key`` undone)."""
    return key.split("#", 1)[0]


@contextmanager
def _rejecting() -> Iterator[None]:
    """Turn a field error into an `InvalidCallback` carrying the C2B code that fits the field."""
    try:
        yield
    except InvalidField as error:
        code = _C2B_REJECT_BY_FIELD.get(error.field, _C2B_OTHER_ERROR)
        raise InvalidCallback(error.reason, code) from error


def _mapping(value: object, field: str) -> Mapping[str, object]:
    if isinstance(value, Mapping):
        return value
    if field == "body":
        raise InvalidField(field, "not_an_object")
    raise InvalidField(field, f"missing_field:{field}")


def _present(fields: Mapping[str, object], key: str) -> object:
    value = fields.get(key)
    if value is None or value == "":
        raise InvalidField(key, f"missing_field:{key}")
    return value


def _optional(fields: Mapping[str, object], key: str) -> str | None:
    """A text field; JSON numbers (short codes, phone numbers) are read as their digits."""
    value = fields.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise InvalidField(key, f"invalid_field:{key}")


def _required(fields: Mapping[str, object], key: str) -> str:
    value = _optional(fields, key)
    if value is None or not value.strip():
        raise InvalidField(key, f"missing_field:{key}")
    return value


def _identifier(fields: Mapping[str, object], key: str) -> str:
    value = _required(fields, key)
    if not _ID.fullmatch(value):
        raise InvalidField(key, f"invalid_field:{key}")
    return value


def _optional_amount(fields: Mapping[str, object], key: str) -> int | None:
    value = fields.get(key)
    return None if value is None else parse_amount_cents(value, field=key)


def _result_code(fields: Mapping[str, object]) -> int | str:
    """``0`` and ``"0"`` are the same code (docs/daraja.md §8.5); ``SFC_IC0003``-like codes stay text."""
    value = fields.get("ResultCode")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    code = value.strip() if isinstance(value, str) else value
    if code is None or code == "":
        raise InvalidField("ResultCode", "missing_field:ResultCode")
    if isinstance(code, str) and code.isascii() and code.isdigit() and len(code) <= 18:
        return int(code)
    if isinstance(code, str) and _ID.fullmatch(code):
        return code
    raise InvalidField("ResultCode", "invalid_field:ResultCode")


def _pairs(
    fields: Mapping[str, object], container_key: str, list_key: str, name_key: str
) -> dict[str, object]:
    """``{container_key: {list_key: [{name_key: k, "Value": v}, …]}}`` as ``{k: v}``.

    A lone dict counts as a one-item list. Names lose their spaces ("Originator Conversation ID"
    is "OriginatorConversationID"); an item without a Value (STK's ``Balance``) is left out.
    """
    container = fields.get(container_key)
    if container is None:
        return {}
    if not isinstance(container, Mapping):
        raise InvalidField(container_key, f"invalid_field:{container_key}")
    items = container.get(list_key)
    if isinstance(items, Mapping):
        items = [items]
    if items is None:
        raise InvalidField(list_key, f"missing_field:{list_key}")
    if not isinstance(items, list):
        raise InvalidField(list_key, f"invalid_field:{list_key}")
    pairs: dict[str, object] = {}
    for item in items:
        if not isinstance(item, Mapping) or not isinstance(item.get(name_key), str):
            raise InvalidField(list_key, f"invalid_field:{list_key}")
        if item.get("Value") is not None:
            pairs[item[name_key].replace(" ", "")] = item["Value"]
    return pairs
