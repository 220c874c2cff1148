"""The simulator's HTTP routes, one module per API (plus ``admin`` for the ``/sim/...`` routes)."""
