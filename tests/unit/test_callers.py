"""The callback token check: any accepted token opens the door, every other string is a stranger."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ingest.callers import token_accepted

tokens = st.text(min_size=1, max_size=64)


@given(current=tokens, previous=tokens)
def test_current_and_previous_tokens_are_accepted(current: str, previous: str) -> None:
    assert token_accepted(current, (current, previous))
    assert token_accepted(previous, (current, previous))
    assert token_accepted(current, (current,))


@given(given_token=tokens, accepted=st.lists(tokens, max_size=3))
def test_any_other_token_is_refused(given_token: str, accepted: list[str]) -> None:
    assert token_accepted(given_token, accepted) == (given_token in accepted)
