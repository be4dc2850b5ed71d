"""The audit trail: who did what, when, from where, under which request id (table `audit_event`).

An audited write and its event stand or fall together, at no extra round trip where the
database allows it:

- PostgreSQL: one statement. The write runs in a data-modifying CTE and the event is inserted
  from the rows it returns (`WITH written AS (DELETE ... RETURNING id) INSERT INTO audit_event
  ... SELECT ... FROM written`), so a write that touched nothing records nothing, and a failed
  event insert undoes the write.
- SQLite, which has no data-modifying CTE: one transaction of two statements (`BEGIN
  IMMEDIATE`, the write, the event, `COMMIT`). SQLite is in the process: no round trips.

An action that writes nothing else (a login, a failed one) is one INSERT of its own, in the
same worker-thread hop as the request's other database work.
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from functools import cache
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from fastapi import Request
from sqlalchemy import Connection, Row, Select, Table, Text, bindparam, func, select
from sqlalchemy.dialects.postgresql import aggregate_order_by, array_agg
from sqlmodel import Session

from models import (
    AUDIT_ADDRESS_MAX,
    AUDIT_REQUEST_ID_MAX,
    AUDIT_USER_AGENT_MAX,
    TASK_IDS_MAX,
    AuditEvent,
    utcnow,
)

AUDIT: Table = AuditEvent.__table__  # type: ignore[attr-defined]

Action = Literal["register", "login", "login_failed", "logout", "task_deleted", "tasks_deleted"]

# The event's columns, each bound by name (`audit_<column>`), in one place for every statement.
FIELDS = (
    "at",
    "action",
    "user_id",
    "email",
    "detail",
    "deleted_count",
    "task_ids",
    "address",
    "user_agent",
    "request_id",
)
VALUES: dict[str, Any] = {name: bindparam(f"audit_{name}", type_=AUDIT.c[name].type) for name in FIELDS}
INSERT = sa.insert(AUDIT).values(VALUES)


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a request came from, as the trail records it."""

    address: str | None = None
    user_agent: str | None = None
    request_id: str | None = None

    @classmethod
    def of(cls, request: Request) -> "Origin":
        """The client's full address (as the server sees it, behind trusted proxies only), its
        User-Agent, and the request id the middleware gave the request, when it gives one.

        The full address, not the rate limiter's /64 of an IPv6 client: it is what the proxy's
        and the access log's lines show, and a /64 can be derived from it later, not the reverse.
        """
        host = request.client.host if request.client else None
        agent = request.headers.get("user-agent")
        request_id = getattr(request.state, "request_id", None)
        if not isinstance(request_id, str) or not request_id:
            request_id = None
        return cls(
            address=host[:AUDIT_ADDRESS_MAX] if host else None,
            user_agent=agent[:AUDIT_USER_AGENT_MAX] if agent else None,
            request_id=request_id[:AUDIT_REQUEST_ID_MAX] if request_id else None,
        )


@dataclass(frozen=True, slots=True)
class Event:
    action: Action
    origin: Origin
    user_id: str | None = None
    email: str | None = None  # an identifier, never a secret: no password is ever recorded
    detail: str | None = None
    task_ids: Sequence[int] | None = None  # deletions: every id that went

    def params(self) -> dict[str, Any]:
        ids = sorted(self.task_ids) if self.task_ids is not None else None
        return {
            "audit_at": utcnow(),
            "audit_action": self.action,
            "audit_user_id": self.user_id,
            "audit_email": self.email,
            "audit_detail": self.detail,
            "audit_deleted_count": len(ids) if ids is not None else None,
            "audit_task_ids": orjson.dumps(ids[:TASK_IDS_MAX]).decode() if ids is not None else None,
            "audit_address": self.origin.address,
            "audit_user_agent": self.origin.user_agent,
            "audit_request_id": self.origin.request_id,
        }


def record(session: Session, event: Event) -> None:
    """Insert one event on its own: one statement (autocommit)."""
    session.execute(INSERT, event.params())


def write_with(session: Session, write: Any, params: dict[str, Any], event: Event) -> Sequence[Row[Any]]:
    """Run `write`, an INSERT or DELETE ... RETURNING of at most one row, and record `event` if
    it wrote a row, all or nothing; the rows it returned."""
    if _dialect(session) == "postgresql":
        return session.execute(_write_with_event(write), {**params, **event.params()}).all()
    with _sqlite_transaction(session) as connection:
        rows = connection.execute(write, params).all()
        if rows:
            connection.execute(INSERT, event.params())
    return rows


def delete_with(session: Session, delete: Any, params: dict[str, Any], event: Event) -> int:
    """Run `delete`, a DELETE ... RETURNING the ids of the rows it removes, and record `event`
    with how many went and their ids (the first TASK_IDS_MAX) if any did, all or nothing; how
    many went."""
    if _dialect(session) == "postgresql":
        return int(session.execute(_delete_with_event(delete), {**params, **event.params()}).scalar_one())
    with _sqlite_transaction(session) as connection:
        ids = connection.execute(delete, params).scalars().all()
        if ids:
            connection.execute(INSERT, replace(event, task_ids=ids).params())
    return len(ids)


def purge(session: Session, older_than: timedelta) -> int:
    """Delete the events older than the retention period (AUDIT_RETENTION_DAYS); how many."""
    result: Any = session.execute(sa.delete(AUDIT).where(AUDIT.c.at < utcnow() - older_than))
    return int(result.rowcount)


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


@contextmanager
def _sqlite_transaction(session: Session) -> Iterator[Connection]:
    """`BEGIN IMMEDIATE` ... `COMMIT` on the session's own autocommit connection.

    Not `db.transaction()`: switching a connection's isolation level there and back costs more
    than the two statements themselves (about 0.2 ms on SQLite). IMMEDIATE takes the write lock
    at once, so the transaction cannot fail half-way for want of it.
    """
    connection = session.connection()
    connection.exec_driver_sql("BEGIN IMMEDIATE")
    try:
        yield connection
        connection.exec_driver_sql("COMMIT")
    except BaseException:
        # A no-op if SQLite already ended the transaction itself (it does on some errors);
        # the engine skips the rollback on check-in, so it must happen here.
        connection.connection.dbapi_connection.rollback()  # type: ignore[union-attr]
        raise


# Cached by statement: callers pass module-level or cached statements, so each shape is built
# (and compiled) once.
@cache
def _write_with_event(write: Any) -> Select[Any]:
    written = write.cte("written")
    logged = sa.insert(AUDIT).from_select(list(VALUES), select(*VALUES.values()).select_from(written))
    return select(written).add_cte(logged.cte("logged"))


@cache
def _delete_with_event(delete: Any) -> Select[Any]:
    gone = delete.cte("gone")
    task_id = next(iter(gone.c))
    # array_to_json, not json_agg: `[4,7,9]` without spaces, as the SQLite path writes them.
    kept = array_agg(aggregate_order_by(task_id, task_id))[1:TASK_IDS_MAX]
    values = {**VALUES, "deleted_count": func.count(), "task_ids": sa.cast(func.array_to_json(kept), Text)}
    logged = sa.insert(AUDIT).from_select(
        list(values), select(*values.values()).select_from(gone).having(func.count() > 0)
    )
    return select(func.count()).select_from(gone).add_cte(logged.cte("logged"))
