"""The console over HTTP, as a browser speaks to it: logging in, roles, CSRF, four eyes, the
statement, and the headers that keep a page from being framed or scripted."""

from __future__ import annotations

import csv
import io
import re
from datetime import date
from decimal import Decimal

import httpx
from sqlalchemy import func, select, text

from db import fleet, ledger
from db.models import MoneyRequest, OperatorAction, Posting, User
from tests.console.conftest import PASSWORD, ConsoleWorld


def cents_of(kes: str) -> int:
    """``1,234.50`` as written in the CSV, in exact cents."""
    return int(Decimal(kes.replace(",", "")) * 100)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "the page has no CSRF token"
    return found.group(1)


def logged_in(console: ConsoleWorld, username: str) -> httpx.Client:
    client = httpx.Client(base_url=console.url, timeout=10)
    token = csrf_of(client.get("/login").text)
    answer = client.post("/login", data={"username": username, "password": PASSWORD, "csrf": token})
    assert answer.status_code == 303, answer.text
    return client


def post(client: httpx.Client, path: str, data: dict[str, str], page: str = "/") -> httpx.Response:
    return client.post(path, data={**data, "csrf": csrf_of(client.get(page).text)})


def test_a_page_needs_a_login_and_wrong_logins_are_throttled_without_telling_who_exists(console: ConsoleWorld) -> None:
    anonymous = httpx.Client(base_url=console.url, timeout=10)
    assert anonymous.get("/").status_code == 303 and anonymous.get("/").headers["location"] == "/login"
    login = anonymous.get("/login")
    assert 'for="username"' in login.text and 'for="password"' in login.text and ">Log in<" in login.text
    token = csrf_of(login.text)
    answers = [anonymous.post("/login", data={"username": name, "password": "not it", "csrf": token})
               for name in ("omar", "nobody", "omar")]  # console_login_failures_max = 3
    assert {(a.status_code, "wrong username or password" in a.text) for a in answers} == {(401, True)}
    throttled = anonymous.post("/login", data={"username": "omar", "password": PASSWORD, "csrf": token})
    assert throttled.status_code == 429 and "too many wrong logins from here" in throttled.text
    with console.sessions() as session:  # the address waits; omar himself is not locked out by a guesser
        assert session.execute(select(User.locked_until).where(User.username == "omar")).scalar_one() is None


def test_a_logout_or_a_new_password_ends_every_session_even_a_copied_cookie(console: ConsoleWorld) -> None:
    from db.users import set_password

    client = logged_in(console, "abby")
    copied = dict(client.cookies)
    post(client, "/logout", {})
    replay = httpx.Client(base_url=console.url, timeout=10, cookies=copied)
    assert replay.get("/").status_code == 303  # to the login page
    again = logged_in(console, "abby")
    with console.sessions.begin() as session:
        set_password(session, "abby", "another long password")
    assert again.get("/").status_code == 303


