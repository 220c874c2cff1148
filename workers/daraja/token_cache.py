"""One OAuth token shared by every worker, cached in Redis.

Daraja invalidates the previous token whenever a new one is issued (docs/daraja.md §1), so workers that
fetched their own would knock each other's tokens out. The token lives in Redis with a TTL a
minute below ``expires_in``; a refresh happens under a Redis lock, and only if the token that
failed is still the cached one (another worker may have refreshed it already).
"""

from __future__ import annotations

from collections.abc import Callable

import redis

KEY = "fleetpay:daraja:token"
EXPIRY_MARGIN_S = 60


class TokenCache:
    """Parameters:
      client: the Redis client shared with the broker.
      fetch: gets a new token from Daraja: returns ``(access_token, expires_in_s)``.
      key: the Redis key of this app's token (one token per Daraja app).
      lock_timeout_s: longest a refresh may hold the lock (default 30).
    """

    def __init__(
        self, client: redis.Redis, fetch: Callable[[], tuple[str, int]], *, key: str = KEY, lock_timeout_s: int = 30
    ) -> None:
        self.client = client
        self.fetch = fetch
        self.key = key
        self.lock_timeout_s = lock_timeout_s

    def get(self) -> str:
        cached = self.client.get(self.key)
        return cached.decode() if cached else self.refresh(stale=None)

    def refresh(self, *, stale: str | None) -> str:
        """A fresh token; ``stale`` is the one Daraja refused (None: nothing cached)."""
        with self.client.lock(f"{self.key}:lock", timeout=self.lock_timeout_s, blocking_timeout=self.lock_timeout_s):
            cached = self.client.get(self.key)
            if cached and cached.decode() != stale:
                return cached.decode()
            token, expires_in_s = self.fetch()
            self.client.set(self.key, token, ex=max(1, expires_in_s - EXPIRY_MARGIN_S))
            return token


def parse_expires_in(value: object) -> int:
    """``expires_in`` is ``"3599"`` in production and ``3599`` on the v3 page: take both."""
    if isinstance(value, bool):
        raise ValueError("expires_in is not a number")
    return int(str(value).strip())
