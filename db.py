"""The database engine, its migrations and the per-request session."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from alembic import command
from alembic.config import Config
from anyio import to_thread
from fastapi import Depends, Request
from sqlalchemy import Engine, event, make_url
from sqlmodel import Session, create_engine

from settings import Settings

ROOT = Path(__file__).resolve().parent


def make_engine(settings: Settings) -> Engine:
    if settings.is_sqlite:
        in_memory = make_url(settings.database_url).database in (None, "", ":memory:")
        # Keep every connection of a file database: opening one costs more than a query.
        pool: dict[str, Any] = (
            {}
            if in_memory
            else {
                "pool_size": settings.db_pool_size + settings.db_max_overflow,
                "max_overflow": 0,
                "pool_timeout": settings.db_pool_timeout,
            }
        )
        engine = create_engine(
            settings.database_url,
            # Sessions are used from FastAPI's threadpool; each request gets its own connection.
            connect_args={"check_same_thread": False, "timeout": 30},
            **pool,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        settings.database_url,
        # Serverless PostgreSQL (Neon) drops idle connections: test each one before use
        # and recycle them before the server does.
        pool_pre_ping=True,
        pool_recycle=settings.db_pool_recycle,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def alembic_config() -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to `revision` with the Alembic migrations."""
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A session per request, used by the sync handlers in the threadpool.

    Opening a session does no I/O, and closing one after a commit does none either, so both run
    on the event loop; only a session still in a transaction (a read) is closed in a thread,
    since returning its connection rolls back over the network.
    """
    # expire_on_commit=False: a committed row is returned as is, without a second SELECT.
    session = Session(request.app.state.engine, expire_on_commit=False)
    try:
        yield session
    finally:
        if session.in_transaction():
            await to_thread.run_sync(session.close)
        else:
            session.close()


SessionDep = Annotated[Session, Depends(get_session)]
