"""What clients send and get back: the validated request bodies and the documented responses."""

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, StrictBool, StringConstraints, model_validator

from models import DESCRIPTION_MAX, TITLE_MAX


def storable_text(value: str) -> str:
    """Refuse text PostgreSQL cannot store: NUL characters and lone surrogates."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


def email_address(value: str) -> str:
    local, at, domain = value.rpartition("@")
    if not at or not local or "." not in domain.strip(".") or any(c.isspace() for c in value):
        raise ValueError("must be an email address")
    return value


Title = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=TITLE_MAX),
    AfterValidator(storable_text),
]
Description = Annotated[str, StringConstraints(max_length=DESCRIPTION_MAX), AfterValidator(storable_text)]
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


class ErrorDetail(BaseModel):
    detail: str


# --- tasks ------------------------------------------------------------------------------------

READ_ONLY_FIELDS = frozenset({"id", "user_id", "created_at", "updated_at", "completed_at"})


class TaskInput(BaseModel):
    """Base of what clients send: unknown fields are refused, read-only ones dropped."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _drop_read_only(cls, data: Any) -> Any:
        # A frontend may send back the object it received; its server-owned fields are ignored.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in READ_ONLY_FIELDS}
        return data


class TaskBase(BaseModel):
    title: Title
    description: Description | None = None
    # JSON true/false only: "yes" or 1 is a wrong type, not a guess.
    completed: StrictBool = False


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


class TaskPublic(TaskBase):
    """A task as every route returns it (written straight from the row; see tasks.PUBLIC_COLUMNS)."""

    id: int
    user_id: str
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime


# --- accounts ---------------------------------------------------------------------------------


class UserBase(BaseModel):
    email: Email
    name: Name


class UserRegister(UserBase):
    model_config = ConfigDict(extra="forbid")

    password: Password


class UserLogin(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Not format-checked: an unknown or malformed email is the same 401 as a wrong password.
    email: Annotated[
        str,
        StringConstraints(strip_whitespace=True, to_lower=True, min_length=1, max_length=254),
        AfterValidator(storable_text),
    ]
    password: Annotated[str, StringConstraints(min_length=1, max_length=128), AfterValidator(storable_text)]


class UserPublic(UserBase):
    model_config = ConfigDict(from_attributes=True)

    id: str
    created_at: datetime


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 (the OAuth2 token type, not a secret)
    expires_in: int
    user: UserPublic
