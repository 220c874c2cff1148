"""The simulator's own books: what it was asked, what it paid, what it told whom.

This record is the *source of truth* a test asserts against ("every payout was paid exactly
once"), so it is written at the moment money moves — never inferred from callbacks, which may
be dropped or duplicated on purpose.

All mutation goes through ``SimulatorState`` methods that hold one lock and never await, so the
record is consistent whether it is touched from the event loop or from another thread.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from simulator.faults import Api, Fault, Phase
from simulator.formats import money
from simulator.identifiers import new_access_token, new_checkout_request_id, new_receipt

B2CStatus = Literal["completed", "failed"]
C2BStatus = Literal["pending", "completed", "cancelled"]


def _record_json(record: Any) -> dict[str, Any]:
    """A record dataclass as JSON-ready data (Decimal -> "0.00", datetime -> ISO 8601)."""
    data: dict[str, Any] = _jsonable(asdict(record))
    return data


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return money(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


@dataclass(frozen=True)
class C2BRegistration:
    """The URLs registered for a short code, and with which API version (v1 hashes MSISDNs)."""

    short_code: str
    response_type: str
    confirmation_url: str
    validation_url: str
    version: str
    registered_at: datetime

    def to_json(self) -> dict[str, Any]:
        return _record_json(self)


@dataclass(frozen=True)
class B2CRequest:
    """One accepted B2C request and how it ended (the simulator settles B2C at acceptance)."""

    originator_conversation_id: str
    conversation_id: str
    version: str
    received_at: datetime
    command_id: str
    amount: Decimal | None
    party_b: str
    remarks: str
    occasion: str
    status: B2CStatus
    result_code: int | str
    result_desc: str
    transaction_id: str
    receipt: str | None

    def to_json(self) -> dict[str, Any]:
        return _record_json(self)


@dataclass(frozen=True)
class B2CPayment:
    """Money that actually left the Utility account. Exactly one per successful B2C request."""

    originator_conversation_id: str
    conversation_id: str
    receipt: str
    amount: Decimal
    charge: Decimal
    party_b: str
    receiver_name: str
    command_id: str
    remarks: str
    occasion: str
    made_at: datetime
    utility_after: Decimal
    working_after: Decimal
    charges_after: Decimal

    def to_json(self) -> dict[str, Any]:
        data = _record_json(self)
        data["amount"] = int(self.amount)  # B2C moves whole shillings only
        return data


@dataclass(frozen=True)
class C2BPayment:
    """A simulated customer payment to the paybill (pending until validation has answered)."""

    trans_id: str
    originator_conversation_id: str
    conversation_id: str
    transaction_type: str
    trans_time: datetime
    amount: Decimal
    short_code: str
    bill_ref_number: str
    msisdn: str
    msisdn_sent: str
    first_name: str
    middle_name: str
    last_name: str
    status: C2BStatus = "pending"
    org_account_balance: Decimal | None = None
    third_party_trans_id: str = ""
    validation: str | None = None

    def to_json(self) -> dict[str, Any]:
        return _record_json(self)


@dataclass(frozen=True)
class STKRequest:
    """One accepted M-Pesa Express (STK push) request and how it ended.

    Settled at acceptance like B2C: ``receipt`` is set when the customer paid. STK query tells
    the outcome only from ``processed_at`` on (before that: "The transaction is being processed").
    """

    merchant_request_id: str
    checkout_request_id: str
    business_short_code: str
    transaction_type: str
    amount: Decimal
    party_a: str
    party_b: str
    phone_number: str
    account_reference: str
    transaction_desc: str
    callback_url: str
    app: str
    received_at: datetime
    processed_at: datetime
    result_code: int | str
    result_desc: str
    receipt: str | None

    @property
    def paid(self) -> bool:
        return self.receipt is not None

    def to_json(self) -> dict[str, Any]:
        data = _record_json(self)
        data["status"] = "completed" if self.paid else "failed"
        return data


@dataclass(frozen=True)
class CallbackAttempt:
    """One POST the simulator made (or deliberately did not make: ``dropped``)."""

    id: int
    kind: str
    url: str
    ref: str
    body: Mapping[str, Any]
    copy: int
    sent_at: datetime
    duration_ms: float | None
    status_code: int | None
    error: str | None
    response_body: str | None
    dropped: bool = False

    def to_json(self) -> dict[str, Any]:
        return _record_json(self)


@dataclass(frozen=True)
class SmsMessage:
    """One recipient of one SMS request, as Africa's Talking answered for it."""

    to: str
    message: str
    sender: str | None
    status_code: int
    status: str
    message_id: str | None
    segments: int
    received_at: datetime

    def to_json(self) -> dict[str, Any]:
        data = _record_json(self)
        data["from"] = data.pop("sender")
        return data


