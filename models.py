"""The tables and the request/response models built on them."""

from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import uuid4

from pydantic import AfterValidator, ConfigDict, StrictBool, StringConstraints, model_validator
from sqlalchemy import BigInteger, DateTime, Index, Integer, TypeDecorator
from sqlmodel import Column, Field, SQLModel

TITLE_MAX = 200
DESCRIPTION_MAX = 1000


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


def storable_text(value: str) -> str:
    """Refuse text PostgreSQL cannot store: NUL characters and lone surrogates."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


Title = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=TITLE_MAX),
    AfterValidator(storable_text),
]
Description = Annotated[str, StringConstraints(max_length=DESCRIPTION_MAX), AfterValidator(storable_text)]
Timestamp = Annotated[datetime, Field(sa_type=UTCDateTime)]

# Bigint on PostgreSQL; SQLite needs exactly INTEGER for its rowid primary key.
ID_TYPE = BigInteger().with_variant(Integer(), "sqlite")
ID_MAX = 2**63 - 1


class TaskBase(SQLModel):
    title: Title = Field(max_length=TITLE_MAX)
    description: Description | None = Field(default=None, max_length=DESCRIPTION_MAX)
    # JSON true/false only: "yes" or 1 is a wrong type, not a guess.
    completed: StrictBool = False


class Task(TaskBase, table=True):
    __table_args__ = (
        # Serves "this user's tasks, newest first" (and oldest first) straight from the index.
        Index("ix_task_user_created", "user_id", "created_at", "id"),
    )

    id: int | None = Field(default=None, sa_column=Column(ID_TYPE, primary_key=True))
    user_id: str = Field(max_length=255, nullable=False)
    completed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


READ_ONLY_FIELDS = frozenset({"id", "user_id", "created_at", "updated_at", "completed_at"})


class TaskInput(SQLModel):
    """Base of what clients send: unknown fields are refused, read-only ones dropped."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    @model_validator(mode="before")
    @classmethod
    def _drop_read_only(cls, data: Any) -> Any:
        # A frontend may send back the object it received; its server-owned fields are ignored.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in READ_ONLY_FIELDS}
        return data


class TaskCreate(TaskInput, TaskBase):
    pass


class TaskUpdate(TaskInput, TaskBase):
    """PUT: a full replacement of the editable fields; what is left out takes its default."""


class TaskPatch(TaskInput):
    title: Title | None = None
    description: Description | None = None
    completed: StrictBool | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> "TaskPatch":
        # Leaving a field out keeps it; sending null for one that cannot be empty is an error.
        if "title" in self.model_fields_set and self.title is None:
            raise ValueError("title cannot be null")
        if "completed" in self.model_fields_set and self.completed is None:
            raise ValueError("completed cannot be null")
        return self


class TaskCompletion(TaskInput):
    completed: StrictBool


class ErrorDetail(SQLModel):
    detail: str


class TaskPublic(TaskBase):
    id: int
    user_id: str
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime


class RevokedToken(SQLModel, table=True):
    """A logged-out token: refused until it would have expired anyway."""

    __tablename__ = "revoked_token"

    jti: str = Field(primary_key=True, max_length=64)
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)


def email_address(value: str) -> str:
    local, at, domain = value.rpartition("@")
    if not at or not local or "." not in domain.strip(".") or any(c.isspace() for c in value):
        raise ValueError("must be an email address")
    return value


Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, to_lower=True, min_length=3, max_length=254),
    AfterValidator(storable_text),
    AfterValidator(email_address),
]
Password = Annotated[str, StringConstraints(min_length=8, max_length=128), AfterValidator(storable_text)]
Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100), AfterValidator(storable_text)
]


class UserBase(SQLModel):
    email: Email = Field(max_length=254)
    name: Name = Field(max_length=100)


class User(UserBase, table=True):
    __tablename__ = "users"

    id: str = Field(default_factory=lambda: uuid4().hex, primary_key=True, max_length=32)
    # Stored lower-cased, so the unique index makes emails unique case-insensitively.
    email: str = Field(max_length=254, unique=True)
    password_hash: str = Field(max_length=255)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class UserRegister(UserBase):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    password: Password


class UserLogin(SQLModel):
    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    # Not format-checked: an unknown or malformed email is the same 401 as a wrong password.
    email: Annotated[
        str,
        StringConstraints(strip_whitespace=True, to_lower=True, min_length=1, max_length=254),
        AfterValidator(storable_text),
    ]
    password: Annotated[str, StringConstraints(min_length=1, max_length=128), AfterValidator(storable_text)]


class UserPublic(UserBase):
    id: str
    created_at: datetime


class TokenResponse(SQLModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 (the OAuth2 token type, not a secret)
    expires_in: int
    user: UserPublic