def test_bad_input_gets_a_page_saying_so_never_a_bare_500(console: ConsoleWorld) -> None:
    client = logged_in(console, "omar")
    for path in ("/drivers?q=%00", "/drivers/%00", "/payouts?after=%C2%B2", "/payouts?after=" + "9" * 5000,
                 "/payouts?driver=%00"):
        answer = client.get(path)
        assert answer.status_code in (400, 404), (path, answer.status_code)
        assert "content-security-policy" in answer.headers
    refund = post(client, f"/drivers/{console.driver}/refund", {"amount_kes": "²", "reason": "x"}, f"/drivers/{console.driver}")
    assert refund.status_code == 400
    nul = post(client, f"/unmatched/{console.receipt}/assign", {"driver": "D700001", "reason": "a\x00b"}, "/unmatched")
    assert nul.status_code == 400
    huge = httpx.post(f"{console.url}/login", content=b"x" * 200_000, headers={"content-type": "application/x-www-form-urlencoded"})
    assert huge.status_code == 413

    def chunks():  # no Content-Length: the limit is counted as the body streams
        for _ in range(100):
            yield b"x" * 1_000

    streamed = httpx.post(f"{console.url}/login", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"})
    assert streamed.status_code == 413
    forged_host = client.get("/", headers={"host": "evil.example"}, follow_redirects=False)
    assert "evil.example" not in forged_host.headers.get("location", "")


def test_the_cookie_is_secure_by_default_outside_dev(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    from tests.console.conftest import console_settings, world

    for served in world(fresh_sessions, console_settings(console_cookie_secure=None)):
        answer = httpx.get(f"{served.url}/login", timeout=10)
        assert "secure" in answer.headers["set-cookie"].lower() and "samesite=strict" in answer.headers["set-cookie"].lower()


def test_the_same_request_twice_is_refused_and_a_refund_shows_the_amount_it_will_pay(console: ConsoleWorld) -> None:
    from tests.books.test_close_undo import deposit

    deposit(console.sessions, console.driver, 20_000)
    operator = logged_in(console, "omar")
    post(operator, f"/drivers/{console.driver}/refund", {"amount_kes": "", "reason": "leaving"}, f"/drivers/{console.driver}")
    post(operator, f"/drivers/{console.driver}/refund", {"amount_kes": "", "reason": "leaving"}, f"/drivers/{console.driver}")
    assert "already waiting for a second person" in operator.get(f"/drivers/{console.driver}").text
    deposit_more = 500_000
    with console.sessions.begin() as session:  # the deposit grows before the approval
        driver_id = fleet.get_driver(session, console.driver).id
        ledger.post(session, key="grow", kind="deposit_topup", business_date=date(2026, 11, 30), driver_id=driver_id,
                    legs=[(ledger.system_accounts(session).mpesa, -deposit_more),
                          (ledger.driver_accounts(session, driver_id).deposit, deposit_more)])
    approver = logged_in(console, "abby")
    assert "refund KES 200 of the deposit of D700001" in approver.get("/requests").text
    with console.sessions() as session:
        request_id = session.execute(select(MoneyRequest.id)).scalar_one()
    post(approver, f"/requests/{request_id}", {"decision": "approve"}, "/requests")
    with console.sessions() as session:
        assert session.get(MoneyRequest, request_id).outcome["amount_cents"] == 20_000  # what was asked, not more


def test_every_page_is_served_with_headers_that_forbid_scripts_and_frames(console: ConsoleWorld) -> None:
    client = logged_in(console, "vera")
    for path in ("/", "/drivers", f"/drivers/{console.driver}", "/vehicles", "/unmatched", "/requests", "/payouts",
                 "/books", "/dlq", "/audit", "/login"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert "script-src" not in page.headers["content-security-policy"]  # default-src 'none': no script
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-content-type-options"] == "nosniff"
        assert "<script" not in page.text
    cookie = client.cookies.jar
    [session_cookie] = [c for c in cookie if c.name == "fleetpay_console"]
    assert session_cookie.has_nonstandard_attr("HttpOnly") or "httponly" in str(session_cookie._rest).lower()


def test_a_form_without_its_csrf_token_is_refused(console: ConsoleWorld) -> None:
    client = logged_in(console, "omar")
    forged = client.post(f"/unmatched/{console.receipt}/assign", data={"driver": console.driver, "reason": "x"})
    assert forged.status_code == 403 and "security token" in forged.text
    with console.sessions() as session:
        assert session.execute(select(func.count()).select_from(MoneyRequest)).scalar_one() == 0


def test_a_viewer_cannot_ask_and_an_operator_cannot_approve(console: ConsoleWorld) -> None:
    viewer = logged_in(console, "vera")
    assert "Ask to assign" not in viewer.get("/unmatched").text
    refused = post(viewer, f"/unmatched/{console.receipt}/assign", {"driver": console.driver, "reason": "x"}, "/unmatched")
    assert refused.status_code == 403 and "a viewer cannot do this" in refused.text
    operator = logged_in(console, "omar")
    post(operator, f"/unmatched/{console.receipt}/assign", {"driver": console.driver, "reason": "typed 999", "as": "company"},
         "/unmatched")
    with console.sessions() as session:
        request_id = session.execute(select(MoneyRequest.id)).scalar_one()
    other = logged_in(console, "omar")
    assert post(other, f"/requests/{request_id}", {"decision": "approve"}, "/requests").status_code == 403


def test_four_eyes_on_assigning_a_payment_in_suspense(console: ConsoleWorld) -> None:
    operator = logged_in(console, "omar")
    asked = post(operator, f"/unmatched/{console.receipt}/assign",
                 {"driver": console.driver.lower(), "reason": "the driver paid to a wrong number", "as": "company"},
                 "/unmatched")
    assert asked.status_code == 303
    assert "another person must approve it" in operator.get("/unmatched").text
    with console.sessions() as session:
        request = session.execute(select(MoneyRequest)).scalar_one()
        assert (request.state, request.requested_by) == ("pending", "omar")
        assert session.execute(select(func.count()).select_from(Posting).where(
            Posting.idempotency_key == f"assign:{console.receipt}")).scalar_one() == 0  # nothing moved yet

    approver = logged_in(console, "abby")
    page = approver.get("/requests").text
    assert "Approve" in page and "the driver paid to a wrong number" in page
    done = post(approver, f"/requests/{request.id}", {"decision": "approve"}, "/requests")
    assert done.status_code == 303
    assert "approved and done" in approver.get("/requests").text
    again = post(approver, f"/requests/{request.id}", {"decision": "approve"}, "/requests")
    assert again.status_code == 303 and "already" in approver.get("/requests").text

    with console.sessions() as session:
        assert session.execute(select(func.count()).select_from(Posting).where(
            Posting.idempotency_key == f"assign:{console.receipt}")).scalar_one() == 1  # moved once
        driver = fleet.get_driver(session, console.driver)
        accounts = ledger.driver_accounts(session, driver.id)
        moved = ledger.balance_cents(session, accounts.target) + ledger.balance_cents(session, accounts.deposit)
        assert moved == 35_000
        actions = [(a.action, a.operator) for a in session.execute(select(OperatorAction).order_by(OperatorAction.id)).scalars()]
    assert ("money_requested", "omar") in actions and ("money_request_approved", "abby") in actions
    assert ("unmatched_assigned", "omar") in actions
    audit = approver.get("/audit").text
    assert "money_request_approved" in audit and "abby" in audit and "omar" in audit


def test_one_cannot_approve_ones_own_request(console: ConsoleWorld) -> None:
    admin = logged_in(console, "adam")
    post(admin, f"/unmatched/{console.receipt}/assign", {"driver": console.driver, "reason": "mine", "as": "company"},
         "/unmatched")
    with console.sessions() as session:
        request_id = session.execute(select(MoneyRequest.id)).scalar_one()
    assert "yours: another person decides" in admin.get("/requests").text
    post(admin, f"/requests/{request_id}", {"decision": "approve"}, "/requests")
    assert "four eyes" in admin.get("/requests").text
    with console.sessions() as session:
        assert session.get(MoneyRequest, request_id).state == "pending"


def test_an_impossible_request_is_refused_when_it_is_made(console: ConsoleWorld) -> None:
    operator = logged_in(console, "omar")
    post(operator, f"/unmatched/{console.receipt}/assign", {"driver": "D999999", "reason": "typo"}, "/unmatched")
    assert "Not asked: no driver D999999" in operator.get("/unmatched").text
    with console.sessions() as session:
        assert session.execute(select(func.count()).select_from(MoneyRequest)).scalar_one() == 0


def test_the_statement_csv_is_the_ledger(console: ConsoleWorld) -> None:
    operator = logged_in(console, "omar")
    post(operator, f"/unmatched/{console.receipt}/assign", {"driver": console.driver, "reason": "fare", "as": "fare"},
         "/unmatched")
    with console.sessions() as session:
        request_id = session.execute(select(MoneyRequest.id)).scalar_one()
    post(logged_in(console, "abby"), f"/requests/{request_id}", {"decision": "approve"}, "/requests")
    assert console.sent  # the share's payout was handed to the queue
    answer = operator.get(f"/drivers/{console.driver}/statement.csv", params={"account": "payable", "since": "2026-01-01",
                                                                               "until": "2026-12-31"})
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    with console.sessions() as session:
        driver = fleet.get_driver(session, console.driver)
        payable = ledger.driver_accounts(session, driver.id).payable
        entries = session.execute(select(ledger.Entry.amount_cents).where(ledger.Entry.account_id == payable)
                                  .order_by(ledger.Entry.id)).scalars().all()
        final = ledger.balance_cents(session, payable)
    listed = [r for r in rows if r["kind"] != "opening"]
    assert [cents_of(r["amount_kes"]) for r in listed] == entries
    assert cents_of(listed[-1]["balance_kes"]) == final
    assert listed[0]["reference"] == console.receipt


def test_a_deposit_refund_and_its_release_each_need_a_second_person(console: ConsoleWorld) -> None:
    from db.models import Payout
    from tests.books.test_close_undo import deposit

    deposit(console.sessions, console.driver, 20_000)
    operator = logged_in(console, "omar")
    post(operator, f"/drivers/{console.driver}/refund", {"amount_kes": "150", "reason": "leaving"}, f"/drivers/{console.driver}")
    approver = logged_in(console, "abby")
    with console.sessions() as session:
        request_id = session.execute(select(MoneyRequest.id)).scalar_one()
    post(approver, f"/requests/{request_id}", {"decision": "approve"}, "/requests")
    with console.sessions() as session:
        payout = session.execute(select(Payout)).scalar_one()
        # asked by omar, approved by abby: released at once, and handed to the queue
        assert (payout.amount_cents, payout.requires_approval, payout.requested_by, payout.approved_by) == (15_000, False, "omar", "abby")
    assert console.sent == [payout.id]


def test_a_held_payout_is_released_or_withdrawn_by_request(console: ConsoleWorld) -> None:
    from db.models import Payout
    from money.deposits import refund
    from tests.books.test_close_undo import deposit
    from tests.books.test_daily_close import D1

    deposit(console.sessions, console.driver, 20_000)
    with console.sessions.begin() as session:  # a refund asked from the shell, by amina
        [payout_id] = refund(session, console.driver, None, console.settings, operator="amina", reason="leaving",
                             business_date=D1)["payouts"]
    operator = logged_in(console, "omar")
    page = operator.get("/payouts").text
    assert "Ask to release" in page and "Ask to withdraw" in page
    post(operator, f"/payouts/{payout_id}/ask", {"kind": "payout_withdraw", "reason": "not leaving"}, "/payouts")
    assert post(operator, f"/payouts/{payout_id}/ask", {"kind": "drop_table", "reason": "x"}, "/payouts").status_code == 403
    with console.sessions() as session:
        request_id = session.execute(select(MoneyRequest.id)).scalar_one()
        assert session.get(Payout, payout_id).state == "pending"  # nothing until a second person
    post(logged_in(console, "abby"), f"/requests/{request_id}", {"decision": "approve"}, "/requests")
    with console.sessions() as session:
        assert session.get(Payout, payout_id).state == "failed"
        accounts = ledger.driver_accounts(session, fleet.get_driver(session, console.driver).id)
        assert ledger.balance_cents(session, accounts.deposit) == 20_000


def test_an_operator_checks_the_books_and_a_viewer_cannot(console: ConsoleWorld) -> None:
    viewer = logged_in(console, "vera")
    assert "Check the books now" not in viewer.get("/books").text
    assert post(viewer, "/books/check", {}, "/books").status_code == 403
    operator = logged_in(console, "omar")
    post(operator, "/books/check", {}, "/books")
    page = operator.get("/books").text
    assert "the books reconcile" in page or "discrepancies" in page


def test_dead_letters_are_shown_to_all_and_acted_on_by_an_admin_only(console: ConsoleWorld) -> None:
    import uuid

    viewer = logged_in(console, "vera")
    page = viewer.get("/dlq")
    assert page.status_code == 200 and ">Requeue<" not in page.text
    assert "cannot be reached" not in page.text  # the broker answered
    missing = str(uuid.uuid4())
    assert post(viewer, f"/dlq/{missing}", {"act": "purge"}, "/dlq").status_code == 403
    admin = logged_in(console, "adam")
    assert post(admin, f"/dlq/{missing}", {"act": "purge"}, "/dlq").status_code == 303
    assert f"no dead letter {missing}" in admin.get("/dlq").text


def test_undoing_a_close_and_fixing_the_books_each_wait_for_a_second_person(console: ConsoleWorld) -> None:
    from db.models import DailyClose, Driver
    from db.reconcile import check
    from money.daily_close import close_business_day
    from tests.books.test_daily_close import D1

    with console.sessions.begin() as session:
        session.execute(text("UPDATE drivers SET created_at = '2026-11-01'"))
    close_business_day(console.sessions, D1, console.settings)  # closed by mistake: the driver missed a day
    with console.sessions.begin() as session:  # and a cached balance goes wrong
        target = ledger.driver_accounts(session, fleet.get_driver(session, console.driver).id).target
        session.execute(text("UPDATE accounts SET balance_cents = balance_cents + 100 WHERE id = :a"), {"a": target})
    assert "Ask to undo this close" not in logged_in(console, "vera").get("/books").text
    operator = logged_in(console, "omar")
    assert post(operator, f"/books/closes/{D1}/undo", {"reason": "closed too early"}, "/books").status_code == 303
    assert post(operator, "/books/fix", {"reason": "a cache went wrong"}, "/books").status_code == 303
    assert "already waiting" in operator.get(str(post(operator, "/books/fix", {"reason": "again"}, "/books").headers["location"])).text
    assert post(operator, "/books/closes/2026-02-30/undo", {"reason": "x"}, "/books").status_code == 400
    with console.sessions() as session:
        asked = session.execute(select(MoneyRequest.id, MoneyRequest.kind, MoneyRequest.state).order_by(MoneyRequest.id)).all()
        assert [(kind, state) for _, kind, state in asked] == [("close_undo", "pending"), ("reconcile_fix", "pending")]
        assert session.execute(select(Driver.consecutive_misses)).scalar_one() == 1  # nothing moved yet
    with console.sessions() as session:
        assert len(check(session.connection())) == 1
    page = logged_in(console, "abby").get("/requests").text
    assert f"undo the close of business day {D1} (1 drivers)" in page
    assert "fix 1 discrepancies in the books: cached_balance driver:D700001:target: " in page
    approver = logged_in(console, "abby")
    for request_id, _, _ in asked:
        assert post(approver, f"/requests/{request_id}", {"decision": "approve"}, "/requests").status_code == 303
    with console.sessions() as session:
        assert session.execute(select(MoneyRequest.state)).scalars().all() == ["done", "done"]
        assert session.execute(select(Driver.consecutive_misses)).scalar_one() == 0
        assert session.get(DailyClose, D1) is None
    with console.sessions() as session:
        assert check(session.connection()) == []
    audit = approver.get("/audit").text
    assert "close_undone" in audit and "money_request_finished" in audit


def test_a_payout_in_review_shows_its_evidence_and_is_resolved_by_a_status_query_a_second_person_approves(console: ConsoleWorld) -> None:
    import json

    from db.models import Inbox, Payout
    from money.callbacks import apply_callback
    from schemas.callbacks import body_digest, inbox_key
    from tests.books.test_payout_races import funded_payout
    from tests.flow.test_payout_results import b2c_body

    payout = funded_payout(console.sessions)  # sent to 254722000901; a "success" naming another receiver arrives
    body = b2c_body(payout, receiver="254700999999 - SOMEONE ELSE")
    with console.sessions.begin() as session:
        row = Inbox(kind="b2c_result", external_id=inbox_key("b2c_result", body, body_digest(body)), body=json.dumps(body))
        session.add(row)
        session.flush()
        inbox_id = row.id
    apply_callback(console.sessions, inbox_id, console.settings)
    operator = logged_in(console, "omar")
    assert "See the evidence to resolve it" in operator.get("/payouts", params={"state": "review"}).text
    page = operator.get(f"/payouts/{payout.id}").text
    assert "Needs a person because: receiver_differs" in page
    assert "254700999999 - SOMEONE ELSE" in page and "review:receiver_differs" in page  # what it said, how it was taken
    assert "Ask M-Pesa what became of it" in page

    asked = post(operator, f"/payouts/{payout.id}/ask", {"kind": "payout_resolve", "reason": "the driver says no money came",
                                                          "back": "payout"}, f"/payouts/{payout.id}")
    assert asked.status_code == 303 and asked.headers["location"] == f"/payouts/{payout.id}"
    with console.sessions() as session:
        request = session.execute(select(MoneyRequest)).scalar_one()
        assert (request.kind, request.state, request.params["amount_cents"]) == ("payout_resolve", "pending", 5_000)
        assert session.get(Payout, payout.id).status_check_wanted_at is None  # nothing asked before a second person
    assert console.asked == []
    assert post(operator, f"/requests/{request.id}", {"decision": "approve"}, "/requests").status_code == 403  # not an approver

    post(logged_in(console, "abby"), f"/requests/{request.id}", {"decision": "approve"}, "/requests")
    with console.sessions() as session:
        assert session.get(MoneyRequest, request.id).state == "done"
        resolved = session.get(Payout, payout.id)
        assert (resolved.state, resolved.status_check_wanted_at is not None) == ("review", True)  # M-Pesa's answer decides
    assert console.asked == [payout.id]
    assert "one asked for, not yet taken" in operator.get(f"/payouts/{payout.id}").text

    viewer = logged_in(console, "vera")
    seen = viewer.get(f"/payouts/{payout.id}").text
    assert "receiver_differs" in seen and "Ask M-Pesa" not in seen
    assert viewer.get("/payouts/999999999").status_code == 404
    assert viewer.get("/payouts/1234567890123").status_code == 400


def test_an_admin_manages_users_in_the_console_and_nobody_else_sees_the_page(console: ConsoleWorld) -> None:
    from db.models import OperatorAction

    for name in ("vera", "omar", "abby"):
        client = logged_in(console, name)
        assert "/users" not in client.get("/").text and client.get("/users").status_code == 403
    assert post(logged_in(console, "abby"), "/users/omar", {"change": "disable"}).status_code == 403
    admin = logged_in(console, "adam")
    page = admin.get("/users").text
    assert '/users">Users<' in admin.get("/").text and "omar" in page and "fleetpay users add NAME" in page
    assert "Add the user" not in page and "Set password" not in page  # four eyes on: done from the shell

    # With four eyes on, nothing here gives its maker a second identity: whoever chooses a password
    # could log in as that user and approve their own requests.
    post(admin, "/users", {"change": "add", "username": "nuru", "role": "approver", "password": PASSWORD}, "/users")
    assert "done from the shell" in admin.get("/users").text
    post(admin, "/users/abby", {"change": "password", "password": "a password adam knows"}, "/users")
    post(admin, "/users/omar", {"change": "role", "role": "approver"}, "/users")
    post(admin, "/users/abby", {"change": "role", "role": "operator"}, "/users")  # lowering a role is fine
    post(admin, "/users/abby", {"change": "role", "role": "operator"}, "/users")
    assert "abby is operator already" in admin.get("/users").text
    post(admin, "/users/omar", {"change": "disable"}, "/users")
    post(admin, "/users/adam", {"change": "disable"}, "/users")  # not oneself
    assert "another admin does it" in admin.get("/users").text
    with console.sessions() as session:
        roles = dict(session.execute(select(User.username, User.role)).all())
        disabled = dict(session.execute(select(User.username, User.disabled)).all())
        record = [(a.action, a.subject, a.operator) for a in session.execute(
            select(OperatorAction).where(OperatorAction.subject.startswith("user:")).order_by(OperatorAction.id)).scalars()]
    assert "nuru" not in roles and (roles["abby"], roles["omar"], disabled["omar"], disabled["adam"]) == (
        "operator", "operator", True, False)
    assert record == [("user_role_changed", "user:abby", "adam"), ("user_disabled", "user:omar", "adam")]
    logged_in(console, "abby")  # her password is still her own
    answer = httpx.Client(base_url=console.url, timeout=10)
    refused = answer.post("/login", data={"username": "omar", "password": PASSWORD, "csrf": csrf_of(answer.get("/login").text)})
    assert refused.status_code == 401 and "disabled" in refused.text


def test_a_user_sets_their_own_password_and_wrong_guesses_are_throttled(console: ConsoleWorld) -> None:
    vera = logged_in(console, "vera")
    post(vera, "/account", {"current": "not it", "password": "vera's very own phrase"}, "/account")
    assert "the current password is wrong" in vera.get("/account").text
    changed = post(vera, "/account", {"current": PASSWORD, "password": "vera's very own phrase"}, "/account")
    assert changed.headers["location"] == "/login" and vera.get("/").status_code == 303  # every session ended
    again = httpx.Client(base_url=console.url, timeout=10)
    assert again.post("/login", data={"username": "vera", "password": "vera's very own phrase",
                                      "csrf": csrf_of(again.get("/login").text)}).status_code == 303
    for _ in range(3):  # console_login_failures_max = 3 in these tests
        post(again, "/account", {"current": "a guess", "password": "whatever it is"}, "/account")
    post(again, "/account", {"current": "vera's very own phrase", "password": "another long phrase"}, "/account")
    assert "too many wrong passwords from here" in again.get("/account").text


def test_a_one_person_fleet_adds_users_and_sets_passwords_in_the_console(fresh_sessions) -> None:  # type: ignore[no-untyped-def]
    from tests.console.conftest import console_settings, world

    alone = world(fresh_sessions, console_settings(four_eyes=False))
    console = next(alone)
    try:
        admin = logged_in(console, "adam")
        assert "Add the user" in admin.get("/users").text
        post(admin, "/users", {"change": "add", "username": "nuru", "role": "approver", "password": PASSWORD}, "/users")
        post(admin, "/users", {"change": "add", "username": "NURU", "role": "admin", "password": PASSWORD}, "/users")
        assert "user nuru exists" in admin.get("/users").text  # one person, one name, whatever the case
        post(admin, "/users/nuru", {"change": "password", "password": "a new long phrase"}, "/users")
        assert "nuru: password set" in admin.get("/users").text
        nuru = httpx.Client(base_url=console.url, timeout=10)
        assert nuru.post("/login", data={"username": "nuru", "password": "a new long phrase",
                                         "csrf": csrf_of(nuru.get("/login").text)}).status_code == 303
    finally:
        alone.close()


def test_a_drivers_page_shows_their_sms_and_an_operator_sets_their_language_and_opt_out(console: ConsoleWorld) -> None:
    from db.models import Driver, Notification

    with console.sessions.begin() as session:  # a payment to the driver: its notice is written with it
        payee = fleet.payee_for_driver_code(session, console.driver)
        from money.payments import apply_payment

        apply_payment(session, key="c2b:TK0SMS0001", amount_cents=30_000, business_date=date(2026, 11, 30), payee=payee,
                      settings=console.settings, source_account=ledger.system_accounts(session).mpesa)
        session.execute(Notification.__table__.update().values(state="sent", message="fleetpay: KES 300 received <b>x</b>"))
    viewer = logged_in(console, "vera")
    page = viewer.get(f"/drivers/{console.driver}").text
    assert "fleetpay: KES 300 received &lt;b&gt;x&lt;/b&gt;" in page  # escaped, as every text on a page
    assert "In the default language" in page and 'name="language"' not in page  # a viewer only reads
    operator = logged_in(console, "omar")
    done = post(operator, f"/drivers/{console.driver}/sms", {"language": "sw", "optional": "off"},
                f"/drivers/{console.driver}")
    assert done.status_code == 303
    assert "In Swahili" in operator.get(f"/drivers/{console.driver}").text
    with console.sessions() as session:
        driver = session.execute(select(Driver).where(Driver.code == console.driver)).scalar_one()
        assert (driver.language, driver.sms_opt_out) == ("sw", True)
        action = session.execute(select(OperatorAction).where(OperatorAction.action == "sms_preferences")).scalar_one()
        assert (action.operator, action.detail) == ("omar", {"language": "sw", "opt_out": True})
    post(operator, f"/drivers/{console.driver}/sms", {"language": "sw"}, f"/drivers/{console.driver}")  # no change
    with console.sessions() as session:  # a field left out changes nothing; no change, no record
        assert session.execute(select(Driver.sms_opt_out).where(Driver.code == console.driver)).scalar_one() is True
        assert session.execute(select(func.count()).select_from(OperatorAction)
                               .where(OperatorAction.action == "sms_preferences")).scalar_one() == 1
    refused = post(operator, f"/drivers/{console.driver}/sms", {"language": "fr"}, f"/drivers/{console.driver}")
    assert refused.status_code == 303 and "en, sw or default" in operator.get(f"/drivers/{console.driver}").text
    assert post(viewer, f"/drivers/{console.driver}/sms", {"language": "en"}, f"/drivers/{console.driver}").status_code == 403
