"""README.md stays true: its settings table names every setting, and only real ones."""

from __future__ import annotations

import re
from pathlib import Path

from fleetpay.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_documented_once() -> None:
    documented: set[str] = set()
    for row in re.findall(r"^\| `(FLEETPAY_[A-Z0-9_]+)`(?: / `(_[A-Z0-9_]+)`)?", README, re.M):
        first, second = row
        documented.add(first)
        if second:  # "`FLEETPAY_X_KEY` / `_SECRET`" documents two variables in one row
            documented.add(_pair(first, second))
    expected = {f"FLEETPAY_{name.upper()}" for name in Settings.model_fields}
    assert documented == expected


def _pair(first: str, suffix: str) -> str:
    """``FLEETPAY_DARAJA_CONSUMER_KEY`` + ``_CONSUMER_SECRET`` → ``FLEETPAY_DARAJA_CONSUMER_SECRET``."""
    words = first.split("_")
    return "_".join(words[: len(words) - suffix.count("_")]) + suffix


def test_the_test_command_is_what_ci_runs() -> None:
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert ".venv/bin/pytest" in README and ci.rstrip().endswith(".venv/bin/pytest")
