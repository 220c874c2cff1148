"""The names people act under (``--operator``): one spelling per person, so a record names them
plainly and four eyes cannot be passed by a lookalike (``amina`` / ``Amina `` / ``аmina`` with a
Cyrillic a / a zero-width space)."""

from __future__ import annotations

import re
import unicodedata

NAME = re.compile(r"[A-Za-z][A-Za-z0-9 ._'-]{0,63}")


class BadName(ValueError):
    """Not a name a person can act under; the message says what is allowed."""


def operator_name(raw: str) -> str:
    """The name as recorded: NFKC-normalised, outer spaces dropped, inner runs of spaces made one;
    letters, digits, space and ``._'-`` only, starting with a letter, at most 64 characters."""
    name = " ".join(unicodedata.normalize("NFKC", raw).split())
    if not NAME.fullmatch(name):
        raise BadName(f"{raw!r} is not a name to act under: ASCII letters, digits, spaces and . _ ' - only, "
                      "starting with a letter, at most 64 characters")
    return name


def same_person(first: str, second: str) -> bool:
    """Whether two recorded names are the same person's (case and spacing aside)."""
    return operator_name(first).casefold() == operator_name(second).casefold()
