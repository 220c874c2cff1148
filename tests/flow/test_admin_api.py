"""The ``/admin`` JSON API with per-user tokens: the caller is a user, with their role; money moves
by request and another user's approval, exactly as in the console; the OpenAPI document names
every route."""

from __future__ import annotations

import json

import httpx
from sqlalchemy import select
from starlette.routing import Route

from db.models import Inbox, OperatorAction
from db.users import add_user, issue_token, revoke_token, set_disabled, set_password
from tests.support import (
    ADMIN_TOKEN,
    add_driver_with_vehicle,
    c2b_body,
    fleetpay,
    next_driver_code,
    next_receipt,
    pending_count,
    wait_until,
)

_names = iter(range(1, 1_000))


def user(sessions, role: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """A user of this test with ``role``, and a token of theirs."""
    name = f"api-{role}-{next(_names)}"
    with sessions.begin() as session:
        add_user(session, name, role, "a long enough password")
        return name, issue_token(session, name, "tests")[1]


def api(ingest_url: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=f"{ingest_url}/admin", headers=headers, timeout=30)


def test_the_caller_is_a_user_with_their_role(ingest_url, sessions) -> None:  # type: ignore[no-untyped-def]
    viewer, viewer_token = user(sessions, "viewer")
    assert api(ingest_url, None).get("/requests").status_code == 401
    assert api(ingest_url, "fpt_not-a-token").get("/requests").status_code == 401
    assert api(ingest_url, "x" * 10_000).get("/requests").status_code == 401
    assert api(ingest_url, viewer_token).get("/requests").status_code == 200
    refused = api(ingest_url, viewer_token).post("/requests", json={"kind": "reconcile_fix", "reason": "x"})
    assert refused.status_code == 403 and "viewer" in refused.json()["detail"]
    assert api(ingest_url, viewer_token).post("/dlq/purge", json={"older_than": "7d"}).status_code == 403
    # The shared token reads and acts on dead letters, as before, but moves no money.
    assert api(ingest_url, ADMIN_TOKEN).get("/dlq").status_code == 200
    shared = api(ingest_url, ADMIN_TOKEN).post("/requests", json={"kind": "reconcile_fix", "reason": "x"})
    assert shared.status_code == 403 and "moves no money" in shared.json()["detail"]
    with sessions.begin() as session:
        token_id = issue_token(session, viewer, "to revoke")
    assert api(ingest_url, token_id[1]).get("/requests").status_code == 200
    with sessions.begin() as session:
        revoke_token(session, token_id[0])
    assert api(ingest_url, token_id[1]).get("/requests").status_code == 401
    assert api(ingest_url, "fpt_" + "A" * 43).get("/requests").status_code == 401  # the shape, but nobody's
    with sessions.begin() as session:
        set_disabled(session, viewer, True)
    assert api(ingest_url, viewer_token).get("/requests").status_code == 401
    with sessions.begin() as session:  # enabled again: the old tokens stay revoked
        set_disabled(session, viewer, False)
    assert api(ingest_url, viewer_token).get("/requests").status_code == 401
    with sessions.begin() as session:
        fresh = issue_token(session, viewer, "after")[1]
    assert api(ingest_url, fresh).get("/requests").status_code == 200
    with sessions.begin() as session:  # a new password ends the tokens too
        set_password(session, viewer, "another long password")
    assert api(ingest_url, fresh).get("/requests").status_code == 401


def test_four_eyes_over_the_api_assign_a_payment_in_suspense(ingest_url, http, worker, sessions) -> None:  # type: ignore[no-untyped-def]
    code = next_driver_code()
    with sessions.begin() as session:
        add_driver_with_vehicle(session, driver_code=code)
    receipt = next_receipt("A")
    assert http.post("c2b/confirm", json=c2b_body(receipt, "250.00", "NOBODY")).status_code == 200
    wait_until(lambda: pending_count(sessions, [receipt]) == 0, what="the payment in suspense")
    amina, amina_token = user(sessions, "approver")
    bob, bob_token = user(sessions, "approver")
    ask = {"kind": "unmatched_assign", "params": {"trans_id": receipt, "driver": code.lower(), "as": "fare"}, "reason": "typed NOBODY"}
    assert api(ingest_url, amina_token).post("/requests", json={**ask, "params": {"trans_id": receipt}}).status_code == 400
    assert api(ingest_url, amina_token).post("/requests", content=b"{").status_code == 400
    made = api(ingest_url, amina_token).post("/requests", json=ask)
    assert made.status_code == 201, made.text
    request = made.json()
    assert (request["state"], request["requested_by"], request["params"]["driver"]) == ("pending", amina, code)
    assert request["id"] in [r["id"] for r in api(ingest_url, bob_token).get("/requests").json()["requests"]]
    assert api(ingest_url, amina_token).post("/requests", json=ask).status_code == 409  # the same, waiting already
    own = api(ingest_url, amina_token).post(f"/requests/{request['id']}/approve")
    assert own.status_code == 409 and "four eyes" in own.json()["detail"]
    assert api(ingest_url, bob_token).post("/requests/12x/approve").status_code == 400
    approved = api(ingest_url, bob_token).post(f"/requests/{request['id']}/approve")
    assert approved.status_code == 200, approved.text
    assert (approved.json()["state"], approved.json()["decided_by"]) == ("done", bob)
    with sessions() as session:
        assert session.execute(select(Inbox.reason).where(Inbox.external_id == receipt)).scalar_one().startswith(f"assigned:{code}:")
        actions = session.execute(select(OperatorAction.action, OperatorAction.operator).where(
            OperatorAction.subject == f"request:{request['id']}")).all()
    assert ("money_requested", amina) in actions and ("money_request_approved", bob) in actions
    again = api(ingest_url, bob_token).post(f"/requests/{request['id']}/approve")
    assert again.status_code == 409 and "done already" in again.json()["detail"]


def test_the_openapi_document_names_every_admin_route(ingest_url) -> None:  # type: ignore[no-untyped-def]
    from ingest.app import build_app
    from fleetpay.settings import Settings

    document = httpx.get(f"{ingest_url}/admin/openapi.json", timeout=10).json()  # no token needed
    assert document["openapi"].startswith("3.")
    served = {(route.path, method.lower()) for route in build_app(Settings()).routes
              if isinstance(route, Route) and route.path.startswith("/admin") for method in route.methods or ()
              if method != "HEAD"}
    described = {(path, method) for path, item in document["paths"].items() for method in item}
    assert served == described


def test_a_token_is_made_shown_once_and_revoked_from_the_shell(sessions, database_url) -> None:  # type: ignore[no-untyped-def]
    name = f"api-cli-{next(_names)}"
    with sessions.begin() as session:
        add_user(session, name, "operator", "a long enough password")
    made = fleetpay("users", "token", name, "--name", "ops scripts", database_url=database_url)
    token = made.stdout.strip()
    assert token.startswith("fpt_") and len(token) > 40 and "revoke-token" in made.stderr
    listed = json.loads(fleetpay("users", "tokens", name, "--json", database_url=database_url).stdout)["tokens"]
    assert [(t["name"], t["revoked_at"]) for t in listed] == [("ops scripts", None)]
    assert token not in json.dumps(listed)
    fleetpay("users", "revoke-token", str(listed[0]["id"]), database_url=database_url)
    assert json.loads(fleetpay("users", "tokens", name, "--json", database_url=database_url).stdout)["tokens"][0]["revoked_at"]
    assert fleetpay("users", "token", "nobody-at-all", "--name", "x", database_url=database_url, check=False).returncode == 1
