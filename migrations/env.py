"""Alembic environment: runs on the service's own engine, or one built from DATABASE_URL."""

from logging.config import fileConfig

from alembic import context
from sqlalchemy import text
from sqlmodel import SQLModel

import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from db import make_engine, transaction, wait_for_database
from settings import Settings

target_metadata = SQLModel.metadata
# An arbitrary constant: one migrator at a time when several instances start together.
ADVISORY_LOCK_ID = 7_265_430_011


def run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": ADVISORY_LOCK_ID})
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("Offline (--sql) migrations are not supported; run against a database.")

connection = context.config.attributes.get("connection")
if connection is not None:
    run(connection)
else:  # the alembic command line (`make migrate`): say what it does
    if context.config.config_file_name:
        fileConfig(context.config.config_file_name, disable_existing_loggers=False)
    settings = Settings().migration_settings  # MIGRATION_DATABASE_URL, if set
    wait_for_database(settings)  # a database still starting (or a Neon compute waking) is waited for
    engine = make_engine(settings)
    with transaction(engine) as connection:
        run(connection)
    engine.dispose()
