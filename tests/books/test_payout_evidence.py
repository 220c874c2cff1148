"""``db.payouts.payout_detail``: a payout's evidence is every result naming it or our status
queries, or taken to be about it, and a flood of forged bodies never hides what settled it."""

from __future__ import annotations

import json

from db.models import Inbox
from db.payouts import EVIDENCE_ROWS_MAX, payout_detail
from fleetpay.settings import Settings
from money.callbacks import apply_callback
from money.payouts import record_status_query
from schemas.callbacks import body_digest, inbox_key
from tests.books.test_payout_races import funded_payout
from tests.flow.test_payout_results import b2c_body, status_body


def keep(sessions, kind: str, body: dict) -> int:  # type: ignore[no-untyped-def,type-arg]
    with sessions.begin() as session:
        row = Inbox(kind=kind, external_id=inbox_key(kind, body, body_digest(body)), body=json.dumps(body))
        session.add(row)
        session.flush()
        return row.id


def test_a_status_answer_to_a_query_we_never_sent_is_shown_as_evidence_of_the_payout_it_names(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    payout = funded_payout(fresh_sessions)
    forged = keep(fresh_sessions, "status_result", status_body(payout, query_id="AG_not_ours_1", status="Completed"))
    assert apply_callback(fresh_sessions, forged, Settings()).reason == "review:status_for_a_query_we_never_sent"
    with fresh_sessions() as session:
        detail = payout_detail(session, payout.id)
    assert detail is not None
    assert [(e["inbox_id"], e["kind"], e["taken_as"], e["transaction_status"]) for e in detail["evidence"]] == [
        (forged, "status_result", "review:status_for_a_query_we_never_sent", "Completed")]
    assert detail["review_reason"] == "status_for_a_query_we_never_sent"


def test_a_flood_of_forged_results_never_hides_what_settled_the_payout_nor_our_own_answers(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    settings = Settings()
    payout = funded_payout(fresh_sessions)
    for n in range(EVIDENCE_ROWS_MAX + 5):  # "failures" with other ConversationIDs: each a different body
        applied = apply_callback(fresh_sessions, keep(fresh_sessions, "b2c_result", b2c_body(
            payout, code=2001, conversation_id=f"AG_forged_{n}")), settings)
        assert applied is not None and applied.status == "processed"
    with fresh_sessions.begin() as session:
        record_status_query(session, payout.id, "AG_ours_1")
    answer = status_body(payout, query_id="AG_ours_1", status="Completed", amount="50")
    for parameter in answer["Result"]["ResultParameters"]["ResultParameter"]:
        if parameter["Key"] == "CreditPartyName":
            parameter["Value"] = f"{payout.msisdn} - DRIVER"
    ours = keep(fresh_sessions, "status_result", answer)
    applied = apply_callback(fresh_sessions, ours, settings)
    with fresh_sessions() as session:
        detail = payout_detail(session, payout.id)
    assert detail is not None and detail["state"] == "paid", applied
    assert (len(detail["evidence"]), detail["evidence_total"]) == (EVIDENCE_ROWS_MAX, EVIDENCE_ROWS_MAX + 6)
    [settled] = [e for e in detail["evidence"] if e["settled_it"]]
    assert (settled["inbox_id"], settled["kind"], settled["transaction_status"]) == (ours, "status_result", "Completed")
