"""ASGI entry point for multi-process uvicorn (``fleetpay ingest --workers N``)."""

from fleetpay.settings import get_settings
from ingest.app import build_app

app = build_app(get_settings())
