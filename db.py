"""The database: the engine, its migrations, and sessions with one worker-thread hop per request."""

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import anyio
from anyio import to_thread
from sqlalchemy import Connection, Engine, event, exc, make_url
from sqlmodel import Session, create_engine

from settings import Settings

if TYPE_CHECKING:
    from alembic.config import Config

ROOT = Path(__file__).resolve().parent
log = logging.getLogger("todo.db")
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
        # Opening a connection to a database that is down or frozen gives up in this time.
        connect_args={"connect_timeout": settings.db_connect_timeout_seconds},
    )
    _ping_after_idle(engine, settings.db_ping_after_idle_seconds)
    _statement_timeout(engine, settings.db_statement_timeout_seconds)
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


def _statement_timeout(engine: Engine, seconds: float) -> None:
    """PostgreSQL cancels a statement that runs longer than the request may wait for it.

    Set once per new connection with SET rather than in the connection's startup options,
    which poolers such as PgBouncer (Neon's `-pooler` endpoints) refuse. Behind a pooler in
    transaction mode a session setting may not follow every transaction: there, set it on the
    role as well (README, Neon). Requests are bounded on this side regardless (`Database`).
    """
    milliseconds = max(1, int(seconds * 1000))

    @event.listens_for(engine, "connect")
    def connected(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"SET statement_timeout = {milliseconds}")
        cursor.close()
        if not dbapi_connection.autocommit:
            dbapi_connection.commit()


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


class DatabaseUnavailable(Exception):
    """The database did not answer in time, or cannot be reached: answered 503, not 500."""


# What a lost, refused, frozen or restarting database raises through SQLAlchemy: connection
# failures and timeouts (psycopg2's statement timeout is an OperationalError too), the pool's
# own timeout, and a connection found dead. Integrity errors and the like are not among them.
OUTAGE_ERRORS = (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError, exc.TimeoutError)


def is_outage(error: BaseException) -> bool:
    if isinstance(error, (DatabaseUnavailable, *OUTAGE_ERRORS)):
        return True
    return isinstance(error, exc.DBAPIError) and error.connection_invalidated


class Database:
    """Runs the data work of a request in a worker thread, in a session of its own.

    One hop per request: the handler stays on the event loop and hands its whole unit of work
    (a function of the session) to one thread. The thread pool is sized to the connection pool
    (see `tune_threads`), so a thread never waits for a connection.

    The work has `deadline` seconds in all (waiting for a thread and a connection included):
    past it the request gets DatabaseUnavailable (a 503) while the thread is left to finish on
    its own, as it will once the database answers or the connection breaks. A frozen database
    would otherwise hold every request as long as it is frozen. While as many threads as the
    pool holds are left waiting like that, new work is refused at once.
    """

    def __init__(self, engine: Engine, deadline: float = 5.0, capacity: int = 0) -> None:
        self.engine = engine
        self.deadline = deadline
        self.capacity = capacity  # connections the pool may hold (0: no bound kept here)
        self.stuck = 0  # threads whose request was answered 503 and that still wait on the database
        self._lock = threading.Lock()

    async def run(self, work: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self.run_within(self.deadline, work, *args, **kwargs)

    async def run_within(
        self, seconds: float, work: Callable[Concatenate[Session, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        if self.capacity and self.stuck >= self.capacity:
            raise DatabaseUnavailable("every connection is waiting on the database")
        state = {"done": False, "abandoned": False}

        def in_session() -> T:
            try:
                with Session(self.engine) as session:
                    return work(session, *args, **kwargs)
            finally:
                with self._lock:
                    state["done"] = True
                    if state["abandoned"]:
                        self.stuck -= 1

        try:
            with anyio.fail_after(seconds):
                return await to_thread.run_sync(in_session, abandon_on_cancel=True)
        except TimeoutError:
            with self._lock:
                if not state["done"]:
                    state["abandoned"] = True
                    self.stuck += 1
            raise DatabaseUnavailable(f"no answer within {seconds:g} s") from None


def wait_for_database(settings: Settings) -> None:
    """At start-up: wait up to DB_STARTUP_TIMEOUT_SECONDS for PostgreSQL to answer, saying so
    once, then give up with one readable message (SystemExit). A database that is restarting,
    or a Neon compute waking up, is waited for rather than failed on."""
    if settings.is_sqlite:
        return  # a local file: nothing to wait for
    where = make_url(settings.database_url).render_as_string(hide_password=True)
    engine = make_engine(settings)
    started = time.monotonic()
    said = False
    try:
        while True:
            try:
                with engine.connect() as connection:
                    connection.exec_driver_sql("SELECT 1")
            except exc.DBAPIError as error:
                reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
                waited = time.monotonic() - started
                if waited >= settings.db_startup_timeout_seconds:
                    raise SystemExit(
                        f"Cannot start: the database at {where} cannot be reached "
                        f"(waited {waited:.0f} s, DB_STARTUP_TIMEOUT_SECONDS): {reason}"
                    ) from None
                if not said:
                    log.warning(
                        "The database at %s cannot be reached (%s); retrying for up to %g s",
                        where,
                        reason,
                        settings.db_startup_timeout_seconds,
                    )
                    said = True
                time.sleep(1.0)
                continue
            if said:
                log.warning("The database answers after %.1f s", time.monotonic() - started)
            return
    finally:
        engine.dispose()


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