@dataclass(frozen=True)
class Balances:
    utility: Decimal
    working: Decimal
    charges_paid: Decimal


@dataclass(frozen=True)
class _Token:
    expiry: float  # monotonic
    app: str  # the consumer key of the app that asked for it


@dataclass
class _Tokens:
    """Issued tokens -> expiry and app."""

    issued: dict[str, _Token] = field(default_factory=dict)


class SimulatorState:
    """The in-memory record. One instance per app; ``reset()`` empties it."""

    def __init__(self, *, utility_opening: Decimal, working_opening: Decimal) -> None:
        self._lock = threading.RLock()
        self._utility_opening = utility_opening
        self._working_opening = working_opening
        self.reset()

    def reset(self) -> None:
        """Forget everything except the opening balances (and the app's key pair, held elsewhere)."""
        with self._lock:
            self._tokens = _Tokens()
            self._registrations: dict[str, C2BRegistration] = {}
            self._pull_registrations: dict[str, dict[str, str]] = {}
            self._receipts: set[str] = set()
            self._b2c_requests: list[B2CRequest] = []
            self._b2c_by_originator: dict[str, list[int]] = {}
            self._seen_originator_ids: set[str] = set()
            self._duplicate_attempts: Counter[str] = Counter()
            self._payments: list[B2CPayment] = []
            self._c2b: dict[str, C2BPayment] = {}
            self._stk: dict[str, STKRequest] = {}
            self._checkout_ids: set[str] = set()
            self._callbacks: list[CallbackAttempt] = []
            self._callback_ids = itertools.count(1)
            self._faults: list[Fault] = []
            self._sms: list[SmsMessage] = []
            self._fault_ids = itertools.count(1)
            self._utility = self._utility_opening
            self._working = self._working_opening
            self._charges = Decimal("0.00")

    # --- OAuth -------------------------------------------------------------------------------
    def issue_token(self, *, ttl_s: float, now: float, single_active: bool,
                    app: str = "") -> str:
        """A new token bound to ``app`` (a consumer key); with ``single_active`` every earlier
        token *of the same app* stops working at once (other apps' tokens are untouched)."""
        token = new_access_token()
        with self._lock:
            if single_active:
                self._tokens.issued = {t: issued for t, issued in self._tokens.issued.items()
                                       if issued.app != app}
            self._tokens.issued[token] = _Token(expiry=now + ttl_s, app=app)
        return token

    def token_app(self, token: str, *, now: float) -> str | None:
        """The consumer key a live token was issued to, or None (unknown, expired, superseded)."""
        with self._lock:
            issued = self._tokens.issued.get(token)
            return issued.app if issued is not None and now < issued.expiry else None

    def token_valid(self, token: str, *, now: float) -> bool:
        return self.token_app(token, now=now) is not None

    def expire_tokens(self) -> int:
        """Make every issued token invalid (what an expiry mid-run looks like to a client)."""
        with self._lock:
            count = len(self._tokens.issued)
            self._tokens.issued.clear()
            return count

    # --- receipts ----------------------------------------------------------------------------
    def mint_receipt(self, moment: datetime) -> str:
        """A receipt never issued before by this simulator (C2B and B2C share one namespace)."""
        with self._lock:
            while True:
                receipt = new_receipt(moment)
                if receipt not in self._receipts:
                    self._receipts.add(receipt)
                    return receipt

    # --- C2B ---------------------------------------------------------------------------------
    def register_c2b(self, registration: C2BRegistration, *, allow_replace: bool) -> bool:
        """Store the URLs; False when some are registered already and replacing is not allowed."""
        with self._lock:
            if registration.short_code in self._registrations and not allow_replace:
                return False
            self._registrations[registration.short_code] = registration
            return True

    def registration(self, short_code: str) -> C2BRegistration | None:
        with self._lock:
            return self._registrations.get(short_code)

    def registrations(self) -> list[C2BRegistration]:
        with self._lock:
            return list(self._registrations.values())

    def claim_receipt(self, receipt: str) -> bool:
        """Reserve a caller-chosen receipt (a C2B ``TransID`` override); False when taken."""
        with self._lock:
            if receipt in self._receipts:
                return False
            self._receipts.add(receipt)
            return True

    def add_c2b(self, payment: C2BPayment) -> None:
        """Record a new (pending) C2B payment whose TransID was minted or claimed here."""
        with self._lock:
            self._c2b[payment.trans_id] = payment

    def complete_c2b(self, trans_id: str, *, third_party_trans_id: str, validation: str | None) -> C2BPayment:
        """Credit the Utility account and mark the payment completed (the money has moved)."""
        with self._lock:
            payment = self._c2b[trans_id]
            self._utility += payment.amount
            payment = replace(payment, status="completed", org_account_balance=self._utility,
                              third_party_trans_id=third_party_trans_id, validation=validation)
            self._c2b[trans_id] = payment
            return payment

    def cancel_c2b(self, trans_id: str, *, validation: str) -> C2BPayment:
        """Validation refused the payment (or timed out under ResponseType Cancelled)."""
        with self._lock:
            payment = replace(self._c2b[trans_id], status="cancelled", validation=validation)
            self._c2b[trans_id] = payment
            return payment

    def c2b_payments(self) -> list[C2BPayment]:
        with self._lock:
            return list(self._c2b.values())

    def find_c2b(self, trans_id: str) -> C2BPayment | None:
        with self._lock:
            return self._c2b.get(trans_id)

    # --- M-Pesa Express ----------------------------------------------------------------------
    def mint_checkout_request_id(self, moment: datetime, msisdn: str) -> str:
        """A CheckoutRequestID never issued before by this simulator."""
        with self._lock:
            while True:
                checkout_id = new_checkout_request_id(moment, msisdn)
                if checkout_id not in self._checkout_ids:
                    self._checkout_ids.add(checkout_id)
                    return checkout_id

    def record_stk(self, request: STKRequest) -> None:
        with self._lock:
            self._stk[request.checkout_request_id] = request

    def find_stk(self, checkout_request_id: str) -> STKRequest | None:
        with self._lock:
            return self._stk.get(checkout_request_id)

    def stk_requests(self) -> list[STKRequest]:
        with self._lock:
            return list(self._stk.values())

    # --- B2C ---------------------------------------------------------------------------------
    def claim_originator_id(self, originator_conversation_id: str, *, detect_duplicates: bool) -> bool:
        """Atomically mark an OriginatorConversationID as seen; False when it was seen before.

        With ``detect_duplicates`` off the claim always succeeds (the repeat is still counted),
        so a client's own idempotency is what stands between a retry and a double payment.
        """
        with self._lock:
            if originator_conversation_id in self._seen_originator_ids:
                self._duplicate_attempts[originator_conversation_id] += 1
                if detect_duplicates:
                    return False
            self._seen_originator_ids.add(originator_conversation_id)
            return True

    def pay_b2c(self, *, originator_conversation_id: str, conversation_id: str, amount: Decimal,
                charge: Decimal, party_b: str, receiver_name: str, command_id: str, remarks: str,
                occasion: str, made_at: datetime) -> B2CPayment | None:
        """Move the money; None (nothing moved) when the Utility account cannot cover it."""
        with self._lock:
            if self._utility < amount:
                return None
            self._utility -= amount
            self._charges -= charge
            receipt = self.mint_receipt(made_at)
            payment = B2CPayment(
                originator_conversation_id=originator_conversation_id,
                conversation_id=conversation_id, receipt=receipt, amount=amount, charge=charge,
                party_b=party_b, receiver_name=receiver_name, command_id=command_id,
                remarks=remarks, occasion=occasion, made_at=made_at,
                utility_after=self._utility, working_after=self._working,
                charges_after=self._charges,
            )
            self._payments.append(payment)
            return payment

    def record_b2c_request(self, request: B2CRequest) -> None:
        with self._lock:
            self._b2c_by_originator.setdefault(request.originator_conversation_id, []).append(
                len(self._b2c_requests))
            self._b2c_requests.append(request)

    def b2c_requests(self) -> list[B2CRequest]:
        with self._lock:
            return list(self._b2c_requests)

    def find_b2c(self, *, originator_conversation_id: str | None = None,
                 transaction_id: str | None = None) -> B2CRequest | None:
        """A B2C request by our OriginatorConversationID or by its receipt / TransactionID.

        When duplicate detection is off one ID may have several requests; a completed one wins,
        since "was it paid?" is the question Transaction Status answers.
        """
        with self._lock:
            if originator_conversation_id is not None:
                found = [self._b2c_requests[i]
                         for i in self._b2c_by_originator.get(originator_conversation_id, [])]
            else:
                found = [r for r in self._b2c_requests if r.transaction_id == transaction_id]
            completed = [r for r in found if r.status == "completed"]
            candidates = completed or found
            return candidates[0] if candidates else None

    def payments(self) -> list[B2CPayment]:
        with self._lock:
            return list(self._payments)

    def duplicate_attempts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._duplicate_attempts)

    def balances(self) -> Balances:
        with self._lock:
            return Balances(utility=self._utility, working=self._working, charges_paid=self._charges)

    # --- Pull Transactions -------------------------------------------------------------------
    def register_pull(self, short_code: str, details: dict[str, str]) -> bool:
        """True the first time a short code registers, False when it already was."""
        with self._lock:
            if short_code in self._pull_registrations:
                return False
            self._pull_registrations[short_code] = details
            return True

    # --- callbacks ---------------------------------------------------------------------------
    def record_callback(self, **fields: Any) -> CallbackAttempt:
        with self._lock:
            attempt = CallbackAttempt(id=next(self._callback_ids), **fields)
            self._callbacks.append(attempt)
            return attempt

    def callbacks(self, kind: str | None = None) -> list[CallbackAttempt]:
        with self._lock:
            return [c for c in self._callbacks if kind is None or c.kind == kind]

    def callback(self, attempt_id: int) -> CallbackAttempt | None:
        with self._lock:
            return next((c for c in self._callbacks if c.id == attempt_id), None)

    # --- Africa's Talking SMS -----------------------------------------------------------------
    def record_sms(self, message: SmsMessage) -> None:
        with self._lock:
            self._sms.append(message)

    def sms_messages(self) -> list[SmsMessage]:
        with self._lock:
            return list(self._sms)

    # --- faults ------------------------------------------------------------------------------
    def queue_fault(self, fault: Fault) -> Fault:
        with self._lock:
            fault = replace(fault, id=f"f{next(self._fault_ids)}")
            self._faults.append(fault)
            return fault

    def take_fault(self, api: Api, body: Mapping[str, Any] | None, phase: Phase) -> Fault | None:
        """The oldest queued fault aimed at this request in this phase, used up by one."""
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.phase == phase and fault.matches(api, body):
                    if fault.times > 1:
                        self._faults[index] = replace(fault, times=fault.times - 1)
                    else:
                        del self._faults[index]
                    return fault
            return None

    def pending_faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def clear_faults(self) -> int:
        with self._lock:
            count = len(self._faults)
            self._faults.clear()
            return count
