"""Builders for every asynchronous body the simulator posts, shaped exactly like samples/*.json.

Keeping the shapes here (and nowhere else) makes "does it look like Daraja?" a question about
one file. Quirks are deliberate: amounts are numbers in B2C results but strings in Transaction
Status, ``ResultCode`` is a number except for string codes like ``SFC_IC0003`` and ``R000001``.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from simulator.formats import (
    compact_time,
    compact_time_number,
    dotted_time,
    money,
    money_number,
    plain_amount,
)
from simulator.state import B2CPayment, B2CRequest, Balances, C2BPayment, STKRequest

SUCCESS_DESC = "The service request is processed successfully."
QUEUE_TIMEOUT_DESC = "The service request has timed out."

#: Transaction Status could not find the transaction. Daraja documents no code for this; the
#: simulator uses an R-code in the style of the Reversal API's ``R000002`` (a string).
NOT_FOUND_CODE = "R000001"
NOT_FOUND_DESC = "The transaction could not be found."

RESULT_DESCRIPTIONS: dict[int | str, str] = {
    0: SUCCESS_DESC,
    1: "The balance is insufficient for the transaction.",
    2: "Declined due to limit rule: less than the minimum transaction amount.",
    3: "Declined due to limit rule: greater than the maximum transaction amount.",
    4: "Declined due to limit rule: would exceed daily transfer limit.",
    8: "Declined due to limit rule: would exceed the maximum balance.",
    11: "The DebitParty is in an invalid state.",
    15: "Duplicate Detected.",
    17: "Internal Failure.",
    21: "The initiator is not allowed to initiate this request.",
    26: "System busy. The service request is rejected.",
    2001: "The initiator information is invalid.",
    2006: "Declined due to account rule: The account status does not allow this transaction.",
    2028: "The request is not permitted according to product assignment.",
    2040: ("Credit Party customer type (Unregistered or Registered Customer) "
           "can't be supported by the service."),
    8006: "The security credential is locked.",
    "SFC_IC0003": "The operator does not exist.",
    NOT_FOUND_CODE: NOT_FOUND_DESC,
}

_B2C_REFERENCE = {"ReferenceItem": {"Key": "QueueTimeoutURL",
                                    "Value": "https://internalsandbox.safaricom.co.ke/mpesa/b2cresults/v1/submit"}}
_AB_REFERENCE = {"ReferenceItem": {"Key": "QueueTimeoutURL",
                                   "Value": "https://internalsandbox.safaricom.co.ke/mpesa/abresults/v1/submit"}}

REASON_TYPES = {
    "BusinessPayment": "Business Payment to Customer via API",
    "SalaryPayment": "Salary Payment via API",
    "PromotionPayment": "Promotion Payment via API",
}


#: M-Pesa Express result codes whose wording differs from the org APIs' (docs/daraja.md §3).
STK_RESULT_DESCRIPTIONS: dict[int | str, str] = {
    17: "Rule limited.",
    1019: "Transaction has expired.",
    1025: "An error occurred while sending a push request.",
    1032: "Request cancelled by user",
    1037: "DS timeout user cannot be reached",
    2001: "The initiator information is invalid.",
    2028: "The request is not permitted according to product assignment.",
}


def describe(code: int | str) -> str:
    return RESULT_DESCRIPTIONS.get(code, "The service request failed.")


def describe_stk(code: int | str) -> str:
    return STK_RESULT_DESCRIPTIONS.get(code) or describe(code)


def _params(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    return {"ResultParameter": [{"Key": key, "Value": value} for key, value in pairs]}


def _envelope(*, code: int | str, desc: str, originator_conversation_id: str, conversation_id: str,
              transaction_id: str, parameters: dict[str, Any] | None,
              reference: dict[str, Any] | None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "ResultType": 0,
        "ResultCode": code,
        "ResultDesc": desc,
        "OriginatorConversationID": originator_conversation_id,
        "ConversationID": conversation_id,
        "TransactionID": transaction_id,
    }
    if parameters is not None:
        result["ResultParameters"] = parameters
    if reference is not None:
        result["ReferenceData"] = reference
    return {"Result": result}


def b2c_success(payment: B2CPayment) -> dict[str, Any]:
    """samples/b2c_result_success.json."""
    return _envelope(
        code=0, desc=SUCCESS_DESC,
        originator_conversation_id=payment.originator_conversation_id,
        conversation_id=payment.conversation_id, transaction_id=payment.receipt,
        parameters=_params([
            ("TransactionAmount", money_number(payment.amount)),
            ("TransactionReceipt", payment.receipt),
            ("ReceiverPartyPublicName", f"{payment.party_b} - {payment.receiver_name}"),
            ("TransactionCompletedDateTime", dotted_time(payment.made_at)),
            ("B2CUtilityAccountAvailableFunds", money_number(payment.utility_after)),
            ("B2CWorkingAccountAvailableFunds", money_number(payment.working_after)),
            ("B2CRecipientIsRegisteredCustomer", "Y"),
            ("B2CChargesPaidAccountAvailableFunds", money_number(payment.charges_after)),
        ]),
        reference=_B2C_REFERENCE,
    )


def b2c_failure(request: B2CRequest) -> dict[str, Any]:
    """samples/b2c_result_failure.json: no ResultParameters, a TransactionID that is no receipt."""
    return _envelope(
        code=request.result_code, desc=request.result_desc,
        originator_conversation_id=request.originator_conversation_id,
        conversation_id=request.conversation_id, transaction_id=request.transaction_id,
        parameters=None, reference=_B2C_REFERENCE,
    )


def queue_timeout(*, originator_conversation_id: str, conversation_id: str,
                  transaction_id: str) -> dict[str, Any]:
    """samples/b2c_queue_timeout.json (the same envelope for every API's QueueTimeOutURL)."""
    return _envelope(
        code=1, desc=QUEUE_TIMEOUT_DESC,
        originator_conversation_id=originator_conversation_id, conversation_id=conversation_id,
        transaction_id=transaction_id, parameters=None, reference=None,
    )


def failure(*, code: int | str, desc: str, originator_conversation_id: str, conversation_id: str,
            transaction_id: str, reference: dict[str, Any] | None) -> dict[str, Any]:
    """A failed Transaction Status / Account Balance query (or a forced B2C failure)."""
    return _envelope(code=code, desc=desc, originator_conversation_id=originator_conversation_id,
                     conversation_id=conversation_id, transaction_id=transaction_id,
                     parameters=None, reference=reference)


def occasion_reference(occasion: str) -> dict[str, Any]:
    return {"ReferenceItem": {"Key": "Occasion", "Value": occasion}}


def status_of_b2c(request: B2CRequest, payment: B2CPayment | None, *, short_code: str,
                  organization_name: str, receiver_name: str) -> list[tuple[str, Any]]:
    """Transaction Status parameters for one of our B2C payouts (paid or declined)."""
    amount = payment.amount if payment else (request.amount or Decimal(0))
    finished = payment.made_at if payment else request.received_at
    pairs: list[tuple[str, Any]] = [
        ("ReceiptNo", request.transaction_id),
        ("Amount", plain_amount(amount)),
        ("TransactionStatus", "Completed" if payment else "Declined"),
        ("FinalisedTime", compact_time_number(finished)),
        ("InitiatedTime", compact_time_number(request.received_at)),
        ("DebitPartyName", f"{short_code} - {organization_name}"),
        ("CreditPartyName", f"{request.party_b} - {receiver_name}"),
        ("DebitAccountType", "Utility Account"),
    ]
    if payment is not None:
        pairs.append(("DebitPartyCharges", f"Fee For B2C Payment|KES|{money(payment.charge)}"))
    else:
        # Not a Daraja sample key for failures, but PHP samples carry an (empty)
        # TransactionReason; the simulator puts the decline reason there.
        pairs.append(("TransactionReason", request.result_desc))
    pairs += [
        ("ReasonType", REASON_TYPES.get(request.command_id, "Business Payment to Customer via API")),
        ("OriginatorConversationID", request.originator_conversation_id),
        ("ConversationID", request.conversation_id),
    ]
    return pairs


def status_of_c2b(payment: C2BPayment, *, short_code: str,
                  organization_name: str) -> list[tuple[str, Any]]:
    """Transaction Status parameters for a customer payment to our paybill.

    Unlike the C2B confirmation (masked or hashed), Transaction Status shows the payer's full
    number, ``"254708374149 - JANE"``, as production does (docs/daraja.md §9.4).
    """
    names = " ".join(n for n in (payment.first_name, payment.middle_name, payment.last_name) if n)
    status = {"completed": "Completed", "cancelled": "Cancelled"}.get(payment.status, "Pending Authorized")
    return [
        ("ReceiptNo", payment.trans_id),
        ("Amount", plain_amount(payment.amount)),
        ("TransactionStatus", status),
        ("FinalisedTime", compact_time_number(payment.trans_time)),
        ("InitiatedTime", compact_time_number(payment.trans_time)),
        ("DebitPartyName", f"{payment.msisdn} - {names}"),
        ("CreditPartyName", f"{short_code} - {organization_name}"),
        ("DebitAccountType", "MMF Account For Customer"),
        ("ReasonType", "Pay Bill Online" if payment.transaction_type == "Pay Bill" else "Pay Merchant"),
        ("OriginatorConversationID", payment.originator_conversation_id),
        ("ConversationID", payment.conversation_id),
    ]


def transaction_status(*, originator_conversation_id: str, conversation_id: str,
                       transaction_id: str, parameters: list[tuple[str, Any]],
                       occasion: str) -> dict[str, Any]:
    """samples/transaction_status_result.json."""
    return _envelope(code=0, desc=SUCCESS_DESC,
                     originator_conversation_id=originator_conversation_id,
                     conversation_id=conversation_id, transaction_id=transaction_id,
                     parameters=_params(parameters), reference=occasion_reference(occasion))


def account_balance_string(balances: Balances) -> str:
    """``Working Account|KES|…&Utility Account|KES|…``.

    Fields per account: name|currency|current|available|reserved|uncleared.
    """
    accounts = [
        ("Working Account", balances.working),
        ("Float Account", Decimal(0)),
        ("Utility Account", balances.utility),
        ("Charges Paid Account", balances.charges_paid),
        ("Organization Settlement Account", Decimal(0)),
    ]
    return "&".join(f"{name}|KES|{money(value)}|{money(value)}|0.00|0.00" for name, value in accounts)


def account_balance(*, originator_conversation_id: str, conversation_id: str, transaction_id: str,
                    balances: Balances, completed_at: datetime) -> dict[str, Any]:
    """The Account Balance result (Daraja sends its ``ResultCode`` here as a number too)."""
    return _envelope(code=0, desc=SUCCESS_DESC,
                     originator_conversation_id=originator_conversation_id,
                     conversation_id=conversation_id, transaction_id=transaction_id,
                     parameters=_params([
                         ("AccountBalance", account_balance_string(balances)),
                         ("BOCompletedTime", compact_time_number(completed_at)),
                     ]),
                     reference=_AB_REFERENCE)


def ab_reference() -> dict[str, Any]:
    return _AB_REFERENCE


def c2b_notification(payment: C2BPayment, *, for_validation: bool) -> dict[str, Any]:
    """samples/c2b_validation.json and samples/c2b_confirmation.json (same shape).

    Validation carries a blank ``OrgAccountBalance`` (the money has not moved yet); the
    confirmation carries the balance after the payment and echoes ``ThirdPartyTransID``.
    """
    balance = "" if for_validation or payment.org_account_balance is None else money(
        payment.org_account_balance)
    return {
        "TransactionType": payment.transaction_type,
        "TransID": payment.trans_id,
        "TransTime": compact_time(payment.trans_time),
        "TransAmount": money(payment.amount),
        "BusinessShortCode": payment.short_code,
        "BillRefNumber": payment.bill_ref_number,
        "InvoiceNumber": "",
        "OrgAccountBalance": balance,
        "ThirdPartyTransID": "" if for_validation else payment.third_party_trans_id,
        "MSISDN": payment.msisdn_sent,
        "FirstName": payment.first_name,
        "MiddleName": payment.middle_name,
        "LastName": payment.last_name,
    }


def stk_callback(request: STKRequest) -> dict[str, Any]:
    """samples/stk_callback_success.json or samples/stk_callback_cancelled.json.

    ``ResultCode`` is a number here (a string only for codes like ``SFC_IC0003``); on success
    ``CallbackMetadata.Item`` lists Amount, MpesaReceiptNumber, Balance (no Value),
    TransactionDate and PhoneNumber, the last two as JSON numbers.
    """
    callback: dict[str, Any] = {
        "MerchantRequestID": request.merchant_request_id,
        "CheckoutRequestID": request.checkout_request_id,
        "ResultCode": request.result_code,
        "ResultDesc": request.result_desc,
    }
    if request.receipt is not None:
        callback["CallbackMetadata"] = {"Item": [
            {"Name": "Amount", "Value": money_number(request.amount)},
            {"Name": "MpesaReceiptNumber", "Value": request.receipt},
            {"Name": "Balance"},
            {"Name": "TransactionDate", "Value": compact_time_number(request.processed_at)},
            {"Name": "PhoneNumber", "Value": int(request.phone_number)},
        ]}
    return {"Body": {"stkCallback": callback}}


def stk_query_result(request: STKRequest) -> dict[str, Any]:
    """STK query's answer once the request is processed: ``ResultCode`` is a *string* here."""
    return {
        "ResponseCode": "0",
        "ResponseDescription": "The service request has been accepted successfully",
        "MerchantRequestID": request.merchant_request_id,
        "CheckoutRequestID": request.checkout_request_id,
        "ResultCode": str(request.result_code),
        "ResultDesc": request.result_desc,
    }
