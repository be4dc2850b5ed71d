"""The tables: tasks, their tags, tombstones and counts, accounts, revoked tokens, the audit trail."""

from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import BigInteger, DateTime, Index, Integer, SmallInteger, Text, TypeDecorator, column, false
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement
from sqlmodel import Column, Field, SQLModel

# Every constraint and index gets a predictable name, so that later migrations (foreign keys,
# tag tables) can drop or alter them by name on PostgreSQL and SQLite alike.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

TITLE_MAX = 200
DESCRIPTION_MAX = 1000
USER_ID_MAX = 255


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite stores no offset, so add it back on read)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        value = value.astimezone(UTC)
        # SQLite keeps text: store a fixed-width naive UTC form so text order is time order.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Bigint on PostgreSQL; SQLite needs exactly INTEGER for its rowid primary key.
ID_TYPE = BigInteger().with_variant(Integer(), "sqlite")
ID_MAX = 2**63 - 1
# The largest integer a JSON number (a double) holds exactly: the bound of a body's `version`.
SAFE_INTEGER_MAX = 2**53 - 1
TAG_MAX = 50  # characters of a tag as given
TAG_KEY_MAX = 200  # its lower-cased form can be longer
TAGS_MAX = 20  # per task
EMAIL_MAX = 254
AUDIT_ACTION_MAX = 20
AUDIT_DETAIL_MAX = 100
AUDIT_ADDRESS_MAX = 64  # an IPv6 address with an IPv4 tail and a zone fits
AUDIT_USER_AGENT_MAX = 200
AUDIT_REQUEST_ID_MAX = 64  # as observability.REQUEST_ID accepts them
TASK_IDS_MAX = 1000  # ids kept per audited bulk deletion


class title_key(FunctionElement[str]):
    """The title as the list sorts it, ignoring case: `lower(title)` on PostgreSQL, the built-in
    NOCASE collation on SQLite (an index on a function a connection redefines could go stale)."""

    inherit_cache = True


@compiles(title_key, "postgresql")
def _title_key_postgresql(element: title_key, compiler: Any, **kw: Any) -> str:
    return f"lower({compiler.process(element.clauses, **kw)})"


@compiles(title_key)
def _title_key_sqlite(element: title_key, compiler: Any, **kw: Any) -> str:
    return f"{compiler.process(element.clauses, **kw)} COLLATE NOCASE"


TITLE_KEY = title_key(column("title"))


class Task(SQLModel, table=True):
    # One index per list order, each led by the owner, so every page is read in index order
    # (never sorted): newest first (the default), by update time, by title, and pending/done.
    __table_args__ = (
        Index("ix_task_user_created", "user_id", "created_at", "id"),
        Index("ix_task_user_completed_created", "user_id", "completed", "created_at", "id"),
        Index("ix_task_user_updated", "user_id", "updated_at", "id"),
        Index("ix_task_user_title", "user_id", TITLE_KEY, "id"),
        Index("ix_task_user_due", "user_id", "due_date", "id"),
        # The sync feed: a user's changes in sequence order.
        Index("ix_task_user_change", "user_id", "change_seq"),
        # SQLite: a deleted task's id is never reused (PostgreSQL's sequence never reuses one).
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, sa_column=Column(ID_TYPE, primary_key=True))
    user_id: str = Field(max_length=USER_ID_MAX)
    title: str = Field(max_length=TITLE_MAX)
    description: str | None = Field(default=None, max_length=DESCRIPTION_MAX)
    completed: bool = False
    # 0 none, 1 low, 2 medium, 3 high: stored as a rank so that it sorts.
    priority: int = Field(default=0, sa_type=SmallInteger, sa_column_kwargs={"server_default": "0"})
    # A date alone is stored as that day's midnight UTC with all_day set: it reads back as a date
    # and is overdue only once the whole day has passed.
    due_date: datetime | None = Field(default=None, sa_type=UTCDateTime)
    all_day: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    # Rises by one on every change: the task's ETag, and the check of If-Match.
    version: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    completed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    # The tags as a JSON array, in the order given: what reads return. task_tag indexes them.
    tags: str = Field(default="[]", sa_type=Text, sa_column_kwargs={"server_default": "[]"})
    # Set by triggers on every insert and update (migration 0006): the sync feed's order.
    change_seq: int = Field(default=0, sa_type=BigInteger, sa_column_kwargs={"server_default": "0"})


