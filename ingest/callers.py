"""Who is calling: the secret path token and the optional source-IP allowlist.

Daraja signs nothing (docs/daraja.md §6), so a callback is believed only if it knows the secret token
in its URL. A wrong token gets the same bare 404 as an unknown path: nothing tells a prober that
the route exists.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Sequence

from starlette.requests import Request


def token_matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def token_accepted(given: str, accepted: Sequence[str]) -> bool:
    """``given`` is one of the ``accepted`` tokens (each compared, in constant time, every time)."""
    return any([token_matches(given, token) for token in accepted])


def client_ip(request: Request, trusted_proxies: Sequence[str]) -> str | None:
    """The caller's address: the peer, or, behind a trusted proxy, the nearest untrusted
    address of ``X-Forwarded-For`` (the left part of that header is the caller's to forge)."""
    peer = request.client.host if request.client else None
    if peer is None or peer not in trusted_proxies:
        return peer
    forwarded = [part.strip() for part in request.headers.get("x-forwarded-for", "").split(",")]
    for address in reversed([part for part in forwarded if part]):
        if address not in trusted_proxies:
            return address
    return peer


def ip_allowed(address: str | None, allowlist: Sequence[str]) -> bool:
    if address is None:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(entry, strict=False) for entry in allowlist)
