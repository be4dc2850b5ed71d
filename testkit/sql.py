"""What the service sends to its database: the statements of a request, and a list's query plan."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

import tasks
from testkit import services_of


def engine_of(client: TestClient) -> Engine:
    return services_of(client).database.engine


@contextmanager
def statements_seen(engine: Engine) -> Iterator[list[tuple[str, bool]]]:
    """Each statement the engine sends, and whether a transaction was left open after it."""
    seen: list[tuple[str, bool]] = []

    def after(conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        dbapi = conn.connection.dbapi_connection
        if engine.dialect.name == "sqlite":
            open_transaction = dbapi.in_transaction
        else:  # psycopg2: 0 is idle, outside any transaction
            open_transaction = dbapi.get_transaction_status() != 0
        seen.append((statement, open_transaction))

    event.listen(engine, "after_cursor_execute", after)
    try:
        yield seen
    finally:
        event.remove(engine, "after_cursor_execute", after)


def plan_of(engine: Engine, where: tasks.TaskFilter, order: tasks.TaskOrder, owner: str = "alice") -> str:
    """The plan of the statement the list route runs, one line per step.

    On PostgreSQL, sequential scans and sorts are priced out first, so that the plan shows
    whether an index can serve the statement at all, whatever the planner would pick for a
    table this small.
    """
    compiled = tasks._list_statement(where.shape(), order).compile(engine)
    params = {**compiled.params, "owner": owner, "limit": 50, "offset": 0, **where.params()}
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            rows = connection.exec_driver_sql(
                f"EXPLAIN QUERY PLAN {compiled}", tuple(params[k] for k in compiled.positiontup or ())
            )
            return " | ".join(str(row[-1]) for row in rows)
        connection.exec_driver_sql("SET enable_seqscan = off")
        connection.exec_driver_sql("SET enable_sort = off")
        rows = connection.exec_driver_sql(f"EXPLAIN {compiled}", params)
        plan = " | ".join(row[0] for row in rows)
        connection.exec_driver_sql("RESET ALL")
        return plan
