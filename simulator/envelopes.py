"""The gateway's synchronous error envelope: ``{"requestId", "errorCode", "errorMessage"}``.

Every synchronous failure of a Daraja API comes in this one shape (docs/daraja.md §0), with an HTTP
status equal to the code's first part. Clients branch on ``errorCode``, so the codes used by the
simulator are named here once.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

from simulator.identifiers import new_request_id

INVALID_ACCESS_TOKEN = "404.001.03"
INVALID_AUTHENTICATION_HEADER = "404.001.04"
BAD_REQUEST = "400.002.02"
INVALID_PAYLOAD = "400.002.05"
INVALID_AUTHENTICATION_TYPE = "400.008.01"
INVALID_GRANT_TYPE = "400.008.02"
DUPLICATE_ORIGINATOR_ID = "500.002.1001"
SPIKE_ARREST = "500.003.02"
INTERNAL_ERROR = "500.003.1001"


def gateway_error(status_code: int, error_code: str, message: str) -> JSONResponse:
    """One error envelope with a fresh ``requestId``."""
    return JSONResponse(
        {"requestId": new_request_id(), "errorCode": error_code, "errorMessage": message},
        status_code=status_code,
    )


def bad_request(field_name: str) -> JSONResponse:
    """``400.002.02 Bad Request - Invalid <Field>``: Daraja names the first offending field."""
    return gateway_error(400, BAD_REQUEST, f"Bad Request - Invalid {field_name}")


def invalid_payload() -> JSONResponse:
    """A body that is not a JSON object."""
    return gateway_error(400, INVALID_PAYLOAD, "Invalid Request Payload")


def invalid_access_token(status_code: int) -> JSONResponse:
    return gateway_error(status_code, INVALID_ACCESS_TOKEN, "Invalid Access Token")


def invalid_authentication_header() -> JSONResponse:
    """No Bearer header, or a GET sent to a POST API."""
    return gateway_error(404, INVALID_AUTHENTICATION_HEADER, "Invalid Authentication Header")


def duplicate_originator_id() -> JSONResponse:
    return gateway_error(500, DUPLICATE_ORIGINATOR_ID, "Duplicate OriginatorConversationID.")


def spike_arrest(status_code: int = 500) -> JSONResponse:
    return gateway_error(status_code, SPIKE_ARREST, "Spike arrest violation")


def internal_error(status_code: int = 500, message: str = "Internal Server Error") -> JSONResponse:
    return gateway_error(status_code, INTERNAL_ERROR, message)
