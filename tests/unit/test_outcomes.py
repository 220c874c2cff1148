"""Every Daraja answer the client can meet, classified: sent (accepted or rejected), surely not
sent (retry), or ambiguous (only a status query may tell). Codes as docs/daraja.md gives them."""

from __future__ import annotations

from typing import Any

import pytest

from workers.daraja.outcomes import Answer, Outcome, classify


def error(code: str, message: str = "Error") -> dict[str, Any]:
    return {"requestId": "11728-2929992-1", "errorCode": code, "errorMessage": message}


CASES = [
    # (HTTP status, body, outcome, the token must be refreshed)
    (200, {"ConversationID": "AG_1", "OriginatorConversationID": "fp_1", "ResponseCode": "0",
           "ResponseDescription": "Accept the service request successfully."}, Outcome.ACCEPTED, False),
    (200, {"ResponseCode": 0, "ResponseDescription": "Success"}, Outcome.ACCEPTED, False),
    (200, {"ResponseCode": "1", "ResponseDescription": "Rejected"}, Outcome.REJECTED, False),
    (500, error("500.002.1001", "Duplicate OriginatorConversationID."), Outcome.ACCEPTED, False),
    (400, error("400.002.02", "Bad Request - Invalid Amount"), Outcome.REJECTED, False),
    (400, error("400.002.05", "Invalid Request Payload"), Outcome.REJECTED, False),
    (401, error("401.003.01", "Error Occurred - Invalid Access Token - Invalid API call as no apiproduct match found"),
     Outcome.REJECTED, False),
    (404, error("404.001.01", "Resource not found"), Outcome.REJECTED, False),
    (405, error("405.001", "POST Method Not Allowed"), Outcome.REJECTED, False),
    (401, error("401.002.01", "Error Occurred - Invalid Access Token"), Outcome.NOT_SENT, True),
    (404, error("404.001.03", "Invalid Access Token"), Outcome.NOT_SENT, True),
    (404, error("404.001.04", "Invalid Authentication Header"), Outcome.NOT_SENT, True),
    (400, error("400.003.01", "Invalid Access Token"), Outcome.NOT_SENT, True),
    (401, None, Outcome.NOT_SENT, True),
    (500, error("500.003.02", "Error Occurred: Spike Arrest Violation"), Outcome.NOT_SENT, False),
    (429, error("500.003.03", "Error Occurred: Quota Violation"), Outcome.NOT_SENT, False),
    (500, error("500.001.1001", "Unable to lock subscriber, a transaction is already in process"), Outcome.AMBIGUOUS, False),
    (500, error("500.003.1001", "Internal Server Error"), Outcome.AMBIGUOUS, False),
    (502, None, Outcome.AMBIGUOUS, False),
    (503, {"fault": {"faultstring": "The Service is temporarily unavailable"}}, Outcome.AMBIGUOUS, False),
    (504, None, Outcome.AMBIGUOUS, False),
    (200, None, Outcome.AMBIGUOUS, False),  # not JSON: we cannot tell what happened
    (200, {"unexpected": True}, Outcome.AMBIGUOUS, False),
    (429, None, Outcome.AMBIGUOUS, False),
]


@pytest.mark.parametrize(("status", "body", "outcome", "refresh"), CASES,
                         ids=[f"{s}-{(b or {}).get('errorCode') or (b or {}).get('ResponseCode', 'nobody')}" for s, b, _, _ in CASES])
def test_every_answer_is_classified(status: int, body: Any, outcome: Outcome, refresh: bool) -> None:
    answer = classify(status, body)
    assert (answer.outcome, answer.invalid_token) == (outcome, refresh)


def test_an_accepted_answer_keeps_daraja_s_ids() -> None:
    assert classify(200, CASES[0][1]) == Answer(Outcome.ACCEPTED, "0", "Accept the service request successfully.",
                                               conversation_id="AG_1", originator_conversation_id="fp_1")
