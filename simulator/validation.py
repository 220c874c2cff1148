"""Reading and checking request bodies the way the Daraja gateway does.

Field checks raise ``InvalidField`` naming the field; the route turns it into Daraja's
``400.002.02 Bad Request - Invalid <Field>`` envelope. Only *malformed* requests are refused
here: requests that are well-formed but cannot be carried out (wrong password, amount over the
limit) are accepted and fail in the result callback, as on M-Pesa.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request

#: Words Safaricom filters out of C2B URLs, case-insensitively (docs/daraja.md §2.1).
FILTERED_URL_WORDS = ("m-pesa", "mpesa", "safaricom", "exec", "exe", "cmd", "sql", "query")


class InvalidField(Exception):
    """The named field is missing or malformed."""

    def __init__(self, field_name: str) -> None:
        super().__init__(field_name)
        self.field_name = field_name


async def read_json_object(request: Request) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is not one."""
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


def text(body: Mapping[str, Any], name: str, *, min_len: int = 1, max_len: int = 1000,
         required: bool = True, aliases: tuple[str, ...] = ()) -> str:
    """A string field (numbers are accepted and stringified, as the gateway does).

    ``aliases`` accepts alternative spellings seen in official samples (``"Command ID"``).
    An optional field that is absent comes back as ``""``.
    """
    value: Any = None
    for key in (name, *aliases):
        if key in body and body[key] is not None:
            value = body[key]
            break
    if value is None:
        if required:
            raise InvalidField(name)
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidField(name)
    result = str(value).strip()
    if not min_len <= len(result) <= max_len:
        if not required and result == "":
            return ""
        raise InvalidField(name)
    return result


def is_callback_url(url: str) -> bool:
    """An absolute http(s) URL with a host (the sandbox allows http)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def callback_url(body: Mapping[str, Any], name: str) -> str:
    url = text(body, name, max_len=2000)
    if not is_callback_url(url):
        raise InvalidField(name)
    return url


def has_filtered_word(url: str) -> bool:
    lowered = url.lower()
    return any(word in lowered for word in FILTERED_URL_WORDS)


def own_short_code(body: Mapping[str, Any], expected: str) -> str:
    """The request's ``ShortCode``, which must be the simulated organisation's."""
    short_code = text(body, "ShortCode", max_len=10)
    if short_code != expected:
        raise InvalidField("ShortCode")
    return short_code
