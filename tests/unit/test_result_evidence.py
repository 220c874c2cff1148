"""``schemas.result_evidence.read_result``: what a kept result body says, for a person judging a
payout. Real bodies from public sources (tests/samples/corpus/SOURCES.md) read as Safaricom wrote
them; any text at all reads without raising."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.result_evidence import read_result

CORPUS = Path(__file__).parents[1] / "samples" / "corpus"
KEYS = {"result_code", "result_desc", "receipt", "amount_cents", "transaction_status", "payee", "payer", "about", "unreadable"}


def test_a_real_b2c_success_reads_with_its_receipt_amount_and_receiver() -> None:
    read = read_result("b2c_result", (CORPUS / "b2c_success_production_2023.json").read_text())
    assert read == {"result_code": "0", "result_desc": "The service request is processed successfully.",
                    "receipt": "RBH7V5GG0J", "amount_cents": 1_000, "transaction_status": None,
                    "payee": "254700000000 - JOHN DOE", "payer": None, "about": "119209-298361195-1", "unreadable": None}


def test_a_real_b2c_failure_has_no_receipt() -> None:
    read = read_result("b2c_result", (CORPUS / "b2c_failure_2001_receipt_like_id_2018.json").read_text())
    assert read["result_code"] == "2001" and read["receipt"] is None and read["unreadable"] is None


def test_a_real_status_answer_names_who_paid_whom_and_the_payout_it_is_about() -> None:
    read = read_result("status_result", (CORPUS / "status_completed_b2c_salary_2017.json").read_text())
    assert (read["transaction_status"], read["receipt"], read["amount_cents"], read["payee"], read["payer"], read["about"]) == (
        "Completed", "LGR919G2AV", 1_000, "254708374149 - John Doe", "600134 - Safaricom157", "19455-773836-1")


def test_every_real_result_in_the_corpus_reads() -> None:
    for path in sorted(CORPUS.glob("b2c_*.json")) + sorted(CORPUS.glob("status_*.json")):
        kind = "status_result" if path.name.startswith("status_") else "b2c_result"
        read = read_result(kind, path.read_text())
        assert read["unreadable"] is None and read["result_code"] is not None, path.name


def test_a_body_that_is_not_a_result_says_why() -> None:
    assert read_result("b2c_result", "not json")["unreadable"] == "not_json"
    assert read_result("status_result", "{}")["unreadable"].startswith("missing_field")


@given(kind=st.sampled_from(["b2c_result", "b2c_timeout", "status_result", "status_timeout"]), body=st.text(max_size=400))
def test_any_text_reads_without_raising(kind: str, body: str) -> None:
    assert set(read_result(kind, body)) == KEYS


@given(code=st.one_of(st.integers(), st.text(max_size=20), st.none()), amount=st.one_of(st.integers(), st.floats(), st.text(max_size=10)))
def test_any_result_shape_reads_without_raising(code: object, amount: object) -> None:
    import json

    body = json.dumps({"Result": {"ResultCode": code, "OriginatorConversationID": "x-1", "ResultDesc": "d",
                                  "TransactionID": "ABC", "ResultParameters": {"ResultParameter": [
                                      {"Key": "TransactionAmount", "Value": amount}, {"Key": "Amount", "Value": amount}]}}})
    for kind in ("b2c_result", "status_result"):
        assert set(read_result(kind, body)) == KEYS


@settings(deadline=None)  # the first call imports rich's table machinery
@given(text=st.text(max_size=80))
def test_a_table_cell_prints_any_text_literally_and_without_control_characters(text: str) -> None:
    import io

    from rich.console import Console
    from rich.table import Table

    from cli.output import cell

    shown = cell(text)
    assert not any((ord(c) < 0x20 and c not in "\n\t") or 0x7f <= ord(c) <= 0x9f or c in "\u202e\u2066" for c in shown.plain)
    table = Table()
    table.add_column("x")
    table.add_row(shown)
    Console(file=io.StringIO(), force_terminal=True, width=200).print(table)  # "[/]" and the like never raise


def test_markup_in_a_result_is_printed_as_written() -> None:
    import io

    from rich.console import Console

    from cli.output import cell

    out = io.StringIO()
    Console(file=out, width=200).print(cell("Request failed [code 2001] [/]\x1b[2J"))
    assert out.getvalue().strip() == "Request failed [code 2001] [/]?[2J"
