"""Does a result about a payout match what we asked? Pure: from a parsed callback and the payout's
own facts to the payout event it may cause (``fleetpay.payout_states``).

Results arrive forged, late, twice and in any order (docs/design.md §3), so a result settles a
payout only when it matches what we asked:

- a B2C result: it names our OriginatorConversationID (the caller found the payout by it) and, once
  Daraja's HTTP answer gave us one, our ConversationID; a success also carries the payout's amount
  and a receiver that is the driver's number (a masked number cannot be compared, but it must be
  there);
- a Transaction Status answer: it answers a query *we* sent about this payout; "Completed" also
  carries the amount, our shortcode as the payer and (unmasked) the driver's number as the payee.

Anything else is a ``mismatch``: it moves no money, and the payout goes to review with the reason.
A status answer to a query we never sent proves nothing either way: it moves nothing, and only
flags the payout (moving it to review would let anyone who knows a payout's id stop it). A
failure, even a matching one, only reports: our own status query confirms it (docs/design.md §3).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from fleetpay.payout_states import PayoutEvent
from schemas.callbacks import B2CResult, TransactionStatusResult
from schemas.parsing import normalise_msisdn, party_identifier

FAILED_STATUSES = frozenset({"declined", "cancelled", "expired", "failed"})


@dataclass(frozen=True)
class Asked:
    """What we asked M-Pesa to do for one payout."""

    originator_conversation_id: str
    conversation_id: str | None  # Daraja's id for our request, once its HTTP answer was recorded
    amount_cents: int
    msisdn: str
    short_code: str  # the B2C shortcode that pays (PartyA)


@dataclass(frozen=True)
class Verdict:
    """The event a result causes, or None (nothing to do); ``reason`` says why, for the record;
    ``review``: an operator should look at the payout (every mismatch, and an unverifiable answer)."""

    event: PayoutEvent | None
    reason: str | None = None
    review: bool = False

    def __post_init__(self) -> None:
        if self.event in ("mismatch", "escalate"):
            object.__setattr__(self, "review", True)


def _paid_as_asked(amount_cents: int | None, payee: str | None, asked: Asked, *, payee_required: bool) -> Verdict | None:
    """None when a payment report matches the amount and payee we asked for; else the mismatch."""
    if amount_cents is None:
        return Verdict("mismatch", "amount_missing")
    if payee_required and not payee:
        return Verdict("mismatch", "receiver_missing")
    if amount_cents != asked.amount_cents:
        return Verdict("mismatch", f"amount_differs:{amount_cents}")
    identifier = party_identifier(payee)
    # A masked number ("2547*****444") cannot be compared; any number shown in full must be ours.
    if identifier is not None and identifier.isdigit() and normalise_msisdn(identifier) != asked.msisdn:
        return Verdict("mismatch", "receiver_differs")
    return None


def judge_b2c_result(result: B2CResult, asked: Asked) -> Verdict:
    """A B2C result (found by our OriginatorConversationID) for the payout that ``asked`` describes."""
    if asked.conversation_id and result.conversation_id != asked.conversation_id:
        return Verdict("mismatch", "conversation_id_differs")
    if result.result_code != 0:
        return Verdict("result_failure")
    return _paid_as_asked(result.amount_cents, result.receiver, asked, payee_required=True) or Verdict("result_success")


def judge_status_result(
    result: TransactionStatusResult,
    asked: Asked,
    *,
    query_is_ours: bool,
    not_found_codes: Collection[str],
    error_codes: Collection[str] = (),
) -> Verdict:
    """A Transaction Status answer that names (or whose query names) the payout ``asked`` describes.
    ``error_codes`` are result codes that refuse the query itself (bad credential, initiator, product):
    asking again cannot help, so the payout goes to review at once (``escalate``)."""
    if not query_is_ours:
        return Verdict(None, "status_for_a_query_we_never_sent", review=True)
    named = result.original_originator_conversation_id
    if named and named != asked.originator_conversation_id:
        return Verdict("mismatch", "status_names_another_payout")
    code = str(result.result_code)
    if code in not_found_codes:
        return Verdict("status_not_found")
    if code in error_codes:
        return Verdict("escalate", f"status_query_error:{code}")
    status = (result.transaction_status or "").strip().lower()
    if code != "0":
        return Verdict(None, f"status_undecided:{code}")
    if status == "completed":
        payer = party_identifier(result.debit_party)
        if payer is not None and payer != asked.short_code:
            return Verdict("mismatch", "not_a_payment_from_our_shortcode")
        # The answer to our own query (its id was recorded): the payee may be left out, not differ.
        return _paid_as_asked(result.amount_cents, result.credit_party, asked, payee_required=False) or Verdict("status_paid")
    if status in FAILED_STATUSES:
        return Verdict("status_failed")
    return Verdict(None, f"status_undecided:{code}:{status or '-'}")


def resend_or_review(verdict: Verdict, *, sends: int, sends_max: int) -> Verdict:
    """"Not found" sends a payout again (same OriginatorConversationID), but not for ever: a payout
    sent ``sends_max`` times that M-Pesa still does not know goes to a person (a gateway that keeps
    refusing the re-send before its duplicate check would otherwise loop without end)."""
    if verdict.event == "status_not_found" and sends >= sends_max:
        return Verdict("escalate", f"not_found_after_{sends}_sends")
    return verdict
