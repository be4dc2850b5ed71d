"""All task SQL: the owner clause, list filters and orders, single-statement writes, the feed.

Every function takes a session and the owner's id, runs one statement scoped to that owner and
returns rows of PUBLIC_COLUMNS (a task as the API shows it). The exceptions say so: a list page
or a feed page with nothing in it (a second statement for the count or the purge mark), a
conditional write that finds another version (a second look for the current task), a keyed
create (one transaction), a deletion, which carries its audit row (one statement on PostgreSQL,
one transaction of two on SQLite: audit.py), and the sweep (every user's expired rows, one
transaction). Tags and change numbers are kept by the database's triggers (migration 0006).
Statements are built from a small filter/order description, once per shape, and cached; a
request only binds its values.
"""

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from sqlalchemy import (
    Boolean,
    ColumnElement,
    DateTime,
    Integer,
    Row,
    Select,
    String,
    Table,
    bindparam,
    case,
    func,
    not_,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement
from sqlmodel import Session

import audit
from db import transaction
from models import (
    ID_MAX,
    IdempotencyKey,
    Task,
    TaskCount,
    TaskTag,
    TaskTombstone,
    UTCDateTime,
    title_key,
    utcnow,
)

TASK: Table = Task.__table__  # type: ignore[attr-defined]
TAG: Table = TaskTag.__table__  # type: ignore[attr-defined]
TOMBSTONE: Table = TaskTombstone.__table__  # type: ignore[attr-defined]
KEYS: Table = IdempotencyKey.__table__  # type: ignore[attr-defined]
# A task as JSON: the same bytes the routes send (timestamps read as naive UTC, written with Z).
JSON_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z
JSON_KEYS = JSON_OPTIONS | orjson.OPT_SORT_KEYS
COUNT: Table = TaskCount.__table__  # type: ignore[attr-defined]


class utc_naive(FunctionElement[datetime]):
    """A timestamp read as naive UTC, ready for JSON with no per-value work in Python.

    The database does the conversion (PostgreSQL: `timezone('UTC', ...)`; SQLite already stores
    naive UTC), so a page of rows skips the result processor of every timestamp, and orjson
    writes them with a `Z` (OPT_NAIVE_UTC). Only the JSON path reads them; nothing compares them.
    """

    type = DateTime()
    inherit_cache = True


@compiles(utc_naive, "postgresql")
def _utc_naive_postgresql(element: utc_naive, compiler: Any, **kw: Any) -> str:
    return f"timezone('UTC', {compiler.process(element.clauses, **kw)})"


@compiles(utc_naive)
def _utc_naive_stored(element: utc_naive, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


# A task as the API shows it, in the order of schemas.TaskPublic's fields.
PUBLIC_COLUMNS = (
    TASK.c.title,
    TASK.c.description,
    TASK.c.completed,
    TASK.c.priority,
    utc_naive(TASK.c.due_date).label("due_date"),
    TASK.c.all_day,
    TASK.c.tags,
    TASK.c.id,
    TASK.c.user_id,
    TASK.c.version,
    utc_naive(TASK.c.completed_at).label("completed_at"),
    utc_naive(TASK.c.created_at).label("created_at"),
    utc_naive(TASK.c.updated_at).label("updated_at"),
)
PRIORITY_NAMES = ("none", "low", "medium", "high")  # by rank
EDITABLE_FIELDS = ("title", "description", "completed", "priority", "due_date", "all_day", "tags")

# The owner clause, in one place: every statement below is scoped by it.
OWNER = bindparam("owner", type_=String)
OWNED = TASK.c.user_id == OWNER
THIS_TASK = (TASK.c.id == bindparam("task", type_=Integer), OWNED)
NOW = bindparam("now", type_=UTCDateTime)

SortField = Literal["created_at", "updated_at", "title", "due_date", "priority"]
SORT_COLUMNS = {
    "created_at": TASK.c.created_at,
    "updated_at": TASK.c.updated_at,
    "title": title_key(TASK.c.title),  # ignoring case
    "due_date": TASK.c.due_date,
    "priority": TASK.c.priority,
}


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DUE = TASK.c.due_date
# Overdue: not completed, and due in the past; an all-day task once its whole day has passed.
OVERDUE = sa.and_(
    not_(TASK.c.completed),
    DUE.is_not(None),
    sa.or_(
        sa.and_(not_(TASK.c.all_day), DUE < NOW),
        sa.and_(TASK.c.all_day, bindparam("day_ago", type_=UTCDateTime) >= DUE),
    ),
)


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """Which of the owner's tasks a list shows; every field narrows it, None leaves it open."""

    completed: bool | None = None
    search: str | None = None  # a case-insensitive substring of the title or the description
    priorities: tuple[int, ...] | None = None  # any of these ranks
    due_before: datetime | None = None
    due_after: datetime | None = None
    overdue: bool | None = None
    has_due_date: bool | None = None
    updated_since: datetime | None = None
    tags: tuple[str, ...] | None = None  # all of these, ignoring case

    def shape(self) -> "TaskFilter":
        """This filter with its free values blanked: all a cached statement depends on."""

        def blank(value: Any, placeholder: Any) -> Any:
            return None if value is None else placeholder

        return TaskFilter(
            self.completed,
            blank(self.search, ""),
            blank(self.priorities, ()),
            blank(self.due_before, EPOCH),
            blank(self.due_after, EPOCH),
            self.overdue,
            self.has_due_date,
            blank(self.updated_since, EPOCH),
            tuple("" for _ in self.tags) if self.tags is not None else None,
        )

    def clauses(self) -> list[ColumnElement[bool]]:
        clauses = [OWNED]
        if self.completed is not None:
            clauses.append(TASK.c.completed == bindparam("completed", type_=Boolean))
        if self.search is not None:
            pattern = bindparam("pattern", type_=String)
            clauses.append(
                sa.or_(
                    func.lower(TASK.c.title).like(pattern, escape="\\"),
                    func.lower(TASK.c.description).like(pattern, escape="\\"),
                )
            )
        if self.priorities is not None:
            clauses.append(TASK.c.priority.in_(bindparam("priorities", expanding=True)))
        if self.due_before is not None:
            clauses.append(bindparam("due_before", type_=UTCDateTime) > DUE)
        if self.due_after is not None:
            clauses.append(bindparam("due_after", type_=UTCDateTime) < DUE)
        if self.overdue is not None:
            clauses.append(OVERDUE if self.overdue else not_(OVERDUE))
        if self.has_due_date is not None:
            clauses.append(DUE.is_not(None) if self.has_due_date else DUE.is_(None))
        if self.updated_since is not None:
            clauses.append(TASK.c.updated_at > bindparam("updated_since", type_=UTCDateTime))
        for i, _ in enumerate(self.tags or ()):  # one index lookup in task_tag per tag
            tagged = select(TAG.c.task_id).where(
                TAG.c.user_id == OWNER, TAG.c.tag == func.lower(bindparam(f"tag_{i}", type_=String))
            )
            clauses.append(TASK.c.id.in_(tagged))
        return clauses

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.completed is not None:
            params["completed"] = self.completed
        if self.search is not None:  # % and _ are taken literally
            escaped = self.search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params["pattern"] = f"%{escaped}%"
        if self.priorities is not None:
            params["priorities"] = list(self.priorities)
        for name in ("due_before", "due_after", "updated_since"):
            if getattr(self, name) is not None:
                params[name] = getattr(self, name)
        if self.overdue is not None:
            now = utcnow()
            params |= {"now": now, "day_ago": now - timedelta(days=1)}
        params |= {f"tag_{i}": tag for i, tag in enumerate(self.tags or ())}
        return params

    def counted_total(self) -> ColumnElement[int] | None:
        """The number of matching tasks, read from the owner's task_count row; None when the
        counts cannot answer for this filter (anything but the status), and rows are counted."""
        if self.shape() != TaskFilter(self.completed):
            return None
        if self.completed is None:
            return COUNT.c.total
        if self.completed:
            return COUNT.c.completed
        return COUNT.c.total - COUNT.c.completed


@dataclass(frozen=True, slots=True)
class TaskOrder:
    field: SortField = "created_at"
    descending: bool = True

    def clauses(self) -> tuple[Any, ...]:
        # Ties broken by id, so pages are stable. Tasks without a due date come last either way.
        column, tiebreak = SORT_COLUMNS[self.field], TASK.c.id
        first = (TASK.c.due_date.is_(None),) if self.field == "due_date" else ()
        return (*first, column.desc(), tiebreak.desc()) if self.descending else (*first, column, tiebreak)


@dataclass(frozen=True, slots=True)
class Page:
    rows: Sequence[Sequence[Any]]
    total: int  # tasks matching the filter, across all pages


def list_page(
    session: Session, owner: str, where: TaskFilter, order: TaskOrder, *, limit: int, offset: int
) -> Page:
    """One page and the exact number of matching tasks, in one statement (two past the end)."""
    params = {"owner": owner, "limit": limit, "offset": offset, **where.params()}
    rows = session.execute(_list_statement(where.shape(), order), params).all()
    if rows:
        return Page([row[:-1] for row in rows], rows[0][-1] or 0)
    if offset == 0:
        return Page([], 0)
    # Past the last page, there is no row to carry the count: ask for it alone.
    total = session.execute(_count_statement(where.shape()), params).scalar()
    return Page([], total or 0)


def get(session: Session, owner: str, task_id: int) -> Row[Any] | None:
    return session.execute(GET, {"owner": owner, "task": task_id}).first()


def create(session: Session, owner: str, values: dict[str, Any]) -> Row[Any]:
    return session.execute(CREATE, _create_params(owner, values, utcnow())).one()


def _create_params(owner: str, values: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {
        "owner": owner,
        "now": now,
        "completed_at": now if values["completed"] else None,
        **{f"new_{field}": values[field] for field in EDITABLE_FIELDS},
    }


class KeyReused(Exception):
    """An Idempotency-Key came back with another request than the one it was first sent with."""


@dataclass(frozen=True, slots=True)
class FirstAnswer:
    status_code: int
    body: bytes  # the created task as JSON, exactly as first sent
    replayed: bool


def create_once(
    session: Session, owner: str, values: dict[str, Any], key: str, ttl: timedelta
) -> FirstAnswer:
    """Create the task unless this key already did: then answer as the first time, create nothing.

    The key is claimed with an INSERT ... ON CONFLICT DO NOTHING in the same transaction as the
    task's INSERT, so two identical requests racing create one task: the second waits for the
    first's claim to commit (or roll back) and then replays its answer.
    """
    request_hash = hashlib.sha256(orjson.dumps(values, option=JSON_KEYS)).hexdigest()
    now = utcnow()
    engine = session.get_bind()
    assert isinstance(engine, sa.Engine)
    owned_key = (KEYS.c.user_id == owner, KEYS.c.key == key)
    with transaction(engine) as connection:
        connection.execute(sa.delete(KEYS).where(KEYS.c.user_id == owner, KEYS.c.expires_at <= now))
        claim = _insert_ignoring_conflicts(engine.dialect.name).values(
            user_id=owner, key=key, request_hash=request_hash, status_code=201, body="", expires_at=now + ttl
        )
        if connection.execute(claim.returning(KEYS.c.key)).first() is None:
            first = connection.execute(
                select(KEYS.c.request_hash, KEYS.c.status_code, KEYS.c.body).where(*owned_key)
            ).one()
            if first.request_hash != request_hash:
                raise KeyReused
            return FirstAnswer(first.status_code, first.body.encode(), replayed=True)
        row = connection.execute(CREATE, _create_params(owner, values, now)).one()
        body = orjson.dumps(as_public(row), option=JSON_OPTIONS)
        connection.execute(sa.update(KEYS).where(*owned_key).values(body=body.decode()))
    return FirstAnswer(201, body, replayed=False)


def _insert_ignoring_conflicts(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(KEYS).on_conflict_do_nothing()


def create_many(session: Session, owner: str, tasks: Sequence[dict[str, Any]]) -> list[Row[Any]]:
    """Create all of them or none: one multi-row INSERT ... RETURNING, rows in the order given."""
    now = utcnow()
    rows = [
        {
            "user_id": owner,
            **{field: values[field] for field in EDITABLE_FIELDS},
            "completed_at": now if values["completed"] else None,
            "created_at": now,
            "updated_at": now,
        }
        for values in tasks
    ]
    statement = sa.insert(TASK).values(rows).returning(*PUBLIC_COLUMNS)
    # RETURNING's order is not promised (SQLite says so); ids rise in insertion order.
    return sorted(session.execute(statement).all(), key=lambda row: row.id)


class VersionMismatch(Exception):
    """A conditional write found the task at another version: nothing was changed."""

    def __init__(self, current: Row[Any]) -> None:
        super().__init__(f"task is at version {current.version}")
        self.current = current


Versions = frozenset[int] | None  # the versions a conditional write accepts; None: any


def update(
    session: Session, owner: str, task_id: int, values: dict[str, Any], versions: Versions = None
) -> Row[Any] | None:
    """Set the editable fields in `values`, in one atomic UPDATE ... RETURNING; None if no such task.

    With `versions`, the check and the write are one statement (WHERE version IN ...), so of two
    writers holding the same version only one can win; the other gets VersionMismatch.
    """
    if not values:
        row = get(session, owner, task_id)
        if row is not None and versions is not None and row.version not in versions:
            raise VersionMismatch(row)
        return row
    params = {"owner": owner, "task": task_id, "now": utcnow()}
    params.update({f"new_{field}": value for field, value in values.items()})
    statement = _update_statement(frozenset(values), versions is not None)
    return _conditional(session, statement, params, owner, task_id, versions)


def toggle(session: Session, owner: str, task_id: int, versions: Versions = None) -> Row[Any] | None:
    """Flip `completed`; None if no such task."""
    params = {"owner": owner, "task": task_id, "now": utcnow()}
    statement = TOGGLE_IF_VERSION if versions is not None else TOGGLE
    return _conditional(session, statement, params, owner, task_id, versions)


def remove(
    session: Session, owner: str, task_id: int, origin: audit.Origin, versions: Versions = None
) -> bool:
    """Delete the task and record its deletion in the audit trail, both or neither; False if
    there was no such task (nothing is recorded then)."""
    params: dict[str, Any] = {"owner": owner, "task": task_id}
    statement = DELETE
    if versions is not None:
        params["versions"] = sorted(versions)
        statement = DELETE_IF_VERSION
    event = audit.Event("task_deleted", origin, user_id=owner, task_ids=(task_id,))
    deleted = bool(audit.write_with(session, statement, params, event))
    if not deleted and versions is not None:  # missing, or at another version: a second look
        current = get(session, owner, task_id)
        if current is not None:
            raise VersionMismatch(current)
    return deleted


def _conditional(
    session: Session, statement: Any, params: dict[str, Any], owner: str, task_id: int, versions: Versions
) -> Row[Any] | None:
    if versions is not None:
        params["versions"] = sorted(versions)
    row = session.execute(statement, params).first()
    if row is None and versions is not None:  # missing, or at another version: a second look
        current = get(session, owner, task_id)
        if current is not None:
            raise VersionMismatch(current)
    return row


@dataclass(frozen=True, slots=True)
class Stats:
    total: int
    completed: int
    pending: int
    overdue: int
    due_today: int


def stats(session: Session, owner: str, day_start: datetime, day_end: datetime, day: date) -> Stats:
    """The owner's counts in one statement; `due_today` is pending tasks due in [start, end) or,
    all day, on `day` (the client's today)."""
    now = utcnow()
    params = {
        "owner": owner,
        "now": now,
        "day_ago": now - timedelta(days=1),
        "day_start": day_start,
        "day_end": day_end,
        "day_midnight": datetime.combine(day, time(), UTC),
    }
    total, completed, overdue, due_today = session.execute(STATS, params).one()
    total, completed = total or 0, completed or 0
    return Stats(total, completed, total - completed, overdue, due_today)


def remove_matching(
    session: Session, owner: str, where: TaskFilter, origin: audit.Origin, detail: str | None = None
) -> int:
    """Delete every task of the owner that the filter matches and record how many went, and
    which, in the audit trail (when any did), both or neither; how many."""
    params = {"owner": owner, **where.params()}
    event = audit.Event("tasks_deleted", origin, user_id=owner, detail=detail)
    return audit.delete_with(session, _delete_statement(where.shape()), params, event)


# --- the sync feed ----------------------------------------------------------------------------


class CursorInvalid(ValueError):
    """A cursor this service did not hand out."""


class CursorExpired(Exception):
    """Deletions after this cursor were purged: the client must sync again from scratch."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a client's copy stands: every change up to `seq` is in it, and every deletion up
    to `horizon` too (a full sync starts with the deletions purged so far behind it)."""

    seq: int = 0
    horizon: int = 0

    def encode(self) -> str:
        return base64.urlsafe_b64encode(f"c1.{self.seq}.{self.horizon}".encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> "Cursor":
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
            version, seq, horizon = raw.split(".")
            cursor = cls(int(seq), int(horizon))
        except (ValueError, UnicodeDecodeError):
            raise CursorInvalid from None
        if version != "c1" or not (0 <= cursor.seq <= ID_MAX and 0 <= cursor.horizon <= ID_MAX):
            raise CursorInvalid
        if cursor.encode() != text:  # one spelling per cursor: no leading zeros, no padding
            raise CursorInvalid
        return cursor


@dataclass(frozen=True, slots=True)
class Changes:
    rows: Sequence[Sequence[Any]]  # tasks changed, in change order (PUBLIC_COLUMNS)
    deleted: Sequence[int]  # ids of tasks deleted
    cursor: Cursor  # where the next page starts
    more: bool  # whether more changes wait after this page


def changes(session: Session, owner: str, since: Cursor | None, limit: int) -> Changes:
    """The owner's changes after `since`, oldest first, in one statement (two when none).

    Sequence numbers rise in commit order per user (migration 0006), so reading "after N"
    misses nothing and repeats nothing. Without `since` (a first sync) deleted tasks are left
    out: the client has none of them.
    """
    after = since.seq if since is not None else 0
    params = {"owner": owner, "after": after, "limit": limit + 1}
    rows = session.execute(_changes_statement(since is not None), params).all()
    purged = rows[0].purged if rows else session.execute(PURGED, params).scalar()
    purged = purged or 0
    if since is not None and purged > max(since.seq, since.horizon):
        raise CursorExpired
    page = rows[:limit]
    tasks = [row[:PUBLIC_WIDTH] for row in page if not row.gone]
    deleted = [row.change_id for row in page if row.gone]
    last = page[-1].seq if page else after
    cursor = Cursor(last, since.horizon if since is not None else purged)
    return Changes(tasks, deleted, cursor, more=len(rows) > limit)


@dataclass(frozen=True, slots=True)
class Swept:
    tombstones: int
    idempotency_keys: int


def sweep(session: Session, tombstone_ttl: timedelta) -> Swept:
    """Purge expired tombstones (recording, per user, the highest sequence number purged) and
    expired idempotency keys, in one transaction."""
    now = utcnow()
    engine = session.get_bind()
    assert isinstance(engine, sa.Engine)
    with transaction(engine) as connection:
        expired = sa.delete(TOMBSTONE).where(TOMBSTONE.c.deleted_at < now - tombstone_ttl)
        gone = connection.execute(expired.returning(TOMBSTONE.c.user_id, TOMBSTONE.c.change_seq)).all()
        highest: dict[str, int] = {}
        for user, seq in gone:
            highest[user] = max(highest.get(user, 0), seq)
        if highest:
            purged = bindparam("purged", type_=sa.BigInteger)
            mark = (
                sa.update(COUNT)
                .where(COUNT.c.user_id == bindparam("owner", type_=String))
                .values(purged_seq=case((COUNT.c.purged_seq > purged, COUNT.c.purged_seq), else_=purged))
            )
            connection.execute(mark, [{"owner": user, "purged": seq} for user, seq in highest.items()])
        keys = connection.execute(sa.delete(KEYS).where(KEYS.c.expires_at <= now))
    return Swept(len(gone), keys.rowcount)


# --- the statements, built once per shape -----------------------------------------------------

NEW_VALUES: dict[str, Any] = {
    "title": bindparam("new_title", type_=String),
    "description": bindparam("new_description", type_=String),
    "completed": bindparam("new_completed", type_=Boolean),
    "priority": bindparam("new_priority", type_=Integer),
    "due_date": bindparam("new_due_date", type_=UTCDateTime),
    "all_day": bindparam("new_all_day", type_=Boolean),
    "tags": bindparam("new_tags", type_=String),
}
NEXT_VERSION = TASK.c.version + 1
# Completing an already completed task keeps its original completion time.
COMPLETED_AT = case((NEW_VALUES["completed"], func.coalesce(TASK.c.completed_at, NOW)), else_=None)

GET = select(*PUBLIC_COLUMNS).where(*THIS_TASK)
CREATE = (
    sa.insert(TASK)
    .values(
        user_id=OWNER,
        **NEW_VALUES,
        completed_at=bindparam("completed_at", type_=UTCDateTime),
        created_at=NOW,
        updated_at=NOW,
    )
    .returning(*PUBLIC_COLUMNS)
)
TOGGLE = (
    sa.update(TASK)
    .where(*THIS_TASK)
    .values(
        completed=not_(TASK.c.completed),
        completed_at=case((TASK.c.completed, None), else_=NOW),
        updated_at=NOW,
        version=NEXT_VERSION,
    )
    .returning(*PUBLIC_COLUMNS)
)
DELETE = sa.delete(TASK).where(*THIS_TASK).returning(TASK.c.id)
DUE_TODAY = sa.and_(
    not_(TASK.c.completed),
    sa.or_(
        sa.and_(
            not_(TASK.c.all_day),
            bindparam("day_start", type_=UTCDateTime) <= DUE,
            bindparam("day_end", type_=UTCDateTime) > DUE,
        ),
        sa.and_(TASK.c.all_day, bindparam("day_midnight", type_=UTCDateTime) == DUE),
    ),
)
STATS = select(
    select(COUNT.c.total).where(COUNT.c.user_id == OWNER).scalar_subquery(),
    select(COUNT.c.completed).where(COUNT.c.user_id == OWNER).scalar_subquery(),
    select(func.count()).select_from(TASK).where(OWNED, OVERDUE).scalar_subquery(),
    select(func.count()).select_from(TASK).where(OWNED, DUE_TODAY).scalar_subquery(),
)
AT_VERSION = TASK.c.version.in_(bindparam("versions", expanding=True))
TOGGLE_IF_VERSION = TOGGLE.where(AT_VERSION)
DELETE_IF_VERSION = sa.delete(TASK).where(*THIS_TASK, AT_VERSION).returning(TASK.c.id)


PUBLIC_WIDTH = len(PUBLIC_COLUMNS)
PURGED = select(COUNT.c.purged_seq).where(COUNT.c.user_id == OWNER)


@cache
def _changes_statement(with_deleted: bool) -> Select[Any]:
    """A page of changes: the sequence numbers in order (from two index scans), then the tasks."""
    after = bindparam("after", type_=sa.BigInteger)
    live = select(
        TASK.c.change_seq.label("seq"), TASK.c.id.label("change_id"), sa.literal(0).label("gone")
    ).where(OWNED, TASK.c.change_seq > after)
    feed: Any = live
    if with_deleted:
        dead = select(TOMBSTONE.c.change_seq, TOMBSTONE.c.task_id, sa.literal(1)).where(
            TOMBSTONE.c.user_id == OWNER, TOMBSTONE.c.change_seq > after
        )
        feed = sa.union_all(live, dead)
    page = feed.order_by("seq").limit(bindparam("limit", type_=Integer)).subquery("page")
    joined = page.outerjoin(TASK, sa.and_(TASK.c.id == page.c.change_id, page.c.gone == 0))
    return (
        select(
            *PUBLIC_COLUMNS,
            page.c.seq,
            page.c.change_id,
            page.c.gone,
            PURGED.scalar_subquery().label("purged"),
        )
        .select_from(joined)
        .order_by(page.c.seq)
    )


# Keyed by the filter's shape (its free values blanked) and the order; a request binds the values.
@cache
def _list_statement(where: TaskFilter, order: TaskOrder) -> Select[Any]:
    counted = where.counted_total()
    total = (
        select(counted).where(COUNT.c.user_id == OWNER).scalar_subquery()
        if counted is not None
        else func.count().over()  # a text search: count the matching rows with the page
    )
    return (
        select(*PUBLIC_COLUMNS, total.label("total"))
        .where(*where.clauses())
        .order_by(*order.clauses())
        .limit(bindparam("limit", type_=Integer))
        .offset(bindparam("offset", type_=Integer))
    )


@cache
def _count_statement(where: TaskFilter) -> Select[Any]:
    counted = where.counted_total()
    if counted is None:
        return select(func.count()).select_from(TASK).where(*where.clauses())
    return select(counted).where(COUNT.c.user_id == OWNER)


@cache
def _delete_statement(where: TaskFilter) -> Any:
    return sa.delete(TASK).where(*where.clauses()).returning(TASK.c.id)


@cache
def _update_statement(fields: frozenset[str], conditional: bool = False) -> Any:
    values = {field: NEW_VALUES[field] for field in fields}
    if "completed" in fields:
        values["completed_at"] = COMPLETED_AT
    values["updated_at"] = NOW
    values["version"] = NEXT_VERSION
    where = (*THIS_TASK, AT_VERSION) if conditional else THIS_TASK
    return sa.update(TASK).where(*where).values(**values).returning(*PUBLIC_COLUMNS)


def as_public(row: Sequence[Any]) -> dict[str, Any]:
    """A row of PUBLIC_COLUMNS as the API's task object (schemas.TaskPublic), key for key."""
    (title, description, completed, priority, due, all_day, tags, task_id, user_id, version) = row[:10]
    return {
        "title": title,
        "description": description,
        "completed": completed,
        "status": "completed" if completed else "pending",
        "priority": PRIORITY_NAMES[priority],
        "due_date": due.date().isoformat() if all_day and due is not None else due,
        "tags": orjson.Fragment(tags),  # stored as the JSON it is sent as
        "id": task_id,
        "user_id": user_id,
        "version": version,
        "completed_at": row[10],
        "created_at": row[11],
        "updated_at": row[12],
    }
