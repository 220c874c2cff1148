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
RESOURCE_NOT_FOUND = "404.001.01"
METHOD_NOT_ALLOWED = "405.001"
NO_API_PRODUCT_MATCH = "401.003.01"
MERCHANT_ERROR = "500.001.1001"
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


def resource_not_found() -> JSONResponse:
    """No Daraja API at this path (docs/daraja.md §9.3)."""
    return gateway_error(404, RESOURCE_NOT_FOUND, "Resource not found")


def method_not_allowed(method: str, allowed: str | None = None) -> JSONResponse:
    """A method the API does not take, e.g. ``PUT Method Not Allowed`` (docs/daraja.md §9.3).

    A GET on a POST API is not this: the gateway answers it ``404.001.04``.
    """
    response = gateway_error(405, METHOD_NOT_ALLOWED, f"{method} Method Not Allowed")
    if allowed:
        response.headers["Allow"] = allowed
    return response


def no_api_product_match() -> JSONResponse:
    """A live token of an app that is not subscribed to this API's product (docs/daraja.md §9.1)."""
    return gateway_error(401, NO_API_PRODUCT_MATCH,
                         "Error Occurred - Invalid Access Token - "
                         "Invalid API call as no apiproduct match found")


def merchant_error(message: str) -> JSONResponse:
    """M-Pesa Express's ``500.001.1001`` family: ``Wrong credentials``, ``Merchant does not
    exist``, ``The transaction is being processed`` (docs/daraja.md §3, §9.2)."""
    return gateway_error(500, MERCHANT_ERROR, message)
