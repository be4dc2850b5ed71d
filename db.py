"""The database: the engine, its migrations, and sessions with one worker-thread hop per request."""

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from anyio import to_thread
from sqlalchemy import Connection, Engine, event, exc, make_url
from sqlmodel import Session, create_engine

from settings import Settings

if TYPE_CHECKING:
    from alembic.config import Config

ROOT = Path(__file__).resolve().parent
P = ParamSpec("P")
T = TypeVar("T")


def make_engine(settings: Settings) -> Engine:
    """An autocommit engine: every request is one statement, atomic on its own.

    Autocommit spares a read the BEGIN and ROLLBACK round trips that a transaction would cost,
    and a single-statement write its COMMIT. Work of several statements that must stand or
    fall together opens a transaction explicitly (`transaction`: migrations, keyed creates).
    """
    if settings.is_sqlite:
        in_memory = make_url(settings.database_url).database in (None, "", ":memory:")
        # Keep every connection of a file database: opening one costs more than a query.
        pool: dict[str, Any] = (
            {}
            if in_memory
            else {
                "pool_size": settings.pool_capacity,
                "max_overflow": 0,
                "pool_timeout": settings.db_pool_timeout,
            }
        )
        engine = create_engine(
            settings.database_url,
            isolation_level="AUTOCOMMIT",
            skip_autocommit_rollback=True,
            # Sessions are used from FastAPI's threadpool; each request gets its own connection.
            connect_args={"check_same_thread": False, "timeout": 30},
            **pool,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_engine(
        settings.database_url,
        isolation_level="AUTOCOMMIT",
        # Neon drops idle connections: recycle them before it does, and test only those that sat
        # idle for a while (see `_ping_after_idle`), not every checkout.
        pool_pre_ping=False,
        # Nothing to roll back when a connection comes back: it never holds a transaction open
        # (`transaction()` ends its own), so spare the reset call on every checkin.
        pool_reset_on_return=None,
        # Nor when a session closes: in autocommit its ROLLBACK would do nothing but cost the
        # worker thread a release and re-acquisition of the GIL.
        skip_autocommit_rollback=True,
        pool_recycle=settings.db_pool_recycle,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
    )
    _ping_after_idle(engine, settings.db_ping_after_idle_seconds)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
    # SQLite's own lower() folds ASCII only: use Python's, so text search ignores case in any script.
    dbapi_connection.create_function("lower", 1, _lower, deterministic=True)


def _lower(value: str | None) -> str | None:
    return value.lower() if isinstance(value, str) else value


def _ping_after_idle(engine: Engine, idle_seconds: float) -> None:
    """Test a pooled connection before use only if it sat idle longer than `idle_seconds`.

    A connection in steady use costs no extra round trip; one left idle (when Neon may have
    suspended the compute or its pooler closed it) is tested with `SELECT 1`, and a dead one is
    replaced before the request's statement runs. Raising DisconnectionError makes the pool
    discard it and check out (or open) another.
    """

    @event.listens_for(engine, "checkin")
    def checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since <= idle_seconds:
            return
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
        except Exception as error:
            raise exc.DisconnectionError(f"idle connection is gone: {error}") from error


def alembic_config() -> "Config":
    from alembic.config import Config  # imported when migrating only: about 11 MB of modules

    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to `revision` with the Alembic migrations, in one transaction."""
    from alembic import command

    _alembic(engine, command.upgrade, revision)


def migrate_down(engine: Engine, revision: str) -> None:
    """Take the schema back down to `revision` (`base`: no tables), in one transaction."""
    from alembic import command

    _alembic(engine, command.downgrade, revision)


def _alembic(engine: Engine, action: Callable[["Config", str], None], revision: str) -> None:
    config = alembic_config()
    with transaction(engine) as connection:
        config.attributes["connection"] = connection
        action(config, revision)


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """A connection in a real transaction, committed at the end (the engine itself autocommits)."""
    level = "SERIALIZABLE" if engine.dialect.name == "sqlite" else "READ COMMITTED"
    with engine.connect().execution_options(isolation_level=level) as connection, connection.begin():
        yield connection


class Database:
    """Runs the data work of a request in a worker thread, in a session of its own.

    One hop per request: the handler stays on the event loop and hands its whole unit of work
    (a function of the session) to one thread. The thread pool is sized to the connection pool
    (see `tune_threads`), so a thread never waits for a connection.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def run(self, work: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        def in_session() -> T:
            with Session(self.engine) as session:
                return work(session, *args, **kwargs)

        return await to_thread.run_sync(in_session)


# The event loop (HTTP, tokens, JSON) shares the GIL with the worker threads (SQL). With
# Python's default 5 ms switch interval, a request ready on the loop could wait that long for a
# busy worker to let go; 1 ms keeps the tail short at no cost in throughput (see bench/RESULTS.md).
GIL_SWITCH_SECONDS = 0.001


def tune_threads(settings: Settings) -> None:
    """As many worker threads as pooled connections, and a shorter GIL switch interval.

    Call from the running event loop (the thread limiter is the loop's).
    """
    to_thread.current_default_thread_limiter().total_tokens = settings.pool_capacity
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