class TaskTag(SQLModel, table=True):
    """One row per tag of a task, lower-cased, kept by triggers from `task.tags`: tag filters
    read the index (user, tag) instead of searching text."""

    __tablename__ = "task_tag"
    __table_args__ = (Index("ix_task_tag_user_tag", "user_id", "tag", "task_id"),)

    task_id: int = Field(sa_column=Column(ID_TYPE, primary_key=True))
    tag: str = Field(primary_key=True, max_length=TAG_KEY_MAX)
    user_id: str = Field(max_length=USER_ID_MAX)


class TaskTombstone(SQLModel, table=True):
    """A deleted task, left by a trigger for the sync feed; purged after the retention period."""

    __tablename__ = "task_tombstone"
    __table_args__ = (Index("ix_task_tombstone_user_change", "user_id", "change_seq"),)

    task_id: int = Field(sa_column=Column(ID_TYPE, primary_key=True))
    user_id: str = Field(max_length=USER_ID_MAX)
    deleted_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
    change_seq: int = Field(sa_type=BigInteger)


class TaskCount(SQLModel, table=True):
    """How many tasks each user has, and how many of them are completed.

    Kept in step with `task` by database triggers (migration 0003), in the same statement as the
    write, so an exact `X-Total-Count` costs one row read however many tasks a user has.
    """

    __tablename__ = "task_count"

    user_id: str = Field(primary_key=True, max_length=USER_ID_MAX)
    total: int = 0
    completed: int = 0
    # The highest sequence number among purged tombstones: an older cursor may miss a deletion.
    purged_seq: int = Field(default=0, sa_type=BigInteger, sa_column_kwargs={"server_default": "0"})


class RevokedToken(SQLModel, table=True):
    """A logged-out token: refused until it would have expired anyway."""

    __tablename__ = "revoked_token"

    jti: str = Field(primary_key=True, max_length=64)
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: str = Field(default_factory=lambda: uuid4().hex, primary_key=True, max_length=32)
    # Stored lower-cased, so the unique index makes emails unique case-insensitively.
    email: str = Field(max_length=254, unique=True)
    name: str = Field(max_length=100)
    password_hash: str = Field(max_length=255)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class IdempotencyKey(SQLModel, table=True):
    """The first answer to a POST sent with an Idempotency-Key, replayed to its retries."""

    __tablename__ = "idempotency_key"

    user_id: str = Field(primary_key=True, max_length=USER_ID_MAX)
    key: str = Field(primary_key=True, max_length=255)
    request_hash: str = Field(max_length=64)  # what the first request asked for
    status_code: int
    body: str = Field(sa_type=Text)  # the first response, as sent
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)


class AuditEvent(SQLModel, table=True):
    """One audited action: who, what, when, from where and under which request id.

    Written by audit.py in the same statement or transaction as the write it records; read by
    operators (README, "Audit trail"). Bounded: every text column has a length, and a bulk
    deletion keeps at most TASK_IDS_MAX of its ids (`deleted_count` says how many went).
    """

    __tablename__ = "audit_event"
    __table_args__ = (
        # A user's history and an email's (failed logins carry no user), newest first.
        Index("ix_audit_event_user_at", "user_id", "at"),
        Index("ix_audit_event_email_at", "email", "at"),
    )

    id: int | None = Field(default=None, sa_column=Column(ID_TYPE, primary_key=True))
    at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
    action: str = Field(max_length=AUDIT_ACTION_MAX)
    user_id: str | None = Field(default=None, max_length=USER_ID_MAX)
    email: str | None = Field(default=None, max_length=EMAIL_MAX)
    detail: str | None = Field(default=None, max_length=AUDIT_DETAIL_MAX)
    deleted_count: int | None = None
    # A JSON array of ids, ascending, without spaces: `[4,7,9]`.
    task_ids: str | None = Field(default=None, sa_type=Text)
    address: str | None = Field(default=None, max_length=AUDIT_ADDRESS_MAX)
    user_agent: str | None = Field(default=None, max_length=AUDIT_USER_AGENT_MAX)
    request_id: str | None = Field(default=None, max_length=AUDIT_REQUEST_ID_MAX)
