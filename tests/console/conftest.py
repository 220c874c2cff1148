"""The console served from a database of its own, with users of every role and a payment in
suspense, for the HTTP and browser tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker

from console.app import build_app
from db import users
from db.models import Inbox
from fleetpay.settings import Settings
from money.callbacks import apply_callback
from tests.support import add_driver_with_vehicle, c2b_body, next_receipt, serve

PASSWORD = "correct horse battery"
ROLES = {"vera": "viewer", "omar": "operator", "abby": "approver", "adam": "admin"}


@dataclass
class ConsoleWorld:
    url: str
    sessions: sessionmaker[Session]
    settings: Settings
    receipt: str  # a payment in suspense: the account typed was a vehicle with no driver
    driver: str  # a driver with a vehicle, to assign it to
    sent: list[int]  # payouts handed to the queue
    asked: list[int]  # payouts whose status query was handed to the queue


def console_settings(**changes: object) -> Settings:
    # Plain HTTP on loopback in these tests: the Secure flag (the default) would keep httpx from
    # sending the cookie back; the browser tests, which a browser treats as secure, keep it.
    return Settings().model_copy(update={"console_secret": SecretStr("x" * 40), "console_cookie_secure": False,
                                         "console_login_failures_max": 3, **changes})


def world(sessions: sessionmaker[Session], settings: Settings) -> Iterator[ConsoleWorld]:
    with sessions.begin() as session:
        for name, role in ROLES.items():
            users.add_user(session, name, role, PASSWORD)
        add_driver_with_vehicle(session, driver_code="D700001", vehicle_code="701", msisdn="254711000701")
        receipt = next_receipt("K")
        row = Inbox(kind="c2b_confirmation", external_id=receipt, body=json.dumps(c2b_body(receipt, "350.00", "999")))
        session.add(row)
        session.flush()
        inbox_id = row.id
    assert apply_callback(sessions, inbox_id, settings).status == "unmatched"
    sent: list[int] = []
    asked: list[int] = []

    def follow_up(outcome: dict[str, Any] | None) -> bool:
        sent.extend((outcome or {}).get("payout_ids") or ())
        asked.extend((outcome or {}).get("status_checks") or ())
        return True

    app = build_app(settings, sessions=sessions, follow_up=follow_up)
    with serve(app) as url:
        yield ConsoleWorld(url, sessions, settings, receipt, "D700001", sent, asked)


@pytest.fixture
def console(fresh_sessions) -> Iterator[ConsoleWorld]:  # type: ignore[no-untyped-def]
    yield from world(fresh_sessions, console_settings())
