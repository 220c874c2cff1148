"""Daraja apps and their products: which consumer key may call which API.

On Daraja every app (one consumer key and secret) is subscribed to one or more *products*, and a
token is bound to the app that asked for it. Calling an API of a product the app does not have is
refused by the gateway with ``401.003.01 … Invalid API call as no apiproduct match found``
(docs/daraja.md §9.1), however fresh the token.

The simulator's products, by the APIs they open:

===========  ==================================================================
``c2b``      C2B RegisterURL, C2B simulate, Pull Transactions (register, query)
``b2c``      B2C payment request, Transaction Status, Account Balance
``express``  M-Pesa Express: STK push and STK query
===========  ==================================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from simulator.faults import Api

C2B = "c2b"
B2C = "b2c"
EXPRESS = "express"
PRODUCTS: frozenset[str] = frozenset({C2B, B2C, EXPRESS})

#: The product each API belongs to. OAuth belongs to none: every app may ask for a token.
PRODUCT_OF: Mapping[Api, str] = {
    Api.REGISTER_URL: C2B,
    Api.C2B: C2B,
    Api.PULL: C2B,
    Api.B2C: B2C,
    Api.TRANSACTION_STATUS: B2C,
    Api.ACCOUNT_BALANCE: B2C,
    Api.EXPRESS: EXPRESS,
    Api.EXPRESS_QUERY: EXPRESS,
}


@dataclass(frozen=True)
class DarajaApp:
    """One Daraja app: ``DarajaApp("key", "secret", products=frozenset({"c2b"}))``.

    ``products`` defaults to every product. Any iterable of product names is accepted and frozen.
    """

    consumer_key: str
    consumer_secret: str = field(repr=False)
    products: frozenset[str] = field(default=PRODUCTS)

    def __post_init__(self) -> None:
        if not self.consumer_key or not self.consumer_secret:
            raise ValueError("a Daraja app needs a consumer key and a consumer secret")
        products = self.products
        if isinstance(products, str):  # frozenset("c2b") would be {"c", "2", "b"}
            raise ValueError("products must be a set of product names, e.g. frozenset({'c2b'})")
        products = frozenset(products)
        unknown = products - PRODUCTS
        if unknown:
            raise ValueError(f"unknown products {sorted(unknown)}; known: {sorted(PRODUCTS)}")
        if not products:
            raise ValueError("a Daraja app needs at least one product")
        object.__setattr__(self, "products", products)

    def allows(self, api: Api) -> bool:
        """May a token of this app call ``api``? (OAuth and unmapped APIs: always.)"""
        product = PRODUCT_OF.get(api)
        return product is None or product in self.products


def resolve_apps(consumer_key: str, consumer_secret: str,
                 apps: Iterable[DarajaApp]) -> tuple[DarajaApp, ...]:
    """Every app of the simulated account.

    The default app (``consumer_key`` / ``consumer_secret``, every product) comes first, unless
    an entry of ``apps`` uses the same consumer key: that entry then replaces it (which is how
    a config restricts the default app's products). Consumer keys must be unique.
    """
    listed = tuple(apps)
    keys = [app.consumer_key for app in listed]
    duplicates = sorted({key for key in keys if keys.count(key) > 1})
    if duplicates:
        raise ValueError(f"apps: consumer keys must be unique, repeated: {duplicates}")
    if consumer_key in keys:
        return listed
    return (DarajaApp(consumer_key, consumer_secret, PRODUCTS), *listed)
