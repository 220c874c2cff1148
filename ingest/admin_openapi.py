"""The ``/admin`` API's OpenAPI 3.1 document, served at ``GET /admin/openapi.json`` (no token:
it says what the API is, nothing of what is in it). Kept by hand beside the routes it describes;
``tests/flow/test_admin_api.py`` checks that it names every ``/admin`` route and no other."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from schemas.money_requests import FIELDS, REASON_MAX_CHARS

ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*codes: int) -> dict[str, Any]:
    said = {400: "the input is not accepted (detail says which field)", 401: "no token, or not a live one",
            403: "the caller's role may not (or the shared token on a money route)", 404: "not found",
            409: "refused: cannot be done now (detail says why)", 503: "PostgreSQL or Redis is not answering"}
    return {str(code): {"description": said[code], "content": {"application/json": {"schema": ERROR}}} for code in codes}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(summary: str, role: str, ok: dict[str, Any], *codes: int, body: dict[str, Any] | None = None,
        parameters: list[dict[str, Any]] | None = None, body_required: bool = True) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "description": f"Role: {role} or above.",
                                 "responses": {**ok, **_errors(401, 403, *codes)}}
    if body is not None:
        operation["requestBody"] = {"required": body_required, "content": {"application/json": {"schema": body}}}
    if parameters:
        operation["parameters"] = parameters
    return operation


def _path_id(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


REQUEST = {"$ref": "#/components/schemas/MoneyRequest"}
OBJECT = {"type": "object"}
DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "fleetpay admin API", "version": "1",
             "description": "Dead letters and money requests (four eyes). Every call acts as the user whose token it "
                            "carries (`fleetpay users token USERNAME`), with that user's role."},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                       "description": "A user's token (fpt_…); FLEETPAY_ADMIN_TOKEN is accepted as an "
                                                      "admin everywhere but the routes that move money."}},
        "schemas": {
            "Error": {"type": "object", "required": ["error", "detail"],
                      "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}},
            "MoneyRequest": {"type": "object", "properties": {
                "id": {"type": "integer"}, "kind": {"type": "string", "enum": list(FIELDS)}, "what": {"type": "string"},
                "state": {"type": "string", "enum": ["pending", "running", "done", "rejected", "failed"]},
                "params": OBJECT, "reason": {"type": "string"}, "requested_by": {"type": "string"},
                "decided_by": {"type": ["string", "null"]}, "outcome": {"type": ["object", "null"]}}},
            "Ask": {"type": "object", "required": ["kind", "reason"], "additionalProperties": False, "properties": {
                "kind": {"type": "string", "enum": list(FIELDS)},
                "params": {"type": "object", "description": "unmatched_assign: trans_id, driver, as? (fare|company); "
                           "deposit_refund: driver, amount_cents? (null: all); payout_retry / payout_approve / "
                           "payout_withdraw / payout_resolve: payout_id; close_undo: date (YYYY-MM-DD); reconcile_fix: none"},
                "reason": {"type": "string", "maxLength": REASON_MAX_CHARS}}},
            "Selection": {"type": "object", "additionalProperties": False, "properties": {
                "ids": {"type": "array", "items": {"type": "string"}}, "all": {"type": "boolean"},
                "older_than": {"type": "string", "examples": ["7d", "12h"]}, "actor": {"type": "string"},
                "queue": {"type": "string"}}},
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/admin/openapi.json": {"get": {"summary": "This document", "security": [],
                                        "responses": {"200": _json(OBJECT, "the OpenAPI document")}}},
        "/admin/dlq": {"get": _op("Dead letters, newest first, and the depth of each queue", "viewer",
                                  {"200": _json(OBJECT, "{dead_letters: [...], depth: {queue: n}}")}, 400, 503,
                                  parameters=[{"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
                                              for n in ("queue", "actor", "limit")])},
        "/admin/dlq/{message_id}": {"get": _op("One dead letter in full, with its final error", "viewer",
                                               {"200": _json(OBJECT, "the dead letter")}, 400, 404, 503,
                                               parameters=[_path_id("message_id")])},
        "/admin/dlq/requeue": {"post": _op("Requeue dead letters (ids, or all with filters)", "admin",
                                           {"200": _json(OBJECT, "{requeued: [...]}")}, 400, 404, 409, 503,
                                           body={"$ref": "#/components/schemas/Selection"})},
        "/admin/dlq/purge": {"post": _op("Purge dead letters (ids, or older_than with filters)", "admin",
                                         {"200": _json(OBJECT, "{purged: [...]}")}, 400, 404, 409, 503,
                                         body={"$ref": "#/components/schemas/Selection"})},
        "/admin/requests": {
            "get": _op("Money requests waiting for a second person", "viewer",
                       {"200": _json({"type": "object", "properties": {"requests": {"type": "array", "items": REQUEST}}},
                                     "the requests, oldest first")}, 503),
            "post": _op("Ask for money to move (a request another user approves; run at once with four eyes off)",
                        "operator", {"201": _json(REQUEST, "the request")}, 400, 409, 503,
                        body={"$ref": "#/components/schemas/Ask"}),
        },
        "/admin/requests/{request_id}/approve": {"post": _op(
            "Approve someone else's request: it runs now", "approver", {"200": _json(REQUEST, "done or failed, with outcome")},
            400, 409, 503, parameters=[_path_id("request_id")], body_required=False,
            body={"type": "object", "additionalProperties": False, "properties": {}})},
        "/admin/requests/{request_id}/reject": {"post": _op(
            "Reject someone else's request: nothing runs", "approver", {"200": _json(REQUEST, "rejected")}, 400, 409, 503,
            body={"type": "object", "properties": {"note": {"type": "string", "maxLength": 500}}},
            parameters=[_path_id("request_id")], body_required=False)},
    },
}


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(DOCUMENT)
