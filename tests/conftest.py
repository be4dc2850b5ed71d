"""Fixtures that build real apps on real databases: SQLite always, PostgreSQL when asked."""

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from testkit import TEST_SECRET, base_settings, bearer, sign

# The module-level app in main.py reads the environment at import; keep it off any local .env.
os.environ["BETTER_AUTH_SECRET"] = TEST_SECRET
os.environ["ENVIRONMENT"] = "test"
os.environ["DATABASE_URL"] = "sqlite://"

from db import make_engine, migrate
from main import create_app
from settings import Settings

TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
# Redis, for the limits and revocations shared between instances: tests that need it take the
# `redis_url` fixture, and are skipped (said at the end; an error in CI) without it.
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL")
BACKENDS = ["sqlite"] + (["postgresql"] if TEST_DATABASE_URL else [])
TABLES = (
    "task",
    "task_count",
    "task_tag",
    "task_tombstone",
    "revoked_token",
    "users",
    "idempotency_key",
    "audit_event",
)


def pytest_sessionstart(session: pytest.Session) -> None:
    check_redis()
    if not TEST_DATABASE_URL:
        if os.environ.get("CI"):
            raise pytest.UsageError("CI must set TEST_DATABASE_URL: the PostgreSQL leg is not optional there")
        return
    # One clear stop, not one error per test, when the server is not there.
    url = Settings(_env_file=None, database_url=TEST_DATABASE_URL).database_url
    engine = create_engine(url, connect_args={"connect_timeout": 5})
    try:
        engine.connect().close()
    except Exception as exc:
        reason = str(exc).splitlines()[0]
        shown = make_url(TEST_DATABASE_URL).render_as_string()
        pytest.exit(f"TEST_DATABASE_URL={shown} cannot be reached: {reason}", returncode=3)
    finally:
        engine.dispose()


def check_redis() -> None:
    if not TEST_REDIS_URL:
        if os.environ.get("CI"):
            raise pytest.UsageError("CI must set TEST_REDIS_URL: the Redis tests are not optional there")
        return
    import redis

    client = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.exit(f"TEST_REDIS_URL={TEST_REDIS_URL} cannot be reached: {exc}", returncode=3)
    finally:
        client.close()


def pytest_report_header() -> list[str]:
    redis = f"Redis: {TEST_REDIS_URL}" if TEST_REDIS_URL else "Redis: none; its tests are SKIPPED"
    if TEST_DATABASE_URL:
        return [f"databases: SQLite and PostgreSQL ({make_url(TEST_DATABASE_URL).render_as_string()})", redis]
    return ["databases: SQLite only; the PostgreSQL leg is SKIPPED (set TEST_DATABASE_URL to run it)", redis]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TEST_DATABASE_URL:
        terminalreporter.write_line(
            "PostgreSQL leg skipped: TEST_DATABASE_URL is not set (see README, 'Run and test')", yellow=True
        )
    if not TEST_REDIS_URL:
        terminalreporter.write_line(
            "Redis tests skipped: TEST_REDIS_URL is not set (see README, 'Run and test')", yellow=True
        )


@pytest.fixture
def redis_url() -> str:
    """TEST_REDIS_URL, emptied first: its database must be one the suite may wipe."""
    if not TEST_REDIS_URL:
        pytest.skip("needs Redis: set TEST_REDIS_URL")
    import redis

    client = redis.Redis.from_url(TEST_REDIS_URL)
    try:
        client.flushdb()
    finally:
        client.close()
    return TEST_REDIS_URL


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    assert TEST_DATABASE_URL is not None
    return TEST_DATABASE_URL


@pytest.fixture(scope="session")
def new_postgres_database(postgres_server_url: str) -> Iterator[Callable[[], str]]:
    """Makes fresh PostgreSQL databases for this run and drops them all afterwards."""
    server = make_url(Settings(_env_file=None, database_url=postgres_server_url).database_url)
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    created: list[str] = []

    def new() -> str:
        name = f"todo_test_{uuid.uuid4().hex[:12]}"
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        created.append(name)
        return server.set(database=name).render_as_string(hide_password=False)

    yield new
    with admin.connect() as connection:
        for name in created:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def migrated_postgres_url(new_postgres_database: Callable[[], str]) -> str:
    """A PostgreSQL database of the test's own, migrated: for tests that race or drop connections."""
    url = new_postgres_database()
    engine = make_engine(base_settings(url))
    migrate(engine)
    engine.dispose()
    return url


@pytest.fixture
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Any, backend: str) -> str:
    """A database with no schema at all, on the current backend."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path}/empty.db"
    return request.getfixturevalue("new_postgres_database")()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def database_url(request: pytest.FixtureRequest, backend: str, tmp_path_factory: Any) -> str:
    """One migrated database per backend for the run; tests empty its tables before use."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('sqlite')}/todo.db"
    else:
        url = request.getfixturevalue("new_postgres_database")()
    engine = make_engine(base_settings(url))
    migrate(engine)
    engine.dispose()
    return url


@pytest.fixture(scope="session")
def cleaner(database_url: str) -> Iterator[Callable[[], None]]:
    engine = make_engine(base_settings(database_url))

    def clean() -> None:
        with engine.begin() as connection:
            for table in TABLES:
                connection.execute(text(f"DELETE FROM {table}"))

    yield clean
    engine.dispose()


@pytest.fixture
def make_settings(database_url: str, cleaner: Callable[[], None]) -> Callable[..., Settings]:
    cleaner()
    return lambda **overrides: base_settings(database_url, **overrides)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def make_client() -> Iterator[Callable[..., TestClient]]:
    """Start real apps (lifespan included); each is shut down at the end of the test."""
    clients: list[TestClient] = []

    def make(settings: Settings, **kwargs: Any) -> TestClient:
        client = TestClient(create_app(settings), **kwargs)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient], settings: Settings) -> TestClient:
    return make_client(settings)


@pytest.fixture
def buggy_app(make_settings: Callable[..., Settings]) -> FastAPI:
    """The real app with one extra route that has a bug: GET /boom."""
    app = create_app(make_settings())

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("SELECT secret FROM internals")

    return app


@pytest.fixture
def buggy_client(buggy_app: FastAPI) -> Iterator[TestClient]:
    """A client of buggy_app that gets the 500 instead of the exception."""
    with TestClient(buggy_app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def auth() -> Callable[[str], dict[str, str]]:
    """Headers carrying a valid token for a user id."""
    return lambda user_id: bearer(sign({"sub": user_id}))


@pytest.fixture
def alice(auth: Callable[[str], dict[str, str]]) -> dict[str, str]:
    return auth("alice")


@pytest.fixture
def bob(auth: Callable[[str], dict[str, str]]) -> dict[str, str]:
    return auth("bob")
